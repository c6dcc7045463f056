"""Rendering `runs list`, `runs show` and `phases show`: the report on stdout.

Ids never wrap (tables are fitted by autopack/render/fit.py; lines are printed with soft wrap):
an operator copies them into the next command. Tables show a failure reason's first line only;
`--json` has it whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from rich.console import Console
from rich.markup import escape

from autopack.console import report_console
from autopack.render.fit import COMPACT, KEY_VALUE, Column, fit_table
from autopack.runs import PhaseAttempt, PhaseDetail, RunDetail, RunList, TelemetrySummary

_STATE_STYLE = {
    "COMPLETE": "green",
    "DONE_SUCCESS": "green",
    "FAILED": "red",
    "EXECUTING": "yellow",
}


_RUN_COLUMNS = (
    Column("run", "id"),
    Column("state", "id"),
    Column("phases by state", "text"),
    Column("telemetry", justify="right", priority=2),
    Column("created", priority=1),
)
_PHASE_COLUMNS = (
    Column("#", justify="right", priority=3),
    Column("phase", "id"),
    Column("state", "id"),
    Column("category", "id", priority=4),
    Column("complexity", "id", priority=5),
    Column("tries", justify="right", priority=2),
    Column("tel", justify="right", priority=1),
)
_FAILURE_COLUMNS = (Column("phase", "id"), Column("reason", "text"))
_TELEMETRY_COLUMNS = (
    Column("event", justify="right"),
    Column("when", priority=3),
    Column("model", "id", priority=4),
    Column("predicted", justify="right"),
    Column("actual", justify="right"),
    Column("budget", justify="right", priority=2),
    Column("ok", priority=5),
    Column("coefficients", "id", priority=1),
)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "—"


def _states(counts: Mapping[str, int]) -> str:
    """`7 complete, 2 failed`: a run's phases by state, most first."""
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{n:,} {state.lower()}" for state, n in ordered) or "no phases"


def _state(value: str) -> str:
    style = _STATE_STYLE.get(value) or ("red" if value.startswith("DONE_FAILED") else "")
    return f"[{style}]{escape(value)}[/]" if style else escape(value)


def show_run_list(listing: RunList) -> None:
    out = report_console()
    filters = listing.filters
    scope = [f"state {filters.state}"] if filters.state else []
    scope += [f"id starting {filters.prefix!r}"] if filters.prefix else []
    shown = len(listing.runs)
    noun = "run" if listing.matching == 1 else "runs"
    head = f"{shown:,} of {listing.matching:,} {noun}" if shown < listing.matching else ""
    head = head or f"{shown:,} {noun}"
    if scope:
        head += f" ({', '.join(scope)})"
    out.print(f"{head}, newest first", soft_wrap=True)
    if not listing.runs:
        return
    # created and updated are both in --json; the table shows the created date only (the
    # list's order).
    rows = [
        (
            escape(run.id),
            _state(run.state),
            escape(_states(run.phase_states)),
            f"{run.telemetry_events:,}" if listing.telemetry_available else "—",
            run.created_at.strftime("%Y-%m-%d") if run.created_at else "—",
        )
        for run in listing.runs
    ]
    out.print(fit_table(_RUN_COLUMNS, rows, width=out.width, style=COMPACT))
    if shown < listing.matching:
        out.print(f"{listing.matching - shown:,} older runs not shown: --limit 0 shows all")


def _telemetry_lines(summary: TelemetrySummary | None) -> list[str]:
    if summary is None:
        return ["telemetry: table token_estimation_v2_events is missing"]
    if not summary.events:
        return ["telemetry: no rows"]
    bound = " (a lower bound: some calls were truncated)" if summary.truncated else ""
    return [
        f"telemetry: {summary.events:,} rows, {summary.success:,} success, "
        f"{summary.truncated:,} truncated",
        f"output tokens: predicted {summary.predicted_output_tokens:,}, "
        f"actual {summary.actual_output_tokens:,}{bound}",
    ]


def _field(out: Console, name: str, value: str, *, prose: bool = False) -> None:
    """`name: value` on one line: ids and paths never wrap; prose (reasons) wraps at words."""
    out.print(f"{name}: {value}", soft_wrap=not prose)


def show_run_detail(detail: RunDetail) -> None:
    out = report_console()
    run = detail.run
    _field(out, "run", f"[bold]{escape(run.id)}[/]  {_state(run.state)}")
    _field(out, "created", f"{_when(run.created_at)}   updated {_when(run.updated_at)}")
    if run.started_at or run.completed_at:
        _field(out, "started", f"{_when(run.started_at)}   completed {_when(run.completed_at)}")
    if run.token_cap is not None:
        _field(out, "tokens", f"{run.tokens_used or 0:,} used of {run.token_cap:,}")
    if run.failure_reason:
        _field(out, "failure", escape(run.failure_reason), prose=True)
    _field(out, "phases", f"{len(detail.phases):,} ({escape(_states(detail.phase_states))})")
    if detail.drain_results_available:
        _field(out, "drain attempts", f"{detail.drain_attempts:,}")
    else:
        _field(out, "drain attempts", "none recorded (no autopack_drain_results table)")
    for line in _telemetry_lines(detail.telemetry):
        out.print(line)
    if not detail.phases:
        return
    rows = [
        (
            str(phase.phase_index),
            escape(phase.phase_id),
            _state(phase.state),
            escape(phase.task_category or "—"),
            escape(phase.complexity or "—"),
            str(phase.drain_attempts),
            str(phase.telemetry_events),
        )
        for phase in detail.phases
    ]
    out.print(fit_table(_PHASE_COLUMNS, rows, width=out.width, style=COMPACT))
    _show_failures(out, detail)
    out.print(f"one phase in detail: autopack phases show {escape(run.id)} PHASE", soft_wrap=True)


