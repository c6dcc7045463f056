"""The `autopack` command: the root app and the entry point that maps errors to exit codes.

Command groups are imported only when they are used: `autopack db identity` never loads the
drain machinery, the HTTP client or Alembic, so the commands an operator runs before acting
start fast. `autopack --help` lists the groups from `ROOT_HELP` and loads none of them; a
group's or a command's `--help` loads only its own module, whose top level imports nothing
heavy (docs/performance.md, "Help speed").

Help is Click's plain formatter (`rich_markup_mode=None`): it never cuts an option name at 80
columns and shows the metavars declared on the options, not Typer's `<bool>`-style markers.
"""

from __future__ import annotations

import importlib
import shlex
import sys
import traceback
from collections.abc import Mapping
from typing import Any

import typer

from autopack import __version__, console
from autopack.cli.help import PlainHelpCommand, plain_help
from autopack.cli.options import DebugOption, Invocation
from autopack.cli.signals import sigterm_interrupts
from autopack.environment import Environment
from autopack.errors import (
    EXIT_FOUND_PROBLEMS,
    EXIT_INTERRUPTED,
    EXIT_REFUSED,
    EXIT_TERMINATED,
    AutopackError,
    ConfigError,
    Terminated,
)

# An unexpected exception is a bug in autopack, not a verdict on the operator's data.
EXIT_INTERNAL_ERROR = 70

# name → (module, attribute): a Typer sub-app, or a single command function.
GROUPS: dict[str, tuple[str, str]] = {
    "db": ("autopack.cli.db", "app"),
    "seed": ("autopack.cli.seed", "app"),
    "drain": ("autopack.cli.drain", "app"),
    "triage": ("autopack.cli.triage", "app"),
    "calibrate": ("autopack.cli.calibrate", "app"),
    "runs": ("autopack.cli.runs", "app"),
    "phases": ("autopack.cli.phases", "app"),
}
COMMANDS: dict[str, tuple[str, str]] = {
    "estimate": ("autopack.cli.estimate", "estimate_command"),
    "demo": ("autopack.cli.demo", "demo_command"),
}
# The line each group or command has in the root `--help`, so listing them imports none of
# their modules. Short enough for one line at 80 columns (tests/test_help.py). A name missing
# here is listed from its module instead: correct, only slower.
ROOT_HELP: dict[str, str] = {
    "estimate": "Predict a phase's output tokens and token budget.",
    "demo": "Run the whole runbook against a simulated model.",
    "db": "Create, identify, stamp, upgrade and check databases.",
    "seed": "Seed runs of small, known-easy phases.",
    "drain": "Drain phases through the builder LLM, with telemetry.",
    "triage": "Find stale phases and fail them.",
    "calibrate": "Propose, backtest and apply estimator coefficients.",
    "runs": "List runs, and show one run with its phases.",
    "phases": "Show one phase: its attempts, telemetry and transcripts.",
    "telemetry": "Export, import, analyze and explain token telemetry.",
}
# Groups whose subcommands live in separate modules, loaded one at a time as well.
LAZY_GROUPS: dict[str, tuple[str, dict[str, tuple[str, str]]]] = {
    "telemetry": (
        "Export, import, analyze and explain token telemetry.",
        {
            "export": ("autopack.cli.telemetry_io", "export_command"),
            "import": ("autopack.cli.telemetry_io", "import_command"),
            "analyze": ("autopack.cli.telemetry_analyze", "analyze_command"),
            "explain": ("autopack.cli.telemetry_explain", "explain_command"),
        },
    ),
}


def _version(value: bool) -> None:
    if value:
        console.stdout().write(f"autopack {__version__}\n")
        raise typer.Exit()


def _listed_only() -> None:
    """Stands in for a group in the root `--help`; never run (naming a group loads it)."""
    raise AssertionError("a listed-only command was invoked")


