"""Names and states of the schema, without the models: cheap to import (the CLI's fast path).

`autopack.db.models` defines the tables; this module holds what callers need to know about
them without building SQLModel classes (table names, state values, the schema head).
"""

from __future__ import annotations

from enum import StrEnum

# The newest migration revision. tests/test_schema_head.py checks it against Alembic's head,
# so this constant and autopack/db/migrations/versions/ cannot drift apart.
HEAD_REVISION = "0009"
VERSION_TABLE = "autopack_alembic_version"


class RunState(StrEnum):
    QUEUED = "QUEUED"
    PLAN_BOOTSTRAP = "PLAN_BOOTSTRAP"
    RUN_CREATED = "RUN_CREATED"
    PHASE_QUEUEING = "PHASE_QUEUEING"
    PHASE_EXECUTION = "PHASE_EXECUTION"
    GATE = "GATE"
    CI_RUNNING = "CI_RUNNING"
    SNAPSHOT_CREATED = "SNAPSHOT_CREATED"
    DONE_SUCCESS = "DONE_SUCCESS"
    DONE_FAILED_BUDGET_EXHAUSTED = "DONE_FAILED_BUDGET_EXHAUSTED"
    DONE_FAILED_POLICY_VIOLATION = "DONE_FAILED_POLICY_VIOLATION"
    DONE_FAILED_REQUIRES_HUMAN_REVIEW = "DONE_FAILED_REQUIRES_HUMAN_REVIEW"
    DONE_FAILED_ENVIRONMENT = "DONE_FAILED_ENVIRONMENT"


class PhaseState(StrEnum):
    QUEUED = "QUEUED"
    EXECUTING = "EXECUTING"
    GATE = "GATE"
    CI_RUNNING = "CI_RUNNING"
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"


class TierState(StrEnum):
    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"


# The tables the original Autopack defines (and this tool reads). Everything else in an
# original DB (it has 36 tables) is left alone.
ORIGINAL_TABLES: tuple[str, ...] = (
    "runs",
    "tiers",
    "phases",
    "token_estimation_v2_events",
    "token_budget_escalation_events",
    "llm_usage_events",
)
AUTOPACK_TABLES: tuple[str, ...] = (
    "autopack_meta",
    "autopack_drain_sessions",
    "autopack_drain_results",
    "autopack_phase_claims",
    "autopack_telemetry_provenance",
    "autopack_llm_usage_attempts",
)
ALL_TABLES: tuple[str, ...] = ORIGINAL_TABLES + AUTOPACK_TABLES
# What a drain cannot work without. The telemetry tables are not among them: without them a
# drain still builds phases, and each phase's zero yield is explained as "tables missing".
DRAIN_TABLES: tuple[str, ...] = (
    "runs",
    "tiers",
    "phases",
    "autopack_drain_sessions",
    "autopack_drain_results",
    "autopack_phase_claims",
    "autopack_llm_usage_attempts",
)