def _show_failures(out: Console, detail: RunDetail) -> None:
    """Each phase's last failure reason, its first line (the phase id stays whole)."""
    failed = [p for p in detail.phases if p.last_failure_reason]
    if not failed:
        return
    out.print("last failure reasons:")
    rows = [
        (escape(phase.phase_id), escape((phase.last_failure_reason or "").splitlines()[0]))
        for phase in failed
    ]
    out.print(fit_table(_FAILURE_COLUMNS, rows, width=out.width, style=KEY_VALUE))


def show_phase_detail(detail: PhaseDetail) -> None:
    out = report_console()
    _field(out, "run", f"{escape(detail.run_id)}  ({escape(detail.run_state)})")
    _field(out, "phase", f"[bold]{escape(detail.phase_id)}[/]  #{detail.phase_index}")
    _field(out, "name", escape(detail.name), prose=True)
    _field(out, "state", _state(detail.state))
    _field(
        out,
        "category",
        f"{escape(detail.task_category or '—')}, complexity {escape(detail.complexity or '—')}",
    )
    scope = detail.scope if isinstance(detail.scope, dict) else {}
    paths = scope.get("paths")
    if isinstance(paths, list) and paths:
        _field(out, "scope", escape(", ".join(str(p) for p in paths)))
    if detail.deliverables:
        out.print("deliverables:")
        for item in detail.deliverables:
            out.print(f"  {escape(item)}", soft_wrap=True)
    _field(
        out,
        "builder attempts",
        f"{detail.builder_attempts}, retry {detail.retry_attempt}; "
        f"updated {_when(detail.updated_at)}",
    )
    if detail.last_failure_reason:
        _field(out, "last failure", escape(detail.last_failure_reason), prose=True)
    _show_attempts(out, detail)
    _show_telemetry(out, detail)
    for escalation in detail.escalations:
        out.print(
            f"escalation {_when(escalation.timestamp)}: attempt {escalation.attempt_index}, "
            f"{escape(escalation.reason)}, retried with max_tokens "
            f"{escalation.retry_max_tokens:,}"
        )


def _show_attempts(out: Console, detail: PhaseDetail) -> None:
    if not detail.drain_results_available:
        out.print("\nattempts: none recorded (no autopack_drain_results table)")
        return
    out.print(f"\n[bold]attempts[/] ({len(detail.attempts)}, oldest first)")
    if not detail.attempts:
        out.print("  never drained by autopack")
    for number, attempt in enumerate(detail.attempts, 1):
        _show_attempt(out, number, attempt)


def _show_attempt(out: Console, number: int, attempt: PhaseAttempt) -> None:
    who = ", ".join(x for x in (attempt.session_kind, attempt.worker) if x)
    # Wrapped at spaces: the session id and the worker stay whole, each on its line if need be.
    out.print(
        f"{number}. session {escape(attempt.session_id)} #{attempt.seq}"
        + (f" ({escape(who)})" if who else "")
    )
    took = f" ({attempt.duration_s:.1f} s)" if attempt.duration_s is not None else ""
    final = f" → {_state(attempt.final_state)}" if attempt.final_state else ""
    out.print(
        f"   {_when(attempt.started_at)}{took}  outcome {escape(attempt.outcome)}{final}",
        soft_wrap=True,
    )
    if attempt.failure_reason:
        kind = f" ({escape(attempt.failure_kind)})" if attempt.failure_kind else ""
        out.print(f"   reason{kind}: {escape(attempt.failure_reason.strip())}")
    if attempt.fingerprint:
        out.print(f"   fingerprint: {escape(attempt.fingerprint)}")  # has spaces: wraps at them
    yielded = f"   telemetry rows {attempt.telemetry_events}, LLM calls {attempt.llm_calls}, "
    yielded += f"output tokens {attempt.output_tokens:,}"
    if attempt.zero_yield_reason:
        yielded += f"; no telemetry: {escape(attempt.zero_yield_reason)}"
    out.print(yielded)
    if attempt.commit_sha:
        out.print(f"   commit: {escape(attempt.commit_sha)}", soft_wrap=True)
    if attempt.transcript_dir:
        out.print(f"   transcripts: {escape(attempt.transcript_dir)}", soft_wrap=True)
        if attempt.transcript_files is None:
            out.print("     (not readable from here)")
        for path in attempt.transcript_files or []:
            out.print(f"     {escape(path.rsplit('/', 1)[-1])}", soft_wrap=True)


def _show_telemetry(out: Console, detail: PhaseDetail) -> None:
    out.print()
    for line in _telemetry_lines(detail.telemetry_summary):
        out.print(line)
    if not detail.telemetry:
        return
    # Truncation shows as `≥actual` (a lower bound) rather than in a column of its own.
    rows = []
    for row in detail.telemetry:
        actual = f"{row.actual_output_tokens:,}"
        rows.append(
            (
                str(row.event_id),
                row.timestamp.strftime("%m-%d %H:%M") if row.timestamp else "—",
                escape(row.model),
                f"{row.predicted_output_tokens:,}",
                f"≥{actual}" if row.truncated else actual,
                f"{row.selected_budget:,}",
                "yes" if row.success else "no",
                escape(row.coefficient_set or "—"),
            )
        )
    out.print(fit_table(_TELEMETRY_COLUMNS, rows, width=out.width, style=COMPACT))
