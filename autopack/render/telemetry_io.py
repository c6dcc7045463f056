"""Rendering `telemetry export` and `telemetry import`: progress, summaries, problem lines."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from autopack.console import report_console, stderr_console, warn
from autopack.telemetry.export import ExportResult
from autopack.telemetry.importer import FileReport, ImportReport

PROBLEMS_SHOWN = 20
"""Unparseable lines listed per file on the terminal (--json lists up to 100)."""

RUNS_SHOWN = 5

Callback = Callable[[int, int | None], None]


def progress_wanted(*, quiet: bool, as_json: bool) -> bool:
    """A progress bar only on a terminal, and never with --quiet or --json."""
    return not quiet and not as_json and stderr_console().is_terminal


@contextmanager
def progress_bar(
    description: str, *, enabled: bool, in_bytes: bool = False
) -> Iterator[Callback | None]:
    """A transient Rich bar on stderr; yields the core's progress callback (None if disabled)."""
    if not enabled:
        yield None
        return
    count_column = DownloadColumn() if in_bytes else MofNCompleteColumn()
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        count_column,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr_console(),
        transient=True,
    )
    task = progress.add_task(description, total=None)

    def update(done: int, total: int | None) -> None:
        progress.update(task, completed=done, total=total)

    with progress:
        yield update


def show_export_result(result: ExportResult) -> None:
    where = result.output if result.output is not None else "stdout"
    noun = "row" if result.rows == 1 else "rows"
    stderr_console().print(
        f"exported {result.rows:,} {noun} ({result.format}) to {escape(where)}", soft_wrap=True
    )
    if result.replaced_invalid_text:
        stderr_console().print(
            f"warning: {result.replaced_invalid_text:,} text cells held bytes that are not "
            "UTF-8; they were written with U+FFFD in their place",
            soft_wrap=True,
        )


def show_broken_pipe() -> None:
    stderr_console().print("output closed by the reader before the export finished")


def show_import_report(report: ImportReport) -> None:
    """What the import did, file by file (stdout: it is the command's report)."""
    out = report_console()
    for file in report.files:
        out.print(_file_line(file))
        for problem in file.problems[:PROBLEMS_SHOWN]:
            out.print(f"  line {problem.line}: {escape(problem.reason)}")
        hidden = file.unparseable - min(len(file.problems), PROBLEMS_SHOWN)
        if hidden > 0:
            out.print(f"  … and {hidden:,} more unparseable lines (--json lists up to 100)")
    totals = report.totals
    verb = "would import" if report.dry_run else "imported"
    summary = (
        f"{verb} {totals.imported:,} of {totals.records:,} samples from {totals.files} "
        f"file{'s' if totals.files != 1 else ''}; {totals.already_present:,} already present, "
        f"{totals.skipped:,} skipped, {totals.unparseable:,} unparseable lines"
    )
    if totals.placeholder_runs or totals.placeholder_phases:
        summary += (
            f"; placeholders: {totals.placeholder_runs} runs, {totals.placeholder_phases:,} phases"
        )
    out.print(summary)
    if report.dry_run:
        out.print("dry run: nothing was written")
    if totals.records == 0 and totals.failed_files == 0:
        warn("no telemetry sample found: are these the right files?")


def _file_line(file: FileReport) -> str:
    name = escape(file.path)
    if file.error is not None:
        return f"[red]✗[/] {name}: {escape(file.error)} — nothing imported from it"
    parts = [
        f"{file.records:,} samples ({file.format})",
        f"{file.imported:,} imported",
    ]
    if file.imported:
        parts.append(
            f"{file.on_existing_phases:,} on existing phases, "
            f"{file.on_new_placeholders:,} on new placeholders"
        )
    parts.append(f"{file.already_present:,} already present")
    for reason, count in sorted(file.skipped.items()):
        parts.append(f"{count:,} skipped ({reason.replace('_', ' ')})")
    if file.unparseable:
        parts.append(f"[yellow]{file.unparseable:,} unparseable[/]")
    if file.placeholder_runs:
        runs = file.placeholder_runs
        named = ", ".join(escape(run) for run in runs[:RUNS_SHOWN])
        more = f" and {len(runs) - RUNS_SHOWN} more" if len(runs) > RUNS_SHOWN else ""
        parts.append(f"placeholder run{'s' if len(runs) > 1 else ''} {named}{more}")
    mark = "[yellow]![/]" if file.unparseable else "[green]✓[/]"
    return f"{mark} {name}: " + "; ".join(parts)
