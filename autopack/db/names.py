"""Names and states of the schema, without the models: cheap to import (the CLI's fast path).

`autopack.db.models` defines the tables; this module holds what callers need to know about
them without building SQLModel classes (table names, state values, the schema head).
"""

from __future__ import annotations

from enum import StrEnum

# Every migration revision this autopack knows, oldest first, and the newest of them.
# tests/test_schema_head.py checks them against Alembic's chain, so these constants and
# autopack/db/migrations/versions/ cannot drift apart.
KNOWN_REVISIONS: tuple[str, ...] = (
    "0001",
    "0002",
    "0003",
    "0004",
    "0005",
    "0006",
    "0007",
    "0008",
    "0009",
    "0010",
)
HEAD_REVISION = KNOWN_REVISIONS[-1]
# The oldest revision whose code still works on a schema at HEAD_REVISION: the revision before
# the newest run of revisions that declare `additive = True` (autopack.db.compat explains the
# use; the test derives it from the migrations' declarations).
COMPATIBLE_WITH = "0006"
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
    "autopack_coefficient_sets",
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
