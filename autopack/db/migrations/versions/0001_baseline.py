"""Baseline: the original Autopack tables (adopted if present) and autopack_meta.

Revision ID: 0001
Revises:
Create Date: 2026-11-26 03:17:06.973157
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Do older autopacks keep working on the result? (autopack.db.compat)
additive: bool = False  # the baseline every later revision builds on

# The baseline adopts a DB made by the original Autopack as it is: a table that already
# exists is kept with every row, and only the columns it lacks (older original DBs predate
# e.g. actual_max_tokens) are added, nullable. Missing tables are created whole.


def _autopack_meta_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("db_id", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("stamped_at", sa.DateTime(), nullable=False),
        sa.Column("schema_revision", sa.String(), nullable=True),
        sa.Column("tool_version", sa.String(), nullable=False),
    ]


def _llm_usage_events_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=True),
        sa.Column("phase_id", sa.String(), nullable=True),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("total_tokens", sa.Integer(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("client_id", sa.String(), nullable=True),
        sa.Column("is_doctor_call", sa.Boolean(), nullable=False),
        sa.Column("doctor_model", sa.String(), nullable=True),
        sa.Column("doctor_action", sa.String(), nullable=True),
        sa.Column("phase_type", sa.String(), nullable=True),
        sa.Column("intent", sa.String(), nullable=True),
    ]


def _runs_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("state", sa.String(length=33), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("completed_at", sa.DateTime(), nullable=True),
        sa.Column("safety_profile", sa.String(), nullable=False),
        sa.Column("run_scope", sa.String(), nullable=False),
        sa.Column("token_cap", sa.Integer(), nullable=False),
        sa.Column("max_phases", sa.Integer(), nullable=False),
        sa.Column("max_duration_minutes", sa.Integer(), nullable=False),
        sa.Column("max_minor_issues_total", sa.Integer(), nullable=True),
        sa.Column("tokens_used", sa.Integer(), nullable=False),
        sa.Column("ci_runs_used", sa.Integer(), nullable=False),
        sa.Column("minor_issues_count", sa.Integer(), nullable=False),
        sa.Column("major_issues_count", sa.Integer(), nullable=False),
        sa.Column("promotion_eligible_to_main", sa.String(), nullable=False),
        sa.Column("debt_status", sa.String(), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("goal_anchor", sa.Text(), nullable=True),
    ]


def _tiers_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tier_id", sa.String(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("tier_index", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=11), nullable=False),
        sa.Column("token_cap", sa.Integer(), nullable=True),
        sa.Column("ci_run_cap", sa.Integer(), nullable=True),
        sa.Column("max_minor_issues_tolerated", sa.Integer(), nullable=True),
        sa.Column("max_major_issues_tolerated", sa.Integer(), nullable=False),
        sa.Column("tokens_used", sa.Integer(), nullable=False),
        sa.Column("ci_runs_used", sa.Integer(), nullable=False),
        sa.Column("minor_issues_count", sa.Integer(), nullable=False),
        sa.Column("major_issues_count", sa.Integer(), nullable=False),
        sa.Column("cleanliness", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("completed_at", sa.DateTime(), nullable=True),
    ]


def _phases_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("phase_id", sa.String(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("tier_id", sa.Integer(), nullable=False),
        sa.Column("phase_index", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("task_category", sa.String(), nullable=True),
        sa.Column("complexity", sa.String(), nullable=True),
        sa.Column("builder_mode", sa.String(), nullable=True),
        sa.Column("phase_type", sa.String(), nullable=True),
        sa.Column("scope", sa.JSON(), nullable=True),
        sa.Column("deployment_config", sa.JSON(), nullable=True),
        sa.Column("max_builder_attempts", sa.Integer(), nullable=True),
        sa.Column("max_auditor_attempts", sa.Integer(), nullable=True),
        sa.Column("incident_token_cap", sa.Integer(), nullable=True),
        sa.Column("builder_attempts", sa.Integer(), nullable=False),
        sa.Column("auditor_attempts", sa.Integer(), nullable=False),
        sa.Column("tokens_used", sa.Integer(), nullable=False),
        sa.Column("minor_issues_count", sa.Integer(), nullable=False),
        sa.Column("major_issues_count", sa.Integer(), nullable=False),
        sa.Column("issue_state", sa.String(), nullable=False),
        sa.Column("quality_level", sa.String(), nullable=True),
        sa.Column("quality_blocked", sa.Boolean(), nullable=False),
        sa.Column("retry_attempt", sa.Integer(), nullable=False),
        sa.Column("revision_epoch", sa.Integer(), nullable=False),
        sa.Column("escalation_level", sa.Integer(), nullable=False),
        sa.Column("last_attempt_timestamp", sa.DateTime(), nullable=True),
        sa.Column("last_failure_reason", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("completed_at", sa.DateTime(), nullable=True),
    ]


def _token_budget_escalation_events_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("phase_id", sa.String(), nullable=False),
        sa.Column("timestamp", sa.DateTime(), nullable=False),
        sa.Column("attempt_index", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("was_truncated", sa.Boolean(), nullable=False),
        sa.Column("output_utilization", sa.Float(), nullable=True),
        sa.Column("escalation_factor", sa.Float(), nullable=False),
        sa.Column("base_value", sa.Integer(), nullable=False),
        sa.Column("base_source", sa.String(), nullable=False),
        sa.Column("retry_max_tokens", sa.Integer(), nullable=False),
        sa.Column("selected_budget", sa.Integer(), nullable=True),
        sa.Column("actual_max_tokens", sa.Integer(), nullable=True),
        sa.Column("tokens_used", sa.Integer(), nullable=True),
    ]


def _token_estimation_v2_events_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("phase_id", sa.String(), nullable=False),
        sa.Column("timestamp", sa.DateTime(), nullable=False),
        sa.Column("category", sa.String(), nullable=False),
        sa.Column("complexity", sa.String(), nullable=False),
        sa.Column("deliverable_count", sa.Integer(), nullable=False),
        sa.Column("deliverables_json", sa.Text(), nullable=False),
        sa.Column("predicted_output_tokens", sa.Integer(), nullable=False),
        sa.Column("actual_output_tokens", sa.Integer(), nullable=False),
        sa.Column("selected_budget", sa.Integer(), nullable=False),
        sa.Column("actual_max_tokens", sa.Integer(), nullable=True),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        sa.Column("stop_reason", sa.String(), nullable=True),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("smape_percent", sa.Float(), nullable=True),
        sa.Column("waste_ratio", sa.Float(), nullable=True),
        sa.Column("underestimated", sa.Boolean(), nullable=True),
        sa.Column("is_truncated_output", sa.Boolean(), nullable=False),
        sa.Column("api_reference_required", sa.Boolean(), nullable=True),
        sa.Column("examples_required", sa.Boolean(), nullable=True),
        sa.Column("research_required", sa.Boolean(), nullable=True),
        sa.Column("usage_guide_required", sa.Boolean(), nullable=True),
        sa.Column("context_quality", sa.String(), nullable=True),
        sa.Column("is_sot_file", sa.Boolean(), nullable=True),
        sa.Column("sot_file_name", sa.String(), nullable=True),
        sa.Column("sot_entry_count_hint", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    ]


def _create_tables(existing: set[str]) -> None:
    if "autopack_meta" not in existing:
        op.create_table(
            "autopack_meta",
            *_autopack_meta_columns(),
            sa.PrimaryKeyConstraint("id"),
        )
    if "llm_usage_events" not in existing:
        op.create_table(
            "llm_usage_events",
            *_llm_usage_events_columns(),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("llm_usage_events", schema=None) as batch_op:
            batch_op.create_index("ix_client_created", ["client_id", "created_at"], unique=False)
            batch_op.create_index(
                batch_op.f("ix_llm_usage_events_client_id"), ["client_id"], unique=False
            )
            batch_op.create_index(
                batch_op.f("ix_llm_usage_events_created_at"), ["created_at"], unique=False
            )
            batch_op.create_index(batch_op.f("ix_llm_usage_events_id"), ["id"], unique=False)
            batch_op.create_index(
                batch_op.f("ix_llm_usage_events_intent"), ["intent"], unique=False
            )
            batch_op.create_index(
                batch_op.f("ix_llm_usage_events_is_doctor_call"), ["is_doctor_call"], unique=False
            )
            batch_op.create_index(batch_op.f("ix_llm_usage_events_model"), ["model"], unique=False)
            batch_op.create_index(
                batch_op.f("ix_llm_usage_events_phase_type"), ["phase_type"], unique=False
            )
            batch_op.create_index(
                batch_op.f("ix_llm_usage_events_provider"), ["provider"], unique=False
            )
            batch_op.create_index(
                batch_op.f("ix_llm_usage_events_run_id"), ["run_id"], unique=False
            )
    if "runs" not in existing:
        op.create_table(
            "runs",
            *_runs_columns(),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("runs", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_runs_id"), ["id"], unique=False)
            batch_op.create_index("ix_runs_state_created", ["state", "created_at"], unique=False)
    if "tiers" not in existing:
        op.create_table(
            "tiers",
            *_tiers_columns(),
            sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("tiers", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_tiers_id"), ["id"], unique=False)
            batch_op.create_index(batch_op.f("ix_tiers_tier_id"), ["tier_id"], unique=False)
    if "phases" not in existing:
        op.create_table(
            "phases",
            *_phases_columns(),
            sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
            sa.ForeignKeyConstraint(
                ["tier_id"],
                ["tiers.id"],
            ),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("run_id", "phase_id", name="uq_phases_run_id_phase_id"),
        )
        with op.batch_alter_table("phases", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_phases_id"), ["id"], unique=False)
            batch_op.create_index(batch_op.f("ix_phases_phase_id"), ["phase_id"], unique=False)
            batch_op.create_index(batch_op.f("ix_phases_run_id"), ["run_id"], unique=False)
            batch_op.create_index("ix_phases_run_state", ["run_id", "state"], unique=False)
            batch_op.create_index(batch_op.f("ix_phases_state"), ["state"], unique=False)
            batch_op.create_index("ix_phases_state_started", ["state", "started_at"], unique=False)
    if "token_budget_escalation_events" not in existing:
        op.create_table(
            "token_budget_escalation_events",
            *_token_budget_escalation_events_columns(),
            sa.ForeignKeyConstraint(
                ["run_id", "phase_id"],
                ["phases.run_id", "phases.phase_id"],
                name="fk_token_budget_escalation_run_phase",
                ondelete="CASCADE",
            ),
            sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("event_id"),
        )
        with op.batch_alter_table("token_budget_escalation_events", schema=None) as batch_op:
            batch_op.create_index(
                "ix_escalation_reason_timestamp", ["reason", "timestamp"], unique=False
            )
            batch_op.create_index(
                "ix_escalation_run_timestamp", ["run_id", "timestamp"], unique=False
            )
            batch_op.create_index(
                batch_op.f("ix_token_budget_escalation_events_event_id"), ["event_id"], unique=False
            )
            batch_op.create_index(
                batch_op.f("ix_token_budget_escalation_events_phase_id"), ["phase_id"], unique=False
            )
            batch_op.create_index(
                batch_op.f("ix_token_budget_escalation_events_run_id"), ["run_id"], unique=False
            )
            batch_op.create_index(
                batch_op.f("ix_token_budget_escalation_events_timestamp"),
                ["timestamp"],
                unique=False,
            )
    if "token_estimation_v2_events" not in existing:
        op.create_table(
            "token_estimation_v2_events",
            *_token_estimation_v2_events_columns(),
            sa.ForeignKeyConstraint(
                ["run_id", "phase_id"],
                ["phases.run_id", "phases.phase_id"],
                name="fk_token_est_v2_run_phase",
                ondelete="CASCADE",
            ),
            sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("event_id"),
        )
        with op.batch_alter_table("token_estimation_v2_events", schema=None) as batch_op:
            batch_op.create_index(
                "ix_telemetry_category_timestamp", ["category", "timestamp"], unique=False
            )
            batch_op.create_index("ix_telemetry_run_category", ["run_id", "category"], unique=False)
            batch_op.create_index(
                batch_op.f("ix_token_estimation_v2_events_category"), ["category"], unique=False
            )
            batch_op.create_index(
                batch_op.f("ix_token_estimation_v2_events_complexity"), ["complexity"], unique=False
            )
            batch_op.create_index(
                batch_op.f("ix_token_estimation_v2_events_created_at"), ["created_at"], unique=False
            )
            batch_op.create_index(
                batch_op.f("ix_token_estimation_v2_events_deliverable_count"),
                ["deliverable_count"],
                unique=False,
            )
            batch_op.create_index(
                batch_op.f("ix_token_estimation_v2_events_event_id"), ["event_id"], unique=False
            )
            batch_op.create_index(
                batch_op.f("ix_token_estimation_v2_events_is_truncated_output"),
                ["is_truncated_output"],
                unique=False,
            )
            batch_op.create_index(
                batch_op.f("ix_token_estimation_v2_events_phase_id"), ["phase_id"], unique=False
            )
            batch_op.create_index(
                batch_op.f("ix_token_estimation_v2_events_run_id"), ["run_id"], unique=False
            )
            batch_op.create_index(
                batch_op.f("ix_token_estimation_v2_events_success"), ["success"], unique=False
            )
            batch_op.create_index(
                batch_op.f("ix_token_estimation_v2_events_timestamp"), ["timestamp"], unique=False
            )
            batch_op.create_index(
                batch_op.f("ix_token_estimation_v2_events_truncated"), ["truncated"], unique=False
            )
            batch_op.create_index(
                batch_op.f("ix_token_estimation_v2_events_underestimated"),
                ["underestimated"],
                unique=False,
            )


TABLE_COLUMNS = {
    "autopack_meta": _autopack_meta_columns,
    "llm_usage_events": _llm_usage_events_columns,
    "runs": _runs_columns,
    "tiers": _tiers_columns,
    "phases": _phases_columns,
    "token_budget_escalation_events": _token_budget_escalation_events_columns,
    "token_estimation_v2_events": _token_estimation_v2_events_columns,
}


def _add_missing_columns(existing: set[str]) -> None:
    inspector = sa.inspect(op.get_bind())
    for table_name, columns in TABLE_COLUMNS.items():
        if table_name not in existing:
            continue
        have = {column["name"] for column in inspector.get_columns(table_name)}
        absent = [column for column in columns() if column.name not in have]
        if not absent:
            continue
        with op.batch_alter_table(table_name, schema=None) as batch_op:
            for column in absent:
                column.nullable = True
                batch_op.add_column(column)


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    _create_tables(existing)
    _add_missing_columns(existing)


def downgrade() -> None:
    # ### commands auto generated by Alembic - please adjust! ###
    with op.batch_alter_table("token_estimation_v2_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_token_estimation_v2_events_underestimated"))
        batch_op.drop_index(batch_op.f("ix_token_estimation_v2_events_truncated"))
        batch_op.drop_index(batch_op.f("ix_token_estimation_v2_events_timestamp"))
        batch_op.drop_index(batch_op.f("ix_token_estimation_v2_events_success"))
        batch_op.drop_index(batch_op.f("ix_token_estimation_v2_events_run_id"))
        batch_op.drop_index(batch_op.f("ix_token_estimation_v2_events_phase_id"))
        batch_op.drop_index(batch_op.f("ix_token_estimation_v2_events_is_truncated_output"))
        batch_op.drop_index(batch_op.f("ix_token_estimation_v2_events_event_id"))
        batch_op.drop_index(batch_op.f("ix_token_estimation_v2_events_deliverable_count"))
        batch_op.drop_index(batch_op.f("ix_token_estimation_v2_events_created_at"))
        batch_op.drop_index(batch_op.f("ix_token_estimation_v2_events_complexity"))
        batch_op.drop_index(batch_op.f("ix_token_estimation_v2_events_category"))
        batch_op.drop_index("ix_telemetry_run_category")
        batch_op.drop_index("ix_telemetry_category_timestamp")

    op.drop_table("token_estimation_v2_events")
    with op.batch_alter_table("token_budget_escalation_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_token_budget_escalation_events_timestamp"))
        batch_op.drop_index(batch_op.f("ix_token_budget_escalation_events_run_id"))
        batch_op.drop_index(batch_op.f("ix_token_budget_escalation_events_phase_id"))
        batch_op.drop_index(batch_op.f("ix_token_budget_escalation_events_event_id"))
        batch_op.drop_index("ix_escalation_run_timestamp")
        batch_op.drop_index("ix_escalation_reason_timestamp")

    op.drop_table("token_budget_escalation_events")
    with op.batch_alter_table("phases", schema=None) as batch_op:
        batch_op.drop_index("ix_phases_state_started")
        batch_op.drop_index(batch_op.f("ix_phases_state"))
        batch_op.drop_index("ix_phases_run_state")
        batch_op.drop_index(batch_op.f("ix_phases_run_id"))
        batch_op.drop_index(batch_op.f("ix_phases_phase_id"))
        batch_op.drop_index(batch_op.f("ix_phases_id"))

    op.drop_table("phases")
    with op.batch_alter_table("tiers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tiers_tier_id"))
        batch_op.drop_index(batch_op.f("ix_tiers_id"))

    op.drop_table("tiers")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_state_created")
        batch_op.drop_index(batch_op.f("ix_runs_id"))

    op.drop_table("runs")
    with op.batch_alter_table("llm_usage_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_llm_usage_events_run_id"))
        batch_op.drop_index(batch_op.f("ix_llm_usage_events_provider"))
        batch_op.drop_index(batch_op.f("ix_llm_usage_events_phase_type"))
        batch_op.drop_index(batch_op.f("ix_llm_usage_events_model"))
        batch_op.drop_index(batch_op.f("ix_llm_usage_events_is_doctor_call"))
        batch_op.drop_index(batch_op.f("ix_llm_usage_events_intent"))
        batch_op.drop_index(batch_op.f("ix_llm_usage_events_id"))
        batch_op.drop_index(batch_op.f("ix_llm_usage_events_created_at"))
        batch_op.drop_index(batch_op.f("ix_llm_usage_events_client_id"))
        batch_op.drop_index("ix_client_created")

    op.drop_table("llm_usage_events")
    op.drop_table("autopack_meta")
    # ### end Alembic commands ###
