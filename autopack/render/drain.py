"""Rendering drain reports and session lists."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from autopack.console import render_error, stderr_console
from autopack.drain.report import DrainReport, SessionList
from autopack.errors import AutopackError

_OUTCOME_STYLE = {
    "complete": "green",
    "failed": "red",
    "timeout": "red",
    "refused": "yellow",
    "provider_unavailable": "yellow",
    "dry_run": "cyan",
}


def show_drain_report(report: DrainReport, *, quiet: bool) -> None:
    out = stderr_console()
    title = f"drain {report.kind} session {report.session_id}"
    if report.dry_run:
        title += " — DRY RUN (no LLM calls, nothing written)"
    if not quiet:
        table = Table(title=title, title_justify="left")
        columns = ["run", "phase", "outcome", "state", "telemetry", "zero-yield", "reason"]
        if report.dry_run:
            columns = ["run", "phase", "state", "bucket", "predicted", "budget"]
        for column in columns:
            table.add_column(column, overflow="fold")
        for entry in report.results:
            if report.dry_run:
                table.add_row(
                    escape(entry["run_id"]),
                    escape(entry["phase_id"]),
                    entry["final_state"] or "—",
                    entry.get("bucket") or "—",
                    _count(entry.get("estimated_tokens")),
                    _count(entry.get("selected_budget")),
                )
                continue
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
            if entry.get("transcript_dir") and entry["outcome"] not in ("complete", "dry_run"):
                out.print(f"transcripts: {escape(entry['transcript_dir'])}", soft_wrap=True)
        if len(report.runs) > 1:
            runs = Table(title="by run", title_justify="left")
            for column in (
                "run",
                "processed",
                "succeeded",
                "failed",
                "timeouts",
                "telemetry",
                "stopped",
            ):
                runs.add_column(column, overflow="fold")
            for run_id, run in report.runs.items():
                runs.add_row(
                    escape(run_id),
                    str(run.processed),
                    str(run.succeeded),
                    str(run.failed),
                    str(run.timeouts),
                    str(run.telemetry_events),
                    escape(run.stopped or ""),
                )
            out.print(runs)
    totals = report.totals
    out.print(
        f"processed {totals.processed}: {totals.succeeded} complete, {totals.failed} failed, "
        f"{totals.timeouts} timed out, {totals.refused} refused"
        + (
            f", {totals.provider_unavailable} given back (provider unavailable)"
            if totals.provider_unavailable
            else ""
        )
        + (f", {totals.dry_run} selected (dry run)" if totals.dry_run else "")
        + f"; telemetry rows {totals.telemetry_events}"
        + (f" ({totals.telemetry_per_minute}/min)" if totals.telemetry_per_minute else "")
        + f"; escalations {totals.escalation_events}; tokens in/out "
        f"{totals.input_tokens:,}/{totals.output_tokens:,}",
        soft_wrap=True,
    )
    if totals.zero_yield_reasons:
        reasons = ", ".join(f"{k} {v}" for k, v in totals.zero_yield_reasons.items())
        out.print(f"zero-yield reasons: {reasons}", soft_wrap=True)
    for run_id, reason in report.stopped_runs.items():
        out.print(f"stopped run {escape(run_id)}: {escape(reason)}", soft_wrap=True)
    for key, reason in report.skipped_phases.items():
        out.print(
            f"skipped {escape(key.replace(chr(31), ' / '))}: {escape(reason)}", soft_wrap=True
        )
    for run_id, reason in report.blocked_runs.items():
        out.print(f"waiting run {escape(run_id)}: {escape(reason)}", soft_wrap=True)
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
            f"budgets {forecast.selected_budget_tokens:,}{limit}",
            soft_wrap=True,
        )
    if report.stop_reason:
        out.print(f"stopped: {escape(report.stop_reason)}", soft_wrap=True)
    if not report.telemetry_enabled:
        out.print("telemetry was off for this drain (--no-telemetry)")


def show_sessions(listing: SessionList) -> None:
    table = Table(title="drain sessions (newest first)", title_justify="left")
    for column in (
        "session",
        "kind",
        "status",
        "started",
        "results",
        "complete",
        "telemetry",
        "stop reason",
    ):
        table.add_column(column, overflow="fold")
    for session in listing.sessions:
        table.add_row(
            session.id,
            session.kind,
            session.status,
            str(session.started_at)[:19],
            str(session.results),
            str(session.succeeded),
            str(session.telemetry_events),
            escape(session.stop_reason or ""),
        )
    stderr_console().print(table)


def show_refusal(reason: str, hint: str | None) -> None:
    render_error(AutopackError(reason, hint))


def _count(value: int | None) -> str:
    return f"{value:,}" if value is not None else "—"