def build_app(args: list[str] | None = None) -> typer.Typer:
    """The root app with the group or command named in `args`.

    When `args` names none (`--help`, no arguments, an unknown name), every name is listed from
    `ROOT_HELP` without loading its module. `args=None` loads every group and command: the
    full tree, for the generated reference (autopack.cli.reference).
    """
    app = typer.Typer(
        name="autopack",
        help="Keep Autopack's databases apart, drain its work token-safely, calibrate its "
        "estimator.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )

    @app.callback()
    def root(
        version: bool = typer.Option(
            False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
        debug: DebugOption = False,
    ) -> None:
        """autopack: one tool for the databases, telemetry and calibration of an Autopack agent."""

    words = [a for a in args or [] if not a.startswith("-")]
    wanted = words[0] if words and words[0] in names() else None
    if args is not None and wanted is not None and "--help" in args[: args.index(wanted)]:
        wanted = None  # `autopack --help db` is the root's help
    if args is not None and wanted is None:
        for name in names():
            if name in ROOT_HELP:
                app.command(name, help=ROOT_HELP[name], add_help_option=False)(_listed_only)
            else:
                _add(app, name, None)
        return app
    for name in names():
        if wanted in (None, name):
            second = words[1] if wanted == name and len(words) > 1 else None
            _add(app, name, second)
    return app


def names() -> list[str]:
    """Every group and command of the root, in the order the root `--help` lists them."""
    return [*COMMANDS, *GROUPS, *LAZY_GROUPS]


def _add(app: typer.Typer, name: str, second: str | None) -> None:
    """Add group or command `name` to `app`, loading its module (of a lazy group: only the
    module of subcommand `second`, when that names one)."""
    if name in GROUPS:
        module, attribute = GROUPS[name]
        app.add_typer(plain_help(_load(module, attribute)), name=name)
    elif name in COMMANDS:
        module, attribute = COMMANDS[name]
        app.command(name, cls=PlainHelpCommand)(_load(module, attribute))
    else:
        help_text, subcommands = LAZY_GROUPS[name]
        group = typer.Typer(help=help_text, no_args_is_help=True)
        chosen = second if second in subcommands else None
        for sub, (module, attribute) in subcommands.items():
            if chosen in (None, sub):
                group.command(sub, cls=PlainHelpCommand)(_load(module, attribute))
        app.add_typer(group, name=name)


def _load(module: str, attribute: str) -> Any:
    """A Typer sub-app or a command function."""
    return getattr(importlib.import_module(module), attribute)


def main(argv: list[str] | None = None, env: Environment | None = None) -> int:
    """Run the command line in `env` (default: this process); return the exit code.

    Exit codes are listed in docs/exit-codes.md. SIGTERM is handled as Ctrl-C is, with 143.
    """
    env = Environment.from_process() if env is None else env
    args = list(sys.argv[1:] if argv is None else argv)
    with console.bound_to(env), sigterm_interrupts():
        return _run(args, env)


def refuse_non_utf8(args: list[str]) -> None:
    """Refuse an argument that is not valid UTF-8 (Python hands such bytes over as surrogates).

    A DB path or file name in another encoding cannot be stored, shown or reopened faithfully;
    one clear refusal beats a crash deep inside whichever library meets it first.
    """
    for arg in args:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            shown = arg.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
            raise ConfigError(
                f"argument '{shown}' is not valid UTF-8 (a file or database name in another "
                "encoding).",
                hint="rename it to a UTF-8 name, or pass a symlink that has one",
            ) from None


# Set by the script `--show-completion` prints, when the shell asks for completions.
COMPLETE_VARIABLE = "_AUTOPACK_COMPLETE"


def _complete(instruction: str, environ: Mapping[str, str]) -> int:
    """Answer the shell's completion request, loading only the group its words name.

    bash hands the words over in COMP_WORDS, zsh, fish and PowerShell in _TYPER_COMPLETE_ARGS.
    """
    from typer.completion import shell_complete

    line = environ.get("COMP_WORDS") or environ.get("_TYPER_COMPLETE_ARGS") or ""
    try:
        words = shlex.split(line)
    except ValueError:  # an unclosed quote while typing
        words = line.split()
    command = typer.main.get_command(build_app(words[1:]))
    return shell_complete(command, {}, "autopack", COMPLETE_VARIABLE, instruction)


def _usage_error(exc: typer.TyperException, args: list[str], env: Environment) -> int:
    """A usage error (unknown command or option, missing argument) as `error:` + `hint:`, 2."""
    from typer._click.exceptions import NoArgsIsHelpError, UsageError

    from autopack.cli.usage_errors import usage_problem

    problem = None
    if isinstance(exc, UsageError):
        problem = usage_problem(exc, args, lambda: typer.main.get_command(build_app(None)))
    if problem is not None:
        console.render_error(problem)
        return problem.exit_code
    # A group named without a command prints its help (Click's text is the right one), on
    # stdout as `--help` does.
    show = getattr(exc, "show", None)
    if callable(show):
        show(file=env.stdout if isinstance(exc, NoArgsIsHelpError) else env.stderr)
    else:
        env.stderr.write(f"error: {exc.message}\n")
    return getattr(exc, "exit_code", EXIT_REFUSED)


def _run(args: list[str], env: Environment) -> int:
    if args[:1] == ["--version"]:
        env.stdout.write(f"autopack {__version__}\n")  # without loading any command group
        return 0
    instruction = env.environ.get(COMPLETE_VARIABLE)
    if instruction:
        return _complete(instruction, env.environ)
    invocation = Invocation(env)
    try:
        refuse_non_utf8(args)
        # The command is invoked here, not through Typer's main(), which turns Ctrl-C into a
        # plain exit code 130 before autopack could tell Ctrl-C from SIGTERM.
        command = typer.main.get_command(build_app(args))
        with command.make_context("autopack", list(args), obj=invocation) as context:
            result = command.invoke(context)
    except typer.Exit as exc:
        return exc.exit_code
    except SystemExit as exc:
        # Typer's --show-completion and --install-completion end with sys.exit.
        return exc.code if isinstance(exc.code, int) else 0
    except typer.Abort:
        return EXIT_INTERRUPTED
    except typer.TyperException as exc:
        return _usage_error(exc, args, env)
    except AutopackError as exc:
        if invocation.debug:
            traceback.print_exc(file=env.stderr)
        console.render_error(exc)
        return exc.exit_code
    except BrokenPipeError:
        # The reader of stdout went away (`… | head`): nothing more can be shown.
        return EXIT_FOUND_PROBLEMS
    except Terminated:
        console.info("terminated")
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        console.info("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:
        if invocation.debug:
            traceback.print_exc(file=env.stderr)
        console.render_unexpected(exc)
        return EXIT_INTERNAL_ERROR
    return result if isinstance(result, int) else 0
