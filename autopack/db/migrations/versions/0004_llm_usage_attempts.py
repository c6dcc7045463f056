"""autopack_llm_usage_attempts: every HTTP attempt behind an llm_usage_events row.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 04:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Do older autopacks keep working on the result? (autopack.db.compat)
additive: bool = True  # a new table only


def upgrade() -> None:
    op.create_table(
        "autopack_llm_usage_attempts",
        sa.Column("usage_event_id", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("answered", sa.Boolean(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["usage_event_id"], ["llm_usage_events.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("usage_event_id"),
    )


def downgrade() -> None:
    op.drop_table("autopack_llm_usage_attempts")
