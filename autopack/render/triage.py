"""Rendering `triage stale`: the stale phases by run and its `--json` document (both stdout)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, TextIO

from rich.console import Console, RenderableType
from rich.markup import escape

from autopack.console import json_value, report_console, stderr_console, stdout
from autopack.db.clock import utc_text
from autopack.db.identity import TargetInfo
from autopack.render.fit import Column, fit_table
from autopack.triage import (
    MarkResult,
    StaleKind,
    StaleList,
    StalePhase,
    StaleReport,
)

NOTE_WIDTH = 70
"""Previous failure reasons are cut to this many characters in the table (never in JSON)."""
PROGRESS_FROM = 5_000
"""Marking shows a progress bar from this many phases on."""
SKIPPED_SHOWN = 20


def format_age(minutes: int) -> str:
    """`2d 3h`, `5h 12m`, `42m`: how long a phase has been idle."""
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {mins}m"
    return f"{mins}m"


def format_threshold(threshold: timedelta) -> str:
    """`48h`, `1.5h`, `90 min`, `0.5 min`."""
    minutes = threshold.total_seconds() / 60
    if minutes >= 60 and minutes % 30 == 0:
        return f"{minutes / 60:g}h"
    return f"{minutes:g} min"


def _short(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M")


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


# --json ---------------------------------------------------------------------------------------


def _write_list(documents: Iterable[str], out: TextIO) -> None:
    """A JSON array of the entries' texts, as the DB wrote them (several to a string)."""
    out.write("[")
    written = False
    for text in documents:
        if text:
            # Two writes: prefix + text would copy the whole batch once more.
            out.write(",\n" if written else "\n")
            out.write(text)
            written = True
    out.write("\n  ]" if written else "]")


def write_stale_json(
    report: StaleReport,
    target: TargetInfo,
    result: MarkResult | None = None,
    out: TextIO | None = None,
) -> None:
    """Write the `--json` document (docs/json.md): the entries' texts as the DB wrote them,
    one per line, inside a document whose other values are written by json here.

    `result` is None for a report; given, the document also tells what marking did.
    """
    query = report.query
    head: dict[str, Any] = {
        "target": target.model_dump(mode="json"),
        "mode": "report" if result is None else "mark_failed",
        "now": utc_text(query.now),
        "threshold_minutes": query.threshold_minutes,
        "cutoff": utc_text(query.cutoff),
        "leases_checked": query.leases_checked,
    }
    tail: dict[str, Any] = {
        "unleased_count": report.unleased.count,
        "marked_count": len(result.marked) if result is not None else 0,
        "skipped_count": len(result.skipped) if result is not None else 0,
        "released_claims": result.released_claims if result is not None else 0,
    }
    stream = out if out is not None else stdout()
    stream.write("{\n")
    for key, value in head.items():
        stream.write(f"  {json.dumps(key)}: {_indented(value)},\n")
    stream.write('  "stale": ')
    _write_list(report.stale.documents, stream)
    stream.write(f',\n  "count": {report.stale.count},\n  "runs": {report.stale.runs},\n')
    stream.write('  "unleased": ')
    _write_list(report.unleased.documents, stream)
    for key, value in tail.items():
        stream.write(f",\n  {json.dumps(key)}: {_indented(value)}")
    stream.write("\n}\n")
    stream.flush()


def _indented(value: Any) -> str:
    return json.dumps(value, indent=2, default=json_value).replace("\n", "\n  ")


# human report (stdout) ------------------------------------------------------------------------


def _note(entry: StalePhase) -> str:
    if entry.kind is StaleKind.LEASE_EXPIRED:
        expired = _short(entry.lease_expires_at) if entry.lease_expires_at else "?"
        return f"lease of {entry.worker} expired {expired}"
    reason = entry.last_failure_reason or ""
    if len(reason) > NOTE_WIDTH:
        reason = reason[: NOTE_WIDTH - 1] + "…"
    return reason


_PHASE_COLUMNS = (
    Column("run", "id"),
    Column("phase", "id"),
    Column("state", "id", priority=2),
    Column("idle for", justify="right"),
    Column("last activity (UTC)", priority=1),
    Column("note", "text", priority=3),
)


