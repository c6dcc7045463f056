"""The `autopack` command: the root app and the entry point that maps errors to exit codes.

Command groups are imported only when they are used: `autopack db identity` never loads the
drain machinery, the HTTP client or Alembic, so the commands an operator runs before acting
start fast. `autopack --help` (or an unknown name) loads them all.
"""

from __future__ import annotations

import importlib
import sys
import traceback

import typer

from autopack import __version__, console
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
# Groups whose subcommands live in separate modules, loaded one at a time as well.
LAZY_GROUPS: dict[str, tuple[str, dict[str, tuple[str, str]]]] = {
    "telemetry": (
        "Export, import, analyse and explain token telemetry.",
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


def build_app(args: list[str] | None = None) -> typer.Typer:
    """The root app, with the group named in `args` (or every group when none is named)."""
    app = typer.Typer(
        name="autopack",
        help="Keep Autopack's databases apart, drain its work token-safely, calibrate its "
        "estimator.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
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
    known = GROUPS.keys() | COMMANDS.keys() | LAZY_GROUPS.keys()
    wanted = words[0] if words and words[0] in known else None
    for name, (module, attribute) in GROUPS.items():
        if wanted in (None, name):
            app.add_typer(getattr(importlib.import_module(module), attribute), name=name)
    for name, (module, attribute) in COMMANDS.items():
        if wanted in (None, name):
            app.command(name)(getattr(importlib.import_module(module), attribute))
    for name, (help_text, subcommands) in LAZY_GROUPS.items():
        if wanted not in (None, name):
            continue
        group = typer.Typer(help=help_text, no_args_is_help=True)
        second = words[1] if wanted == name and len(words) > 1 else None
        chosen = second if second in subcommands else None
        for sub, (module, attribute) in subcommands.items():
            if chosen in (None, sub):
                group.command(sub)(getattr(importlib.import_module(module), attribute))
        app.add_typer(group, name=name)
    return app


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


def _usage_error(exc: typer.TyperException, args: list[str], env: Environment) -> int:
    """A usage error (unknown command or option, missing argument) as `error:` + `hint:`, 2."""
    from typer._click.exceptions import UsageError

    from autopack.cli.usage_errors import usage_problem

    problem = None
    if isinstance(exc, UsageError):
        problem = usage_problem(exc, args, lambda: typer.main.get_command(build_app(None)))
    if problem is not None:
        console.render_error(problem)
        return problem.exit_code
    # A group named without a command prints its help (Click's text is the right one).
    show = getattr(exc, "show", None)
    if callable(show):
        show(file=env.stderr)
    else:
        env.stderr.write(f"error: {exc.message}\n")
    return getattr(exc, "exit_code", EXIT_REFUSED)


def _run(args: list[str], env: Environment) -> int:
    if args[:1] == ["--version"]:
        env.stdout.write(f"autopack {__version__}\n")  # without loading any command group
        return 0
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
