"""Rendering: the target panel, tables, errors, prompts and `--json` documents.

A command's report (tables, summaries, the paths it wrote) and its `--json` document go to
stdout; the target panel shown before a command acts, progress, questions, warnings and errors
go to stderr (docs/output.md). Core modules never import this.
Both are the streams of the `Environment` that `main` binds for the run (`bound_to`), so a test
hands in its own streams, terminal flags and variables instead of patching `sys`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TextIO, runtime_checkable

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.prompt import Confirm
from rich.table import Table

from autopack.db.compat import is_newer
from autopack.environment import Environment
from autopack.errors import AutopackError

if TYPE_CHECKING:  # rendering needs the report types only for annotations
    from pydantic import BaseModel  # imported when printing: `--help` needs no pydantic

    from autopack.db.identity import TargetInfo, TargetPanel


_bound: Environment | None = None


@contextmanager
def bound_to(env: Environment) -> Iterator[Environment]:
    """Render to `env`'s streams while the block runs (main binds the run's environment).

    A plain module attribute rather than a context variable: the drain's worker threads log
    through this module too, and must reach the same streams.
    """
    global _bound
    previous, _bound = _bound, env
    try:
        yield env
    finally:
        _bound = previous


def environment() -> Environment:
    """The environment being rendered to: the bound one, else the real process."""
    return _bound if _bound is not None else Environment.from_process()


def _console(stream: TextIO, isatty: bool) -> Console:
    """A console on one of the environment's streams, made when needed so it honours its
    COLUMNS and NO_COLOR."""
    return Console(
        file=stream,
        # A terminal flag forces Rich's terminal mode; otherwise Rich decides as it always did
        # (FORCE_COLOR, TTY_COMPATIBLE and the stream itself).
        force_terminal=True if isatty else None,
        highlight=False,
        _environ=dict(environment().environ),
    )


def stderr_console() -> Console:
    """Where the target panel, progress, questions, warnings and errors go."""
    env = environment()
    return _console(env.stderr, env.stderr_isatty)


def report_console() -> Console:
    """Where a command's report goes: stdout, so `autopack … | grep` reads it."""
    env = environment()
    return _console(env.stdout, env.stdout_isatty)


def stdout() -> TextIO:
    """The environment's stdout, where reports and `--json` documents go."""
    return environment().stdout


@runtime_checkable
class JsonReport(Protocol):
    """A core result that renders itself as its command's JSON document (docs/json.md)."""

    def to_json(self) -> dict[str, Any]: ...


def json_value(value: object) -> object:
    """What json writes for a value it has no form for: a datetime as the one timestamp text
    (autopack.db.clock.utc_text), anything else as its str()."""
    from autopack.db.clock import utc_text  # pydantic: loaded when printing, not for --help

    if isinstance(value, datetime):
        return utc_text(value)
    return str(value)


def print_json(
    document: Mapping[str, Any] | BaseModel | JsonReport, *, target: TargetInfo | None = None
) -> None:
    """One JSON document on stdout (the `--json` contract, documented in docs/json.md).

    `target` is the panel shown before the command acted: it leads the document.
    """
    from pydantic import BaseModel

    if isinstance(document, JsonReport):
        data: Mapping[str, Any] = document.to_json()
    elif isinstance(document, BaseModel):
        data = document.model_dump(mode="json")
    else:
        data = document
    if target is not None:
        data = {"target": target.model_dump(mode="json"), **data}
    out = stdout()
    out.write(json.dumps(data, indent=2, default=json_value) + "\n")
    out.flush()


def render_error(error: AutopackError) -> None:
    # soft_wrap: the error stays one line however narrow the terminal.
    stderr_console().print(f"[bold red]error:[/] {escape(error.message)}", soft_wrap=True)
    if error.hint:
        stderr_console().print(f"[yellow]hint:[/] {escape(error.hint)}", soft_wrap=True)


