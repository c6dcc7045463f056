"""The one schema source: the original Autopack tables (column-compatible) and autopack's own.

The original tables keep their names, columns, types, keys and indexes
(reference/original_spec.md §2) so a DB made by the original works as it is. States are
stored as their names in plain VARCHAR columns, as the original's SQLAlchemy Enum did on
SQLite; using strings here keeps PostgreSQL free of native enum types that an old DB lacks.
autopack's own tables are additive and prefixed `autopack_`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from autopack.db.clock import utc_now as utc_now

# Re-exported: the tables' names and states live in autopack.db.names (cheap to import).
from autopack.db.names import ALL_TABLES as ALL_TABLES
from autopack.db.names import AUTOPACK_TABLES as AUTOPACK_TABLES
from autopack.db.names import DRAIN_TABLES as DRAIN_TABLES
from autopack.db.names import ORIGINAL_TABLES as ORIGINAL_TABLES
from autopack.db.names import PhaseState as PhaseState
from autopack.db.names import RunState as RunState
from autopack.db.names import TierState as TierState

# Naive UTC on every backend, as the original's columns are (TIMESTAMP WITHOUT TIME ZONE on
# PostgreSQL); SQLModel's default aware type would disagree with an original DB's columns.
NaiveUtcDateTime = sa.DateTime(timezone=False)


def _now_column(*, on_update: bool = False, index: bool = False) -> Any:
    return Field(
        default_factory=utc_now,
        sa_type=NaiveUtcDateTime,
        sa_column_kwargs={"onupdate": utc_now} if on_update else {},
        nullable=False,
        index=index,
    )


class Run(SQLModel, table=True):
    __tablename__ = "runs"
    __table_args__ = (sa.Index("ix_runs_state_created", "state", "created_at"),)

    id: str = Field(primary_key=True, index=True)
    state: str = Field(default=RunState.RUN_CREATED.value, sa_type=sa.String(33))
    created_at: datetime = _now_column()
    updated_at: datetime = _now_column(on_update=True)
    started_at: datetime | None = Field(default=None, sa_type=NaiveUtcDateTime)
    completed_at: datetime | None = Field(default=None, sa_type=NaiveUtcDateTime)
    safety_profile: str = "normal"
    run_scope: str = "multi_tier"
    token_cap: int = 5_000_000
    max_phases: int = 25
    max_duration_minutes: int = 120
    max_minor_issues_total: int | None = None
    tokens_used: int = 0
    ci_runs_used: int = 0
    minor_issues_count: int = 0
    major_issues_count: int = 0
    promotion_eligible_to_main: str = "false"
    debt_status: str | None = None
    failure_reason: str | None = Field(default=None, sa_type=sa.Text)
    goal_anchor: str | None = Field(default=None, sa_type=sa.Text)


class Tier(SQLModel, table=True):
    __tablename__ = "tiers"

    id: int | None = Field(default=None, primary_key=True, index=True)
    tier_id: str = Field(index=True)
    run_id: str = Field(
        sa_column=sa.Column(sa.String, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False)
    )
    tier_index: int
    name: str
    description: str | None = Field(default=None, sa_type=sa.Text)
    state: str = Field(default=TierState.PENDING.value, sa_type=sa.String(11))
    token_cap: int | None = None
    ci_run_cap: int | None = None
    max_minor_issues_tolerated: int | None = None
    max_major_issues_tolerated: int = 0
    tokens_used: int = 0
    ci_runs_used: int = 0
    minor_issues_count: int = 0
    major_issues_count: int = 0
    cleanliness: str = "clean"
    created_at: datetime = _now_column()
    updated_at: datetime = _now_column(on_update=True)
    started_at: datetime | None = Field(default=None, sa_type=NaiveUtcDateTime)
    completed_at: datetime | None = Field(default=None, sa_type=NaiveUtcDateTime)


class Phase(SQLModel, table=True):
    __tablename__ = "phases"
    __table_args__ = (
        sa.UniqueConstraint("run_id", "phase_id", name="uq_phases_run_id_phase_id"),
        sa.Index("ix_phases_run_state", "run_id", "state"),
        sa.Index("ix_phases_state_started", "state", "started_at"),
        # autopack's (revision 0006, replacing 0003's (state, updated_at)): stale triage reads
        # the phases of a state in report order (run, last touched, phase) from the index.
        sa.Index("ix_phases_state_run_updated", "state", "run_id", "updated_at", "phase_id"),
    )

    id: int | None = Field(default=None, primary_key=True, index=True)
    phase_id: str = Field(index=True)
    run_id: str = Field(
        sa_column=sa.Column(
            sa.String, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    tier_id: int = Field(foreign_key="tiers.id")
    phase_index: int
    name: str
    description: str | None = Field(default=None, sa_type=sa.Text)
    state: str = Field(default=PhaseState.QUEUED.value, sa_type=sa.String(10), index=True)
    task_category: str | None = None
    complexity: str | None = None
    builder_mode: str | None = None
    phase_type: str | None = None
    scope: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    deployment_config: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    max_builder_attempts: int | None = None
    max_auditor_attempts: int | None = None
    incident_token_cap: int | None = None
    builder_attempts: int = 0
    auditor_attempts: int = 0
    tokens_used: int = 0
    minor_issues_count: int = 0
    major_issues_count: int = 0
    issue_state: str = "no_issues"
    quality_level: str | None = None
    quality_blocked: bool = False
    retry_attempt: int = 0
    revision_epoch: int = 0
    escalation_level: int = 0
    last_attempt_timestamp: datetime | None = Field(default=None, sa_type=NaiveUtcDateTime)
    last_failure_reason: str | None = None
    created_at: datetime = _now_column()
    updated_at: datetime = _now_column(on_update=True)
    started_at: datetime | None = Field(default=None, sa_type=NaiveUtcDateTime)
    completed_at: datetime | None = Field(default=None, sa_type=NaiveUtcDateTime)


def _run_phase_fk(name: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["run_id", "phase_id"], ["phases.run_id", "phases.phase_id"], name=name, ondelete="CASCADE"
    )


FEATURE_INDEX_COLUMNS: tuple[str, ...] = (
    "model",
    "category",
    "complexity",
    "deliverable_count",
    "deliverables_json",
    "context_quality",
    "api_reference_required",
    "examples_required",
    "research_required",
    "usage_guide_required",
    "success",
    "truncated",
    "is_truncated_output",
    "run_id",
    "actual_output_tokens",
)
"""The covering index behind `calibrate`'s one grouped scan (migration 0007)."""


