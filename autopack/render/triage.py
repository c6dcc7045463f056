"""Rendering `triage stale`: the stale phases by run (stderr) and its `--json` document (stdout)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TextIO

from rich.markup import escape
from rich.table import Table

from autopack.console import stderr_console, stdout
from autopack.db.identity import TargetInfo
from autopack.triage.stale import (
    STREAM_ROWS,
    EncodedEntries,
    MarkResult,
    StaleKind,
    StalePhase,
    StaleQuery,
    StaleTally,
    utc_text,
)

NOTE_WIDTH = 70
"""Previous failure reasons are cut to this many characters in the table (never in JSON)."""
PROGRESS_FROM = 5_000
"""Marking shows a progress bar from this many phases on."""
SKIPPED_SHOWN = 20
_ENCODER = json.JSONEncoder(default=str)
"""Made once: json.dumps with options builds a new encoder for every list element."""
_ELEMENT_SEPARATOR = ",\n    "
_NOT_ASCII = re.compile(r"[^\x00-\x7e]")
"""What json's ensure_ascii escapes: an encoded element may hold such characters as they are
(SQLite's json_quote writes them so); the document is ASCII, as json.dumps writes it."""


@dataclass(frozen=True)
class EncodedList:
    """A list value of write_json_document whose elements come already encoded, in batches."""

    batches: Iterable[list[str]]


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


def write_json_document(items: Iterable[tuple[str, Any]], out: TextIO) -> None:
    """One JSON object, written while it is produced (constant memory, however long a list).

    A value may be an iterator (written as a list, one compact element per line), an
    EncodedList (the same, its elements already encoded) or a callable (evaluated when its
    turn comes: e.g. a count taken while a list streamed past). Any other value is written
    as `json.dumps(indent=2)` would write it.
    """
    out.write("{")
    for index, (key, raw) in enumerate(items):
        out.write(("\n" if index == 0 else ",\n") + f"  {json.dumps(key)}: ")
        value = raw() if callable(raw) else raw
        if isinstance(value, EncodedList):
            _write_list(value.batches, out)
        elif isinstance(value, Iterator):
            _write_list(_encoded(value), out)
        else:
            out.write(json.dumps(value, indent=2, default=str).replace("\n", "\n  "))
    out.write("\n}\n")
    out.flush()


def _encoded(elements: Iterator[Any]) -> Iterator[list[str]]:
    batch: list[str] = []
    for element in elements:
        batch.append(_ENCODER.encode(element))
        if len(batch) >= STREAM_ROWS:
            yield batch
            batch = []
    if batch:
        yield batch


def _write_list(batches: Iterable[list[str]], out: TextIO) -> None:
    out.write("[")
    written = 0
    for batch in batches:
        if batch:
            text = _ELEMENT_SEPARATOR.join(batch)
            if not text.isascii() or "\x7f" in text:  # isascii is a flag: free
                text = _NOT_ASCII.sub(_escaped, text)
            # Two writes: prefix + text would copy the whole batch once more.
            out.write("\n    " if written == 0 else _ELEMENT_SEPARATOR)
            out.write(text)
            written += len(batch)
    out.write("\n  ]" if written else "]")


def _escaped(match: re.Match[str]) -> str:
    """A character as json's ensure_ascii writes it (a surrogate pair beyond the BMP)."""
    code = ord(match.group())
    if code > 0xFFFF:
        code -= 0x10000
        return f"\\u{0xD800 | (code >> 10):04x}\\u{0xDC00 | (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def write_stale_json(
    query: StaleQuery,
    target: TargetInfo,
    stale: EncodedEntries,
    unleased: EncodedEntries,
    result: MarkResult | None = None,
    out: TextIO | None = None,
) -> None:
    """Write the `--json` document (docs/triage.md) as the entries stream in.

    `stale` and `unleased` are counted while they are written (their tallies are complete
    afterwards). `result` is None for a report; given, the document also tells what marking did.
    """
    items: list[tuple[str, Any]] = [
        ("target", target.model_dump(mode="json")),
        ("mode", "report" if result is None else "mark_failed"),
        ("now", utc_text(query.now)),
        ("threshold_minutes", query.threshold_minutes),
        ("cutoff", utc_text(query.cutoff)),
        ("leases_checked", query.leases_checked),
        ("stale", EncodedList(stale.batches)),
        ("count", lambda: stale.tally.count),
        ("runs", lambda: stale.tally.runs),
        ("unleased", EncodedList(unleased.batches)),
        ("unleased_count", lambda: unleased.tally.count),
        ("marked_count", len(result.marked) if result is not None else 0),
        ("skipped_count", len(result.skipped) if result is not None else 0),
        ("released_claims", result.released_claims if result is not None else 0),
    ]
    write_json_document(items, out if out is not None else stdout())


# human report (stderr) ------------------------------------------------------------------------


