"""The result of a drain command: its session, one entry per phase attempt, and totals."""

from __future__ import annotations

from collections import Counter
from typing import Any

from pydantic import BaseModel, Field

from autopack.executor.phase import PhaseOutcome


class DrainTotals(BaseModel):
    processed: int = 0
    succeeded: int = 0
    failed: int = 0
    refused: int = 0
    timeouts: int = 0
    telemetry_events: int = 0
    escalation_events: int = 0
    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    duration_s: float = 0.0
    telemetry_per_minute: float | None = None
    zero_yield_reasons: dict[str, int] = Field(default_factory=dict)


class DrainReport(BaseModel):
    session_id: str
    dry_run: bool = False
    telemetry_enabled: bool = True
    results: list[dict[str, Any]]
    totals: DrainTotals
    stopped_runs: dict[str, str] = Field(default_factory=dict)
    stop_reason: str | None = None

    @property
    def any_failed(self) -> bool:
        return self.totals.failed > 0 or self.totals.timeouts > 0


def outcome_entry(outcome: PhaseOutcome) -> dict[str, Any]:
    entry = outcome.result_values()
    entry["result_id"] = outcome.result_id
    entry["files_written"] = outcome.files_written
    entry["estimated_tokens"] = outcome.estimated_tokens
    return entry


def summarise(
    session_id: str,
    outcomes: list[PhaseOutcome],
    *,
    telemetry_enabled: bool,
    dry_run: bool = False,
    stopped_runs: dict[str, str] | None = None,
    stop_reason: str | None = None,
) -> DrainReport:
    totals = DrainTotals(processed=len(outcomes))
    reasons: Counter[str] = Counter()
    for outcome in outcomes:
        if outcome.outcome == "complete":
            totals.succeeded += 1
        elif outcome.outcome == "timeout":
            totals.timeouts += 1
        elif outcome.outcome == "refused":
            totals.refused += 1
        else:
            totals.failed += 1
        totals.telemetry_events += outcome.telemetry_events
        totals.escalation_events += outcome.escalation_events
        totals.llm_calls += outcome.llm_calls
        totals.input_tokens += outcome.input_tokens
        totals.output_tokens += outcome.output_tokens
        totals.duration_s += outcome.duration_s
        if outcome.zero_yield_reason:
            reasons[outcome.zero_yield_reason] += 1
    totals.zero_yield_reasons = dict(sorted(reasons.items()))
    if totals.duration_s > 0:
        totals.telemetry_per_minute = round(totals.telemetry_events / (totals.duration_s / 60), 3)
    totals.duration_s = round(totals.duration_s, 3)
    return DrainReport(
        session_id=session_id,
        dry_run=dry_run,
        telemetry_enabled=telemetry_enabled,
        results=[outcome_entry(o) for o in outcomes],
        totals=totals,
        stopped_runs=stopped_runs or {},
        stop_reason=stop_reason,
    )