class TokenEstimationV2Event(SQLModel, table=True):
    """One row per answered builder call: predicted vs actual output tokens."""

    __tablename__ = "token_estimation_v2_events"
    __table_args__ = (
        _run_phase_fk("fk_token_est_v2_run_phase"),
        sa.Index("ix_telemetry_run_category", "run_id", "category"),
        sa.Index("ix_telemetry_category_timestamp", "category", "timestamp"),
        # autopack's: covers the identity report's telemetry figures (one index-only scan).
        sa.Index(
            "ix_autopack_telemetry_summary",
            "success",
            "truncated",
            "category",
            "complexity",
            "deliverable_count",
        ),
        # autopack's: `calibrate` groups the rows by model and estimator features; in this
        # order (and covering what it reads) the DB aggregates them without sorting the table.
        sa.Index("ix_autopack_telemetry_features", *FEATURE_INDEX_COLUMNS),
    )

    event_id: int | None = Field(default=None, primary_key=True, index=True)
    run_id: str = Field(
        sa_column=sa.Column(
            sa.String, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    phase_id: str = Field(index=True)
    timestamp: datetime = _now_column(index=True)
    category: str = Field(index=True)
    complexity: str = Field(index=True)
    deliverable_count: int = Field(index=True)
    deliverables_json: str = Field(sa_type=sa.Text)
    predicted_output_tokens: int
    actual_output_tokens: int
    selected_budget: int
    actual_max_tokens: int | None = None
    success: bool = Field(index=True)
    truncated: bool = Field(default=False, index=True)
    stop_reason: str | None = None
    model: str
    smape_percent: float | None = None
    waste_ratio: float | None = None
    underestimated: bool | None = Field(default=None, index=True)
    is_truncated_output: bool = Field(default=False, index=True)
    api_reference_required: bool | None = None
    examples_required: bool | None = None
    research_required: bool | None = None
    usage_guide_required: bool | None = None
    context_quality: str | None = None
    is_sot_file: bool | None = False
    sot_file_name: str | None = None
    sot_entry_count_hint: int | None = None
    created_at: datetime = _now_column(index=True)


class TokenBudgetEscalationEvent(SQLModel, table=True):
    """The escalate-once decision after a truncated builder call."""

    __tablename__ = "token_budget_escalation_events"
    __table_args__ = (
        _run_phase_fk("fk_token_budget_escalation_run_phase"),
        sa.Index("ix_escalation_run_timestamp", "run_id", "timestamp"),
        sa.Index("ix_escalation_reason_timestamp", "reason", "timestamp"),
    )

    event_id: int | None = Field(default=None, primary_key=True, index=True)
    run_id: str = Field(
        sa_column=sa.Column(
            sa.String, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    phase_id: str = Field(index=True)
    timestamp: datetime = _now_column(index=True)
    attempt_index: int
    reason: str
    was_truncated: bool
    output_utilization: float | None = None
    escalation_factor: float
    base_value: int
    base_source: str
    retry_max_tokens: int
    selected_budget: int | None = None
    actual_max_tokens: int | None = None
    tokens_used: int | None = None


class LlmUsageEvent(SQLModel, table=True):
    """One row per LLM call (builder, auditor, …); no prediction, so no use for calibration."""

    __tablename__ = "llm_usage_events"
    __table_args__ = (sa.Index("ix_client_created", "client_id", "created_at"),)

    id: int | None = Field(default=None, primary_key=True, index=True)
    provider: str = Field(index=True)
    model: str = Field(index=True)
    run_id: str | None = Field(default=None, index=True)
    phase_id: str | None = None
    role: str
    total_tokens: int = 0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    created_at: datetime = _now_column(index=True)
    client_id: str | None = Field(default=None, index=True)
    is_doctor_call: bool = Field(default=False, index=True)
    doctor_model: str | None = None
    doctor_action: str | None = None
    phase_type: str | None = Field(default=None, index=True)
    intent: str | None = Field(default=None, index=True)


class AutopackMeta(SQLModel, table=True):
    """The role stamp: which DB this is, written by `db init` / `db stamp` (one row)."""

    __tablename__ = "autopack_meta"

    id: int = Field(default=1, primary_key=True)
    role: str
    db_id: str
    created_at: datetime = _now_column()
    stamped_at: datetime = _now_column()
    schema_revision: str | None = None
    tool_version: str
    compatible_with: str | None = None
    """The oldest revision whose code still works on this schema (autopack.db.compat)."""


class DrainSession(SQLModel, table=True):
    """One drain command's run: its options, counters and triage state, saved after every phase."""

    __tablename__ = "autopack_drain_sessions"

    id: str = Field(primary_key=True)
    kind: str
    """phase | queued | batch"""
    status: str = Field(default="running", index=True)
    """running | completed | stopped | interrupted | failed"""
    started_at: datetime = _now_column()
    updated_at: datetime = _now_column(on_update=True)
    finished_at: datetime | None = Field(default=None, sa_type=NaiveUtcDateTime)
    dry_run: bool = False
    telemetry_enabled: bool = True
    worker: str | None = None
    options: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    state: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    stop_reason: str | None = Field(default=None, sa_type=sa.Text)


class DrainResult(SQLModel, table=True):
    """One phase attempt within a drain session: what happened, and why it yielded what it did."""

    __tablename__ = "autopack_drain_results"
    __table_args__ = (
        sa.UniqueConstraint("session_id", "seq", name="uq_autopack_drain_results_session_seq"),
        sa.Index("ix_autopack_drain_results_run_phase", "run_id", "phase_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    session_id: str = Field(
        sa_column=sa.Column(
            sa.String,
            sa.ForeignKey("autopack_drain_sessions.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        )
    )
    seq: int
    run_id: str
    phase_id: str
    attempt: int = 1
    started_at: datetime = _now_column()
    finished_at: datetime | None = Field(default=None, sa_type=NaiveUtcDateTime)
    duration_s: float | None = None
    llm_seconds: float | None = None
    outcome: str
    """complete | failed | timeout | refused | dry_run"""
    final_state: str | None = None
    failure_kind: str | None = None
    failure_reason: str | None = Field(default=None, sa_type=sa.Text)
    fingerprint: str | None = Field(default=None, index=True)
    telemetry_events: int = 0
    escalation_events: int = 0
    llm_calls: int = 0
    llm_attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    zero_yield_reason: str | None = Field(default=None, index=True)
    facts: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    transcript_dir: str | None = None
    written_files: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    """Workspace-relative path → sha256 of each file the attempt wrote (revision 0008): a
    git workspace's dirty check tells autopack's own output from the operator's edits."""
    commit_sha: str | None = None
    """The git commit holding the phase's files (None: not committed, or not a git workspace)."""


class PhaseClaim(SQLModel, table=True):
    """Who is executing a phase, until when: two workers can never both run one phase."""

    __tablename__ = "autopack_phase_claims"
    __table_args__ = (_run_phase_fk("fk_autopack_phase_claims_run_phase"),)

    run_id: str = Field(primary_key=True)
    phase_id: str = Field(primary_key=True)
    session_id: str | None = Field(default=None, index=True)
    worker: str
    previous_state: str = Field(default=PhaseState.QUEUED.value, sa_type=sa.String(10))
    """The state to give the phase back in if its worker dies (QUEUED, or FAILED when a
    FAILED-backlog phase was requeued for this attempt)."""
    claimed_at: datetime = _now_column()
    heartbeat_at: datetime = _now_column()
    lease_expires_at: datetime = Field(sa_type=NaiveUtcDateTime, index=True)


class TelemetryProvenance(SQLModel, table=True):
    """Where a telemetry row came from and which coefficient set predicted it.

    A side table, so the original's token_estimation_v2_events keeps its exact columns.
    """

    __tablename__ = "autopack_telemetry_provenance"

    event_id: int = Field(
        sa_column=sa.Column(
            sa.Integer,
            sa.ForeignKey("token_estimation_v2_events.event_id", ondelete="CASCADE"),
            primary_key=True,
        )
    )
    source: str = Field(index=True)
    """drain | import"""
    coefficient_set: str | None = None
    coefficient_set_hash: str | None = None
    drain_result_id: int | None = Field(default=None, index=True)
    sample_key: str | None = Field(default=None, unique=True)
    source_file: str | None = None
    source_line: int | None = None
    seal: str | None = None
    """HMAC of the row by the drain process that wrote it (revision 0009; see telemetry/seal.py)."""


class LlmUsageAttempts(SQLModel, table=True):
    """Every HTTP attempt behind one llm_usage_events row (retries on 429/5xx/timeouts).

    A side table, so the original's llm_usage_events keeps its exact columns.
    """

    __tablename__ = "autopack_llm_usage_attempts"

    usage_event_id: int = Field(
        sa_column=sa.Column(
            sa.Integer,
            sa.ForeignKey("llm_usage_events.id", ondelete="CASCADE"),
            primary_key=True,
        )
    )
    attempts: int
    answered: bool
    """The call got a 2xx reply with a body (retries before it were transport failures)."""
    detail: list[dict[str, Any]] | None = Field(default=None, sa_type=sa.JSON)
    """One entry per attempt: number, kind, HTTP status, latency, seconds waited before it."""


class CoefficientSetRow(SQLModel, table=True):
    """An estimator coefficient set applied to this DB (`calibrate apply`), one per name.

    At most one set is active per model: the one `estimate --db` and every drain of this DB
    use for that model. The built-in default is used where none is.
    """

    __tablename__ = "autopack_coefficient_sets"
    __table_args__ = (
        sa.Index(
            "uq_autopack_coefficient_sets_active_model",
            "model",
            unique=True,
            sqlite_where=sa.text("active"),
            postgresql_where=sa.text("active"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True)
    model: str = Field(index=True)
    created_at: datetime = _now_column()
    active: bool = False
    activated_at: datetime | None = Field(default=None, sa_type=NaiveUtcDateTime)
    proposal_sha256: str | None = None
    """The sha256 of the proposal file it came from (applying it twice is a no-op)."""
    sample_count: int = 0
    format_version: int
    estimator_version: str
    coefficient_set_hash: str
    document: str = Field(sa_type=sa.Text)
    """The set in the format the estimator loads (`load_set_from_json`)."""


def table_of(model: type[SQLModel]) -> sa.Table:
    """The Core table behind a model, typed (for aggregate queries without ORM objects)."""
    table = model.__table__  # type: ignore[attr-defined]
    assert isinstance(table, sa.Table)
    return table
