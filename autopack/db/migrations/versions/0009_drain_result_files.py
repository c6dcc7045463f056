"""Drain results remember the files they wrote (path → sha256) and the commit that holds them.

In a git workspace a completed phase's files are committed after its result is recorded; a
result with files and no commit is committed by the next drain, and the dirty check tells the
files autopack wrote (hashes match) from the operator's own edits. Additive: two nullable
columns, so an older autopack keeps working on an upgraded DB.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 05:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
additive: bool = True  # two nullable columns

TABLE = "autopack_drain_results"


def upgrade() -> None:
    with op.batch_alter_table(TABLE) as batch_op:
        batch_op.add_column(sa.Column("written_files", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("commit_sha", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table(TABLE) as batch_op:
        batch_op.drop_column("commit_sha")
        batch_op.drop_column("written_files")
