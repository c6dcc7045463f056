"""Telemetry rows a drain writes carry a seal: an HMAC keyed by a secret of that process.

One nullable column on autopack's own side table, so token_estimation_v2_events keeps the
original's exact columns. Rows imported or written before this revision have none. Additive:
an older autopack ignores the column.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 05:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
additive: bool = True  # one nullable column

TABLE = "autopack_telemetry_provenance"
COLUMN = "seal"


def upgrade() -> None:
    if COLUMN not in _columns():
        with op.batch_alter_table(TABLE) as batch:
            batch.add_column(sa.Column(COLUMN, sa.String(), nullable=True))


def downgrade() -> None:
    if COLUMN in _columns():
        with op.batch_alter_table(TABLE) as batch:
            batch.drop_column(COLUMN)


def _columns() -> set[str]:
    return {column["name"] for column in sa.inspect(op.get_bind()).get_columns(TABLE)}
