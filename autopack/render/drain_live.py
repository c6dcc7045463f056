"""What a drain shows while it works (stderr).

On a terminal: a Rich live display (each worker's phase in flight and for how long, phases
done and failed, tokens used against --max-total-tokens, telemetry rows written) with one line
kept on screen per finished phase: predicted against actual tokens, the outcome, and the reason
if it failed. Without a terminal: the same lines, plain. --quiet and --json: nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.markup import escape
from rich.text import Text

from autopack.console import Logger, stderr_console
from autopack.drain.progress import DrainProgress
from autopack.drain.report import per_hour
from autopack.render.drain import RATE_FROM_SECONDS, rate_per_hour
from autopack.render.fit import PLAIN, Column, fit_table


def phase_line(entry: dict[str, Any]) -> str:
    """One finished phase, as kept on screen (plain text)."""
    predicted = entry.get("estimated_tokens")
    actual = entry.get("output_tokens") or 0
    figures = (
        f"predicted {predicted:,} / actual {actual:,} output tokens"
        if predicted is not None
        else f"actual {actual:,} output tokens"
    )
    line = f"{entry['outcome']}: {entry['run_id']} / {entry['phase_id']} — {figures}"
    if entry["outcome"] not in ("complete", "dry_run") and entry.get("failure_reason"):
        line += f" — {entry['failure_reason']}"
    return line


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


_IN_FLIGHT_COLUMNS = (
    Column("worker", justify="right"),
    Column("run", "id"),
    Column("phase in flight", "id"),
    Column("elapsed", justify="right"),
)


def status_line(progress: DrainProgress, now: float) -> str:
    """The live totals: elapsed, done, failed, the rate per hour, tokens, telemetry rows."""
    seconds = now - progress.started
    finished = progress.done + progress.failed
    rate = per_hour(finished, seconds) if finished and seconds >= RATE_FROM_SECONDS else None
    budget = (
        f"{progress.tokens:,} / {progress.max_total_tokens:,}"
        if progress.max_total_tokens
        else f"{progress.tokens:,}"
    )
    return (
        f"{_elapsed(seconds)} elapsed · {progress.done} done · {progress.failed} failed"
        + (f" · {rate_per_hour(rate, 'phases')}" if rate is not None else "")
        + f" · tokens {budget} · telemetry rows {progress.telemetry_rows}"
    )


@dataclass
class _Panel:
    """The live part: re-rendered on every refresh from the progress the controller keeps."""

    progress: DrainProgress

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        progress = self.progress
        now = time.monotonic()
        rows = [
            (
                str(slot),
                escape(flight.run_id),
                escape(flight.phase_id),
                _elapsed(now - flight.started),
            )
            for slot, flight in enumerate(progress.in_flight(), start=1)
        ]
        yield fit_table(_IN_FLIGHT_COLUMNS, rows, width=options.max_width, style=PLAIN)
        yield Text(status_line(progress, now))


@dataclass
class DrainDisplay:
    log: Logger
    progress: DrainProgress

    def on_result(self, entry: dict[str, Any]) -> None:
        self.log(phase_line(entry))


def _silent(_message: str) -> None:
    """--quiet and --json: nothing while the drain works."""


@contextmanager
def drain_display(
    *, quiet: bool, as_json: bool, max_total_tokens: int | None, console: Console | None = None
) -> Iterator[DrainDisplay]:
    """The display for one drain: live on a terminal, plain lines otherwise, or silent."""
    progress = DrainProgress(max_total_tokens=max_total_tokens)
    if quiet or as_json:
        yield DrainDisplay(_silent, progress)
        return
    out = console or stderr_console()
    if not out.is_terminal:

        def plain(message: str) -> None:
            out.print(escape(message), soft_wrap=True)

        yield DrainDisplay(plain, progress)
        return
    with Live(_Panel(progress), console=out, refresh_per_second=4, transient=True) as live:

        def kept(message: str) -> None:
            live.console.print(escape(message), soft_wrap=True)

        yield DrainDisplay(kept, progress)
