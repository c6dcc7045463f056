"""Click's usage errors as autopack errors: one `error:` line, one `hint:` line, exit 2.

Click prints its own box (usage line, "Try --help", "Error: …"). autopack's contract
(docs/exit-codes.md) is one sentence and a hint, with a did-you-mean for a misspelt command or
option, and a pointer for the commonest slip: options given before the command
(`autopack --db seed db identity`), which Click reads as options of `autopack` itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from typer._click.core import Command, Context
from typer._click.exceptions import NoArgsIsHelpError, NoSuchOption, UsageError
from typer.core import TyperGroup

from autopack.errors import ConfigError
from autopack.text import closest

_NO_SUCH_COMMAND = re.compile(r"No such command '(?P<name>.*?)'\.")


def usage_problem(
    exc: UsageError, args: list[str], full_command: Callable[[], Command]
) -> ConfigError | None:
    """The error to show for Click's usage error `exc`; None when Click's own text is right
    (a group named without a command shows its help).

    `full_command` builds the command tree with every group loaded: the tree a run builds
    holds only the group its words named, and a did-you-mean needs them all.
    """
    if isinstance(exc, NoArgsIsHelpError):
        return None
    ctx = exc.ctx
    # The parser raises some errors (an option missing its value) without a context.
    where = ctx.command_path if ctx is not None else _command_path(args, full_command())
    if isinstance(exc, NoSuchOption):
        return _unknown_option(exc.option_name, ctx, where, args, full_command)
    missing_command = _NO_SUCH_COMMAND.match(exc.message)
    if missing_command is not None and ctx is not None:
        return _unknown_command(missing_command["name"], ctx.command, where)
    # Typer words a rejected choice "Value error, 'xml' is not one of …": the sentence is enough.
    text = exc.format_message().replace("Value error, ", "").rstrip(".")
    return ConfigError(
        f"{text[:1].lower()}{text[1:]} (in '{where}').",
        hint=f"see '{where} --help' for its arguments and options",
    )


def _unknown_command(name: str, group: Command, where: str) -> ConfigError:
    names = sorted(group.commands) if isinstance(group, TyperGroup) else []
    guess = closest(name, names)
    listing = ", ".join(names)
    return ConfigError(
        f"no command {name!r} in '{where}'.",
        hint=f"did you mean {guess!r}? ({where} has: {listing})"
        if guess
        else f"'{where}' has: {listing}",
    )


def _unknown_option(
    option: str,
    ctx: Context | None,
    where: str,
    args: list[str],
    full_command: Callable[[], Command],
) -> ConfigError:
    command = ctx.command if ctx is not None else None
    if isinstance(command, TyperGroup):
        # Before a command's name, an option of that command belongs to the group: say where
        # it goes instead of guessing at the group's few options.
        tree = full_command()
        if _takes_value(tree, option) is not None:
            reordered = _options_after_command(args, tree)
            return ConfigError(
                f"{option} is an option of a command, given before the command's name.",
                hint="options go after the command: "
                + (" ".join(["autopack", *reordered]) if reordered else "autopack COMMAND --db …"),
            )
    known = _option_names(command) if command is not None else []
    guess = closest(option.split("=", 1)[0], known)
    return ConfigError(
        f"no option {option!r} for '{where}'.",
        hint=f"did you mean {guess!r}?" if guess else f"see '{where} --help' for its options",
    )


def _option_names(command: Command) -> list[str]:
    names = ["--help"]
    for param in command.params:
        names += [*param.opts, *param.secondary_opts]
    return [name for name in names if name.startswith("-")]


def _commands(command: Command) -> Iterator[Command]:
    yield command
    if isinstance(command, TyperGroup):
        for sub in command.commands.values():
            yield from _commands(sub)


def _takes_value(tree: Command, option: str) -> bool | None:
    """Whether `option` (of any command in `tree`) takes a value; None when no command has it."""
    name = option.split("=", 1)[0]
    for command in _commands(tree):
        for param in command.params:
            if name in param.opts or name in param.secondary_opts:
                return not bool(getattr(param, "is_flag", False))
    return None


def _command_path(args: list[str], tree: Command) -> str:
    """`autopack` and the command names among `args`, in order, as far as they go."""
    path = ["autopack"]
    node = tree
    for token in args:
        if not isinstance(node, TyperGroup):
            break
        if token in node.commands:
            path.append(token)
            node = node.commands[token]
    return " ".join(path)


def _options_after_command(args: list[str], tree: Command) -> list[str] | None:
    """`args` with the options given before the command path moved after it; None when the
    words do not name a command of `tree`."""
    leading: list[str] = []
    path: list[str] = []
    node = tree
    index = 0
    while index < len(args) and isinstance(node, TyperGroup):
        token = args[index]
        index += 1
        if token in node.commands:
            path.append(token)
            node = node.commands[token]
        elif token.startswith("-"):
            leading.append(token)
            if "=" not in token and _takes_value(tree, token) and index < len(args):
                leading.append(args[index])
                index += 1
        else:
            return None
    if not path or isinstance(node, TyperGroup):
        return None
    return [*path, *args[index:], *leading]
