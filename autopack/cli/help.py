"""How `--help` shows a command: Click's plain layout, with arguments named by their metavars.

Typer's plain help lists an argument as `run_id <str>` and its usage as `{run_id}`; autopack
names it `RUN_ID` in both, so no Python type marker appears anywhere in the help
(tests/test_help.py). Example lines (`e.g. autopack …`) keep their line breaks: Click rewraps
every other paragraph to the terminal's width.
"""

from __future__ import annotations

import inspect
from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand


class PlainHelpCommand(TyperCommand):
    """A command whose help names arguments by metavar (RUN_ID, FILE...), without a type."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = argument_name(param)
                pieces.append(name if param.required else f"[{name}]")
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces

    def format_help_text(self, ctx: Any, formatter: Any) -> None:
        text = help_text(self.help)
        if text:
            formatter.write_paragraph()
            with formatter.indentation():
                formatter.write_text(text)

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments: list[tuple[str, str]] = []
        options: list[tuple[str, str]] = []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if isinstance(param, TyperArgument):
                arguments.append((argument_name(param), record[1]))
            else:
                options.append(record)
        if arguments:
            with formatter.section("Arguments"):
                formatter.write_dl(arguments)
        if options:
            with formatter.section("Options"):
                formatter.write_dl(options)


EXAMPLE_START = "e.g. "
# Click leaves a paragraph whose first line is this marker as it is written.
NO_REWRAP = "\b"


def help_text(docstring: str | None) -> str:
    """The help of a docstring, each run of example lines in a paragraph Click keeps as is.

    An example starts a line with `e.g. `; indented lines right after it continue it.
    """
    lines = inspect.cleandoc(docstring or "").partition("\f")[0].splitlines()
    kept: list[str] = []
    in_example = False
    for line in lines:
        if line.startswith(EXAMPLE_START) or (in_example and line.startswith(" ")):
            if not in_example:
                if kept and kept[-1]:
                    kept.append("")
                kept.append(NO_REWRAP)
                in_example = True
            kept.append(line)
            continue
        if in_example and line:
            kept.append("")
        in_example = False
        kept.append(line)
    return "\n".join(kept)


def argument_name(argument: TyperArgument) -> str:
    """RUN_ID, or the declared metavar; `...` when it takes several values."""
    name = argument.metavar or (argument.name or "").upper()
    return f"{name}..." if argument.nargs != 1 else name


def plain_help(app: typer.Typer) -> typer.Typer:
    """`app` with every command that names no class of its own shown by PlainHelpCommand."""
    for info in app.registered_commands:
        if info.cls in (None, TyperCommand):
            info.cls = PlainHelpCommand
    return app
