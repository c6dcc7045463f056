"""A covering index for the identity report's telemetry figures on large DBs.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 05:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Do older autopacks keep working on the result? (autopack.db.compat)
additive: bool = True  # a new index only

INDEX = "ix_autopack_telemetry_summary"
TABLE = "token_estimation_v2_events"


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if not inspector.has_table(TABLE):
        return  # nothing to index (the baseline creates the table, so this is defensive)
    if INDEX not in {index["name"] for index in inspector.get_indexes(TABLE)}:
        op.create_index(
            INDEX,
            TABLE,
            ["success", "truncated", "category", "complexity", "deliverable_count"],
            unique=False,
        )


def downgrade() -> None:
    op.drop_index(INDEX, table_name=TABLE)
