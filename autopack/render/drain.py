"""Rendering drain reports and session lists."""

from __future__ import annotations

from rich.markup import escape

from autopack.console import render_error, report_console
from autopack.drain.report import DrainReport, SessionList
from autopack.errors import AutopackError
from autopack.render.fit import Column, fit_table

_OUTCOME_STYLE = {
    "complete": "green",
    "failed": "red",
    "timeout": "red",
    "refused": "yellow",
    "provider_unavailable": "yellow",
    "dry_run": "cyan",
}


_RESULT_COLUMNS = (
    Column("run", "id"),
    Column("phase", "id"),
    Column("outcome", "id"),
    Column("state", "id", priority=3),
    Column("telemetry", justify="right", priority=2),
    Column("zero-yield", "id", priority=1),
    # Essential: when a failure's reason does not fit beside the ids, rows become records.
    Column("reason", "text"),
)
_DRY_RUN_COLUMNS = (
    Column("run", "id"),
    Column("phase", "id"),
    Column("state", "id", priority=4),
    Column("bucket", "id", priority=1),
    Column("predicted", justify="right", priority=3),
    Column("budget", justify="right", priority=2),
)
_RUN_COLUMNS = (
    Column("run", "id"),
    Column("processed", justify="right"),
    Column("succeeded", justify="right"),
    Column("failed", justify="right"),
    Column("timeouts", justify="right", priority=1),
    Column("telemetry", justify="right", priority=2),
    Column("stopped", "text", priority=3),
)


def _result_rows(report: DrainReport) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for entry in report.results:
        if report.dry_run:
            rows.append(
                (
                    escape(entry["run_id"]),
                    escape(entry["phase_id"]),
                    entry["final_state"] or "—",
                    entry.get("bucket") or "—",
                    _count(entry.get("estimated_tokens")),
                    _count(entry.get("selected_budget")),
                )
            )
            continue
        style = _OUTCOME_STYLE.get(entry["outcome"], "")
        rows.append(
            (
                escape(entry["run_id"]),
                escape(entry["phase_id"]),
                f"[{style}]{entry['outcome']}[/]" if style else entry["outcome"],
                entry["final_state"] or "—",
                str(entry["telemetry_events"]),
                entry["zero_yield_reason"] or "—",
                escape(entry["failure_reason"] or ""),
            )
        )
    return rows


RATE_FROM_SECONDS = 60.0
"""Rates are shown once this much draining time is behind them."""


def rate_per_hour(value: float | None, unit: str) -> str:
    """`12.3 phases/h`: a drain's rates read per hour (a per-minute rate over short phases is
    noise)."""
    return "—" if value is None else f"{value:,.1f} {unit}/h"


def show_drain_report(report: DrainReport, *, quiet: bool) -> None:
    """The end-of-session report (stdout): results, per-run figures, totals, why it stopped."""
    out = report_console()
    title = f"drain {report.kind} session {report.session_id}"
    if report.dry_run:
        title += " — DRY RUN (no LLM calls, nothing written)"
    if not quiet:
        columns = _DRY_RUN_COLUMNS if report.dry_run else _RESULT_COLUMNS
        out.print(fit_table(columns, _result_rows(report), width=out.width, title=title))
        for entry in report.results:
            if entry.get("transcript_dir") and entry["outcome"] not in ("complete", "dry_run"):
                out.print(f"transcripts: {escape(entry['transcript_dir'])}", soft_wrap=True)
        if len(report.runs) > 1:
            rows = [
                (
                    escape(run_id),
                    str(run.processed),
                    str(run.succeeded),
                    str(run.failed),
                    str(run.timeouts),
                    str(run.telemetry_events),
                    escape(run.stopped or ""),
                )
                for run_id, run in report.runs.items()
            ]
            out.print(fit_table(_RUN_COLUMNS, rows, width=out.width, title="by run"))
    totals = report.totals
    # Rates only from a minute of draining on: over a few seconds they are noise.
    timed = totals.duration_s >= RATE_FROM_SECONDS and not totals.dry_run
    rates = f" ({rate_per_hour(totals.phases_per_hour, 'phases')})" if timed else ""
    out.print(
        f"processed {totals.processed}{rates}: {totals.succeeded} complete, "
        f"{totals.failed} failed, {totals.timeouts} timed out, {totals.refused} refused"
        + (
            f", {totals.provider_unavailable} given back (provider unavailable)"
            if totals.provider_unavailable
            else ""
        )
        + (f", {totals.dry_run} selected (dry run)" if totals.dry_run else "")
        + f"; telemetry rows {totals.telemetry_events}"
        + (f" ({rate_per_hour(totals.telemetry_per_hour, 'rows')})" if timed else "")
        + f"; escalations {totals.escalation_events}; tokens in/out "
        f"{totals.input_tokens:,}/{totals.output_tokens:,}"
    )
    if totals.zero_yield_reasons:
        reasons = ", ".join(f"{k} {v}" for k, v in totals.zero_yield_reasons.items())
        out.print(f"zero-yield reasons: {reasons}")
    for run_id, reason in report.stopped_runs.items():
        out.print(f"stopped run {escape(run_id)}: {escape(reason)}")
    for key, reason in report.skipped_phases.items():
        out.print(f"skipped {escape(key.replace(chr(31), ' / '))}: {escape(reason)}")
    for run_id, reason in report.blocked_runs.items():
        out.print(f"waiting run {escape(run_id)}: {escape(reason)}")
    if report.forecast is not None:
        forecast = report.forecast
        limit = (
            f" against --max-total-tokens {forecast.max_total_tokens:,} ("
            + ("within" if forecast.within_max_total_tokens else "OVER")
            + "; input tokens come on top)"
            if forecast.max_total_tokens is not None
            else " (no --max-total-tokens)"
        )
        out.print(
            f"forecast: {forecast.predicted_output_tokens:,} output tokens predicted, "
            f"budgets {forecast.selected_budget_tokens:,}{limit}"
        )
    if report.stop_reason:
        out.print(f"stopped: {escape(report.stop_reason)}")
    if not report.telemetry_enabled:
        out.print("telemetry was off for this drain (--no-telemetry)")


_SESSION_COLUMNS = (
    Column("session", "id"),
    Column("kind", "id", priority=2),
    Column("status", "id"),
    Column("started", priority=4),
    Column("done", justify="right"),
    Column("telemetry", justify="right", priority=1),
    Column("stop reason", "text", priority=3),
)


def show_sessions(listing: SessionList) -> None:
    """`drain sessions` (stdout), newest first."""
    out = report_console()
    if not listing.sessions:
        out.print("no drain sessions in this database")
        return
    rows = [
        (
            escape(session.id),
            escape(session.kind),
            escape(session.status),
            session.started_at.strftime("%Y-%m-%d %H:%M"),
            f"{session.succeeded}/{session.results}",
            str(session.telemetry_events),
            escape(session.stop_reason or ""),
        )
        for session in listing.sessions
    ]
    out.print(
        fit_table(
            _SESSION_COLUMNS,
            rows,
            width=out.width,
            title="drain sessions (newest first; done: complete/results; times UTC)",
        )
    )


def show_refusal(reason: str, hint: str | None) -> None:
    render_error(AutopackError(reason, hint))


def _count(value: int | None) -> str:
    return f"{value:,}" if value is not None else "—"
