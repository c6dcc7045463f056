"""Coefficient sets stored in the DB, and the covering index `calibrate` reads through.

`calibrate apply` writes a set into autopack_coefficient_sets, at most one active per model.
ix_autopack_telemetry_features lets `calibrate propose` group 2M telemetry rows by model and
estimator features in one scan of the index, without sorting the table (about 15 % of the
table's size; built once here, then kept up to date by each telemetry insert).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 05:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
additive: bool = True  # a new table and an index: older autopacks keep working

TABLE = "autopack_coefficient_sets"
EVENTS = "token_estimation_v2_events"
FEATURE_INDEX = "ix_autopack_telemetry_features"
FEATURE_COLUMNS = [
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
]


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    tables = inspector.get_table_names()
    if EVENTS in tables:
        columns = {str(column["name"]) for column in inspector.get_columns(EVENTS)}
        indexes = {str(index["name"]) for index in inspector.get_indexes(EVENTS)}
        # An old DB missing one of the columns keeps working without it (a slower scan).
        if FEATURE_INDEX not in indexes and set(FEATURE_COLUMNS) <= columns:
            op.create_index(FEATURE_INDEX, EVENTS, FEATURE_COLUMNS, unique=False)
    if TABLE in tables:
        return
    op.create_table(
        TABLE,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("activated_at", sa.DateTime(), nullable=True),
        sa.Column("proposal_sha256", sa.String(), nullable=True),
        sa.Column("sample_count", sa.Integer(), nullable=False),
        sa.Column("format_version", sa.Integer(), nullable=False),
        sa.Column("estimator_version", sa.String(), nullable=False),
        sa.Column("coefficient_set_hash", sa.String(), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_index("ix_autopack_coefficient_sets_model", TABLE, ["model"], unique=False)
    op.create_index(
        "uq_autopack_coefficient_sets_active_model",
        TABLE,
        ["model"],
        unique=True,
        sqlite_where=sa.text("active"),
        postgresql_where=sa.text("active"),
    )


def downgrade() -> None:
    op.drop_index("uq_autopack_coefficient_sets_active_model", table_name=TABLE)
    op.drop_index("ix_autopack_coefficient_sets_model", table_name=TABLE)
    op.drop_table(TABLE)
    inspector = sa.inspect(op.get_bind())
    if EVENTS in inspector.get_table_names() and FEATURE_INDEX in {
        str(index["name"]) for index in inspector.get_indexes(EVENTS)
    }:
        op.drop_index(FEATURE_INDEX, table_name=EVENTS)
