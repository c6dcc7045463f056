"""Rendering drain reports: one row per phase attempt, then the totals."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from autopack.console import render_error, stderr_console
from autopack.drain.report import DrainReport
from autopack.errors import AutopackError

_OUTCOME_STYLE = {"complete": "green", "failed": "red", "timeout": "red", "refused": "yellow"}


def show_drain_report(report: DrainReport, *, quiet: bool) -> None:
    out = stderr_console()
    if not quiet:
        table = Table(title=f"drain session {report.session_id}", title_justify="left")
        for column in ("run", "phase", "outcome", "state", "telemetry", "zero-yield", "reason"):
            table.add_column(column, overflow="fold")
        for entry in report.results:
            style = _OUTCOME_STYLE.get(entry["outcome"], "")
            table.add_row(
                escape(entry["run_id"]),
                escape(entry["phase_id"]),
                f"[{style}]{entry['outcome']}[/]" if style else entry["outcome"],
                entry["final_state"] or "—",
                str(entry["telemetry_events"]),
                entry["zero_yield_reason"] or "—",
                escape(entry["failure_reason"] or ""),
            )
        out.print(table)
        for entry in report.results:
            if entry["transcript_dir"] and entry["outcome"] != "complete":
                out.print(f"transcripts: {escape(entry['transcript_dir'])}", soft_wrap=True)
    totals = report.totals
    out.print(
        f"processed {totals.processed}: {totals.succeeded} complete, {totals.failed} failed, "
        f"{totals.timeouts} timed out, {totals.refused} refused; telemetry rows "
        f"{totals.telemetry_events} (escalations {totals.escalation_events}); "
        f"tokens in/out {totals.input_tokens:,}/{totals.output_tokens:,}",
        soft_wrap=True,
    )
    if totals.zero_yield_reasons:
        reasons = ", ".join(f"{k} {v}" for k, v in totals.zero_yield_reasons.items())
        out.print(f"zero-yield reasons: {reasons}", soft_wrap=True)
    if not report.telemetry_enabled:
        out.print("telemetry was off for this drain (--no-telemetry)")


def show_refusal(reason: str, hint: str | None) -> None:
    render_error(AutopackError(reason, hint))
