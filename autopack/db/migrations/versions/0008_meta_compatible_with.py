"""autopack_meta.compatible_with: the oldest revision whose code still works on this schema.

An older autopack cannot know a newer revision, but it can know the revision a newer one says
its schema stays compatible with (autopack.db.compat); `db init` and `db upgrade` record it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 05:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Do older autopacks keep working on the result? (autopack.db.compat)
additive: bool = True  # a nullable column

TABLE = "autopack_meta"
COLUMN = "compatible_with"


def upgrade() -> None:
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns(TABLE)}
    if COLUMN not in columns:
        with op.batch_alter_table(TABLE) as batch_op:
            batch_op.add_column(sa.Column(COLUMN, sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table(TABLE) as batch_op:
        batch_op.drop_column(COLUMN)