def render_unexpected(exc: BaseException) -> None:
    stderr_console().print(
        f"[bold red]error:[/] unexpected {type(exc).__name__}: {escape(str(exc))}", soft_wrap=True
    )
    stderr_console().print(
        "[yellow]hint:[/] run again with --debug for the traceback, and report it", soft_wrap=True
    )


Logger = Callable[[str], None]


def info(message: str) -> None:
    """A line about what the command is about to do (stderr, beside the target panel)."""
    stderr_console().print(message)


def report(message: str) -> None:
    """A line of the command's report (stdout), in Rich markup, wrapped at spaces."""
    report_console().print(message)


def report_text(message: str) -> None:
    """A line of the command's report taken as plain text and never wrapped, so a path in it
    stays whole to copy."""
    report_console().print(escape(message), soft_wrap=True)


def log_line(message: str) -> None:
    """A progress line from the core: printed as text, never interpreted as markup."""
    stderr_console().print(escape(message), soft_wrap=True)


def silent(_message: str) -> None:
    """A logger for --quiet and --json: progress lines are dropped."""


def warn(message: str) -> None:
    stderr_console().print(f"[yellow]warning:[/] {escape(message)}")


def confirm(question: str) -> bool:
    """Ask on the environment's stderr, read the answer from its stdin; no answer is a no."""
    try:
        return Confirm.ask(
            question, console=stderr_console(), default=False, stream=environment().stdin
        )
    except EOFError:
        return False


def _fmt_size(size: int | None) -> str:
    if size is None:
        return "—"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size:,} B" if unit == "B" else f"{value:.1f} {unit} ({size:,} B)"
        value /= 1024
    return f"{size:,} B"


def _target_lines(target: TargetInfo) -> list[tuple[str, str]]:
    if target.in_memory:
        where = "in-memory (nothing is kept after the command)"
    else:
        where = target.path or "—"
    role = target.role if target.role_stamped else f"{target.role} (unstamped — treated as legacy)"
    revision = target.schema_revision or "none"
    if is_newer(target.schema_revision):
        revision += f" (newer than this autopack's {target.head_revision})"
    elif target.schema_revision != target.head_revision:
        revision += f" (autopack needs {target.head_revision})"
    return [
        ("URL", target.url),
        ("named by", target.source),
        (
            "file" if target.backend == "sqlite" else "backend",
            where if target.backend == "sqlite" else target.backend,
        ),
        ("size", _fmt_size(target.size_bytes)),
        ("modified", target.mtime or "—"),
        ("role", role),
        ("db id", target.db_id or "—"),
        ("schema", revision),
    ]


def show_panel(
    panel: TargetPanel, *, title: str = "target database", out: Console | None = None
) -> None:
    """The panel every DB command shows on stderr before it acts (`db identity`, whose report
    it is, passes the report console)."""
    console = out or stderr_console()
    lines = _target_lines(panel.target)
    counts = ", ".join(f"{name} {count:,}" for name, count in panel.counts.items())
    rows = [*lines, ("rows", counts or "—")]
    label_width = max(len(label) for label, _ in [*rows, ("warning", "")])
    # A path or URL wider than the boxed panel allows is never broken or cut (it names the
    # database, and is copied from here): the panel then goes without its box, each line
    # whole, running past the edge if it must.
    if max(len(value) for _, value in lines) + label_width + 6 > console.width:
        console.print(f"[bold]{escape(title)}[/]")
        for label, value in rows:
            # Paths and URLs whole (soft wrap: never broken); the row counts wrap at spaces.
            whole = label != "rows"
            console.print(f"[bold]{label:<{label_width}}[/]  {escape(value)}", soft_wrap=whole)
        for warning in panel.warnings:
            console.print(f"[yellow]{'warning':<{label_width}}[/]  {escape(warning)}")
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for label, value in rows:
        grid.add_row(label, escape(value))
    for warning in panel.warnings:
        grid.add_row("[yellow]warning[/]", escape(warning))
    console.print(Panel(grid, title=title, title_align="left", expand=False))