def _phase_table(title: str, entries: Sequence[StalePhase], width: int) -> RenderableType:
    """One table grouped by run: the run named once, a rule between runs."""
    rows = [
        (
            escape(entry.run_id),
            escape(entry.phase_id),
            escape(entry.state),
            format_age(entry.age_minutes),
            _short(entry.last_activity),
            escape(_note(entry)),
        )
        for entry in entries
    ]
    return fit_table(_PHASE_COLUMNS, rows, width=width, title=title, group=0)


def show_stale_report(report: StaleReport, *, keep: int | None) -> None:
    """The stale phases by run, oldest first (the first `keep` of each list; None: all), then
    the unleased."""
    out = report_console()
    query, stale, unleased = report.query, report.stale, report.unleased
    threshold = format_threshold(query.threshold)
    since = f"since {_short(query.cutoff)} UTC"
    if not stale.count and not unleased.count:
        out.print(
            f"no stale phases: nothing QUEUED untouched for over {threshold} ({since}), "
            "no EXECUTING phase with an expired lease."
        )
    if stale.count:
        queued = stale.by_kind.get(StaleKind.QUEUED, 0)
        expired = stale.by_kind.get(StaleKind.LEASE_EXPIRED, 0)
        out.print(
            f"[bold]{_plural(stale.count, 'stale phase')} in {_plural(stale.runs, 'run')}[/]: "
            f"{queued:,} QUEUED untouched for over {threshold} ({since}), "
            f"{expired:,} EXECUTING with an expired lease (worker presumed dead)"
        )
        _show_entries(out, "stale phases", stale, keep)
    if unleased.count:
        out.print(
            f"[yellow]{_plural(unleased.count, 'EXECUTING phase')} without a lease[/] in "
            f"{_plural(unleased.runs, 'run')}, untouched for over {threshold}: left by a worker "
            "that keeps no lease (the original tool?); marked only with --include-unleased"
        )
        _show_entries(out, "EXECUTING without a lease", unleased, keep)
    if not query.leases_checked:
        out.print(
            "[yellow]note:[/] this DB has no autopack_phase_claims table (never upgraded), so "
            "every EXECUTING phase counts as unleased"
        )


def _show_entries(out: Console, title: str, listing: StaleList, keep: int | None) -> None:
    shown = listing.entries[:keep]
    if shown:
        out.print(_phase_table(title, shown, out.width))
    hidden = listing.count - len(shown)
    if hidden > 0:
        out.print(
            f"… and {_plural(hidden, 'more phase')} (--show 0 lists all; --json gives every one)"
        )


def show_next_step() -> None:
    report_console().print(
        "to mark them FAILED: the same command with --mark-failed (it asks first; --yes in scripts)"
    )


def show_mark_result(result: MarkResult, *, unleased_left: int) -> None:
    """What marking did; `unleased_left` unleased phases were listed but not asked for."""
    out = report_console()
    out.print(
        f"marked {_plural(len(result.marked), 'phase')} FAILED with a {escape('[STALE]')} "
        "reason (an old reason is kept after '; previous:'); released "
        f"{_plural(result.released_claims, 'expired lease')}"
    )
    if result.skipped:
        out.print(
            f"[yellow]skipped {_plural(len(result.skipped), 'phase')}[/]: changed since the "
            "report (taken, renewed, finished or given a new reason), so left as they are:"
        )
        for entry in result.skipped[:SKIPPED_SHOWN]:
            out.print(f"  {escape(entry.run_id)} / {escape(entry.phase_id)}")
        if len(result.skipped) > SKIPPED_SHOWN:
            out.print(f"  … and {len(result.skipped) - SKIPPED_SHOWN:,} more (--json lists them)")
    if unleased_left:
        out.print(
            f"not marked: {_plural(unleased_left, 'EXECUTING phase')} without a lease (add "
            "--include-unleased once you know no other tool is running them)"
        )


@contextmanager
def mark_progress(total: int, *, enabled: bool) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on stderr for a large marking; yields the callback, or None."""
    if not enabled or total < PROGRESS_FROM:
        yield None
        return
    # Loaded only to mark: a report never shows a progress bar.
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        TextColumn("marking FAILED"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr_console(),
        transient=True,
    ) as progress:
        task = progress.add_task("mark", total=total)

        def advance(done: int) -> None:
            progress.update(task, completed=done)

        yield advance
