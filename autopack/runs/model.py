"""The typed results of `runs list`, `runs show` and `phases show` (their `--json` documents).

Timestamps are naive UTC, as the DB stores them; JSON writes them as RFC 3339 with `+00:00`
(UtcTimestamp). Counts of rows in tables a DB may lack (an original Autopack DB not yet
upgraded has no drain results) are 0, and the report says the table is missing rather than
pretending nothing happened.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from autopack.db.clock import UtcTimestamp

DEFAULT_LIMIT = 50


class RunFilters(BaseModel):
    """Which runs `runs list` shows: newest first, at most `limit` (0: all)."""

    state: str | None = None
    prefix: str | None = None
    limit: int = DEFAULT_LIMIT


class RunSummary(BaseModel):
    id: str
    state: str
    created_at: UtcTimestamp | None
    updated_at: UtcTimestamp | None
    phases: int
    phase_states: dict[str, int]
    """Only the states its phases are in (no zeros)."""
    telemetry_events: int


class RunList(BaseModel):
    filters: RunFilters
    matching: int
    """Runs that pass the filters (the list holds the newest `limit` of them)."""
    runs: list[RunSummary]
    telemetry_available: bool


class TelemetrySummary(BaseModel):
    """A run's or a phase's token_estimation_v2_events rows, summed."""

    events: int = 0
    success: int = 0
    truncated: int = 0
    predicted_output_tokens: int = 0
    actual_output_tokens: int = 0
    """A truncated row's actual output is a lower bound: the sum is one too when any is."""


class PhaseSummary(BaseModel):
    phase_index: int
    phase_id: str
    name: str
    state: str
    task_category: str | None
    complexity: str | None
    builder_attempts: int
    drain_attempts: int
    """Rows in autopack_drain_results for the phase, across every drain session."""
    telemetry_events: int
    last_failure_reason: str | None


class RunFields(BaseModel):
    id: str
    state: str
    created_at: UtcTimestamp | None
    updated_at: UtcTimestamp | None
    started_at: UtcTimestamp | None
    completed_at: UtcTimestamp | None
    token_cap: int | None
    tokens_used: int | None
    max_phases: int | None
    failure_reason: str | None


class RunDetail(BaseModel):
    run: RunFields
    phase_states: dict[str, int]
    phases: list[PhaseSummary]
    drain_attempts: int
    drain_results_available: bool
    telemetry: TelemetrySummary | None
    """None when the DB has no token_estimation_v2_events table."""


class PhaseAttempt(BaseModel):
    """One drain result: one attempt at the phase by one drain session."""

    session_id: str
    seq: int
    attempt: int
    session_kind: str | None
    worker: str | None
    started_at: UtcTimestamp | None
    finished_at: UtcTimestamp | None
    duration_s: float | None
    outcome: str
    final_state: str | None
    failure_kind: str | None
    failure_reason: str | None
    fingerprint: str | None
    zero_yield_reason: str | None
    telemetry_events: int
    escalation_events: int
    llm_calls: int
    input_tokens: int
    output_tokens: int
    commit_sha: str | None
    transcript_dir: str | None
    transcript_files: list[str] | None
    """The files in transcript_dir, when that directory can be read from here (else None:
    another machine's drain, or removed since)."""


class PhaseTelemetryRow(BaseModel):
    """One token_estimation_v2_events row: predicted vs actual output tokens of one call."""

    event_id: int
    timestamp: UtcTimestamp | None
    model: str
    predicted_output_tokens: int
    actual_output_tokens: int
    selected_budget: int
    actual_max_tokens: int | None
    truncated: bool
    success: bool
    stop_reason: str | None
    smape_percent: float | None
    coefficient_set: str | None
    """From autopack_telemetry_provenance (None for rows written by the original, or imported
    without one)."""
    source: str | None
    """drain | import, from the provenance side table; None when it has no row."""


class PhaseEscalation(BaseModel):
    """One token_budget_escalation_events row: a truncated call retried with a larger budget."""

    event_id: int
    timestamp: UtcTimestamp | None
    attempt_index: int
    reason: str
    was_truncated: bool
    retry_max_tokens: int
    selected_budget: int | None


class PhaseDetail(BaseModel):
    run_id: str
    run_state: str
    phase_id: str
    phase_index: int
    name: str
    description: str | None
    state: str
    task_category: str | None
    complexity: str | None
    scope: Any
    deliverables: list[str]
    builder_attempts: int
    retry_attempt: int
    last_failure_reason: str | None
    created_at: UtcTimestamp | None
    updated_at: UtcTimestamp | None
    started_at: UtcTimestamp | None
    completed_at: UtcTimestamp | None
    attempts: list[PhaseAttempt] = Field(default_factory=list)
    drain_results_available: bool = True
    telemetry: list[PhaseTelemetryRow] = Field(default_factory=list)
    telemetry_summary: TelemetrySummary | None = None
    escalations: list[PhaseEscalation] = Field(default_factory=list)
