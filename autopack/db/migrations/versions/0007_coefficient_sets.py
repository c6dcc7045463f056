"""Coefficient sets stored in the DB: `calibrate apply` writes one, one active per model.

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

TABLE = "autopack_coefficient_sets"


def upgrade() -> None:
    if TABLE in sa.inspect(op.get_bind()).get_table_names():
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
