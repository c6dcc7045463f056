"""docs/cli-reference.md, generated from the command line itself.

    python -m autopack.cli.reference > docs/cli-reference.md

Walks the whole command tree (every group and command `autopack.cli.app` lists, so a new group
appears without touching this module) and writes, per command: its usage, its help and a table
of its arguments and options. Nothing depends on the terminal: the same tree gives the same
bytes, which tests/test_cli_reference.py compares with the committed file.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperArgument

from autopack.cli.app import build_app
from autopack.cli.help import NO_REWRAP, argument_name, help_text

REGENERATE = "python -m autopack.cli.reference > docs/cli-reference.md"
PROGRAM = "autopack"
TABLE_HEADER = "| Argument or option | Value | Default | Help |"


def commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(words after `autopack`, command) for the root and everything under it, depth first."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from commands(sub, (*path, name))


def reference() -> str:
    """The whole Markdown page."""
    root = typer.main.get_command(build_app(None))
    tree = list(commands(root))
    lines = [
        "# Command-line reference",
        "",
        f"Generated from the command line by `{REGENERATE}`; do not edit it by hand",
        "(tests/test_cli_reference.py fails when it is stale). Every command also takes `--help`.",
        "Exit codes: [exit-codes.md](exit-codes.md); `--json` documents: [json.md](json.md).",
        "",
    ]
    lines += [f"- [`{_title(path)}`](#{_anchor(path)})" for path, _ in tree]
    for path, command in tree:
        lines += ["", *_section(path, command)]
    return "\n".join(lines) + "\n"


def _title(path: Sequence[str]) -> str:
    return " ".join((PROGRAM, *path))


def _anchor(path: Sequence[str]) -> str:
    return "-".join((PROGRAM, *path))


def _section(path: tuple[str, ...], command: Any) -> list[str]:
    ctx = typer.Context(command, info_name=_title(path))
    usage = " ".join([_title(path), *command.collect_usage_pieces(ctx)])
    lines = [f"## {_title(path)}", "", "```", usage, "```", ""]
    lines += _paragraphs(command.help)
    subcommands = getattr(command, "commands", {})
    if subcommands:
        lines += ["", "| Command | What it does |", "| --- | --- |"]
        for name, sub in subcommands.items():
            summary = sub.get_short_help_str(limit=1000)
            lines.append(f"| [`{name}`](#{_anchor((*path, name))}) | {_cell(summary)} |")
    rows = [_row(param) for param in command.get_params(ctx) if _shown(param)]
    if rows:
        lines += ["", TABLE_HEADER, "| --- | --- | --- | --- |"]
        lines += rows
    return lines


def _paragraphs(docstring: str | None) -> list[str]:
    """The help as Markdown: prose paragraphs joined, example lines as a code block."""
    lines: list[str] = []
    for paragraph in help_text(docstring).split("\n\n"):
        if not paragraph.strip():
            continue
        if paragraph.startswith(NO_REWRAP):
            examples = [line.removeprefix("e.g. ").strip() for line in paragraph.splitlines()[1:]]
            lines += ["Example:" if len(examples) == 1 else "Examples:", "", "```", *examples]
            lines += ["```", ""]
        else:
            lines += [_escape(" ".join(line.strip() for line in paragraph.splitlines())), ""]
    return lines[:-1] if lines else lines


def _shown(param: Any) -> bool:
    return not getattr(param, "hidden", False) and "--help" not in getattr(param, "opts", ())


def _row(param: Any) -> str:
    if isinstance(param, TyperArgument):
        names, value = argument_name(param), ""
    else:
        names = ", ".join(f"`{name}`" for name in (*param.opts, *param.secondary_opts))
        value = "" if param.is_flag else (param.metavar or "")
    notes = [param.help or ""]
    choices = _choices(param)
    if choices:
        notes.append(f"One of: {', '.join(choices)}.")
    bounds = _bounds(param)
    if bounds:
        notes.append(f"{bounds}.")
    if param.required:
        notes.append("Required.")
    if getattr(param, "multiple", False) and "repeatable" not in (param.help or "").lower():
        notes.append("Repeatable.")
    help_cell = " ".join(note for note in notes if note)
    return f"| {_cell(names)} | {_cell(value)} | {_cell(_default(param))} | {_cell(help_cell)} |"


def _choices(param: Any) -> list[str]:
    descriptor = getattr(param, "type_descriptor", None)
    values = getattr(descriptor, "choices", None) or ()
    return [value.value if isinstance(value, Enum) else str(value) for value in values]


def _bounds(param: Any) -> str:
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    if low is not None and high is not None:
        return f"From {low} to {high}"
    if low is not None:
        return f"At least {low}"
    if high is not None:
        return f"At most {high}"
    return ""


def _default(param: Any) -> str:
    value = param.default
    if getattr(param, "is_flag", False):
        # A flag pair shows the side that is on; a lone flag is off unless given.
        on = value is True and param.secondary_opts
        return f"`{param.opts[0]}`" if on else ""
    if value is None or value is False or value == [] or value == () or callable(value):
        return ""
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, Path):
        value = str(value)
    return f"`{value}`"


def _escape(text: str) -> str:
    """Prose safe in Markdown: `<stamp>` is not an HTML tag."""
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _cell(text: str) -> str:
    """Text safe in one cell of a Markdown table."""
    return _escape(text).replace("|", "\\|").replace("\n", " ")


def main() -> None:
    sys.stdout.write(reference())


if __name__ == "__main__":
    main()
