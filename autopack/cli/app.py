"""The `autopack` command: the root app and the entry point that maps errors to exit codes."""

from __future__ import annotations

import sys
import traceback

import typer

from autopack import __version__, console
from autopack.cli import db as db_commands
from autopack.cli import drain as drain_commands
from autopack.cli import seed as seed_commands
from autopack.cli import telemetry as telemetry_commands
from autopack.cli.estimate import estimate_command
from autopack.errors import EXIT_INTERRUPTED, AutopackError

# An unexpected exception is a bug in autopack, not a verdict on the operator's data.
EXIT_INTERNAL_ERROR = 70

app = typer.Typer(
    name="autopack",
    help="Keep Autopack's databases apart, drain its work token-safely, calibrate its estimator.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(db_commands.app, name="db")
app.add_typer(drain_commands.app, name="drain")
app.add_typer(seed_commands.app, name="seed")
app.add_typer(telemetry_commands.app, name="telemetry")
app.command("estimate")(estimate_command)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"autopack {__version__}\n")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """autopack: one tool for the databases, telemetry and calibration of an Autopack agent."""


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code (docs/exit-codes.md)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        result = app(args=args, prog_name="autopack", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        return EXIT_INTERRUPTED
    except typer.TyperException as exc:
        # Usage errors (unknown option, missing argument) print themselves; they exit 2.
        show = getattr(exc, "show", None)
        if callable(show):
            show(file=sys.stderr)
        else:
            sys.stderr.write(f"error: {exc.message}\n")
        return exc.exit_code
    except AutopackError as exc:
        if debug:
            traceback.print_exc()
        console.render_error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        console.info("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:
        if debug:
            traceback.print_exc()
        console.render_unexpected(exc)
        return EXIT_INTERNAL_ERROR
    return result if isinstance(result, int) else 0