def _note(entry: StalePhase) -> str:
    if entry.kind is StaleKind.LEASE_EXPIRED:
        expired = _short(entry.lease_expires_at) if entry.lease_expires_at else "?"
        return f"lease of {entry.worker} expired {expired}"
    reason = entry.last_failure_reason or ""
    if len(reason) > NOTE_WIDTH:
        reason = reason[: NOTE_WIDTH - 1] + "…"
    return reason


def _phase_table(title: str, entries: Sequence[StalePhase]) -> Table:
    """One table grouped by run: the run named once, a rule between runs."""
    table = Table(title=title, title_justify="left")
    table.add_column("run", overflow="fold")
    table.add_column("phase", overflow="fold")
    table.add_column("state")
    table.add_column("idle for", justify="right")
    table.add_column("last activity (UTC)")
    table.add_column("note", overflow="fold")
    previous: str | None = None
    for entry in entries:
        if previous is not None and entry.run_id != previous:
            table.add_section()
        table.add_row(
            escape(entry.run_id) if entry.run_id != previous else "",
            escape(entry.phase_id),
            escape(entry.state),
            format_age(entry.age_minutes),
            _short(entry.last_activity),
            escape(_note(entry)),
        )
        previous = entry.run_id
    return table


def show_stale_report(query: StaleQuery, stale: StaleTally, unleased: StaleTally) -> None:
    """The stale phases by run, oldest first (the tallies' kept entries), then the unleased."""
    out = stderr_console()
    threshold = format_threshold(query.threshold)
    since = f"since {_short(query.cutoff)} UTC"
    if not stale.count and not unleased.count:
        out.print(
            f"no stale phases: nothing QUEUED untouched for over {threshold} ({since}), "
            "no EXECUTING phase with an expired lease.",
            soft_wrap=True,
        )
    if stale.count:
        queued = stale.by_kind.get(StaleKind.QUEUED, 0)
        expired = stale.by_kind.get(StaleKind.LEASE_EXPIRED, 0)
        out.print(
            f"[bold]{_plural(stale.count, 'stale phase')} in {_plural(stale.runs, 'run')}[/]: "
            f"{queued:,} QUEUED untouched for over {threshold} ({since}), "
            f"{expired:,} EXECUTING with an expired lease (worker presumed dead)",
            soft_wrap=True,
        )
        if stale.kept:
            out.print(_phase_table("stale phases", stale.kept))
        _more(stale.hidden)
    if unleased.count:
        out.print(
            f"[yellow]{_plural(unleased.count, 'EXECUTING phase')} without a lease[/] in "
            f"{_plural(unleased.runs, 'run')}, untouched for over {threshold}: left by a worker "
            "that keeps no lease (the original tool?); marked only with --include-unleased",
            soft_wrap=True,
        )
        if unleased.kept:
            out.print(_phase_table("EXECUTING without a lease", unleased.kept))
        _more(unleased.hidden)
    if not query.leases_checked:
        out.print(
            "[yellow]note:[/] this DB has no autopack_phase_claims table (never upgraded), so "
            "every EXECUTING phase counts as unleased",
            soft_wrap=True,
        )


def _more(hidden: int) -> None:
    if hidden > 0:
        stderr_console().print(
            f"… and {_plural(hidden, 'more phase')} (--show 0 lists all; --json gives every one)",
            soft_wrap=True,
        )


def show_next_step() -> None:
    stderr_console().print(
        "to mark them FAILED: the same command with --mark-failed (it asks first; --yes in "
        "scripts)",
        soft_wrap=True,
    )


def show_mark_result(result: MarkResult, *, unleased_left: int) -> None:
    """What marking did; `unleased_left` unleased phases were listed but not asked for."""
    out = stderr_console()
    out.print(
        f"marked {_plural(len(result.marked), 'phase')} FAILED with a {escape('[STALE]')} "
        "reason (an old reason is kept after '; previous:'); released "
        f"{_plural(result.released_claims, 'expired lease')}",
        soft_wrap=True,
    )
    if result.skipped:
        out.print(
            f"[yellow]skipped {_plural(len(result.skipped), 'phase')}[/]: changed since the "
            "report (taken, renewed, finished or given a new reason), so left as they are:",
            soft_wrap=True,
        )
        for entry in result.skipped[:SKIPPED_SHOWN]:
            out.print(f"  {escape(entry.run_id)} / {escape(entry.phase_id)}", soft_wrap=True)
        if len(result.skipped) > SKIPPED_SHOWN:
            out.print(f"  … and {len(result.skipped) - SKIPPED_SHOWN:,} more (--json lists them)")
    if unleased_left:
        out.print(
            f"not marked: {_plural(unleased_left, 'EXECUTING phase')} without a lease (add "
            "--include-unleased once you know no other tool is running them)",
            soft_wrap=True,
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
