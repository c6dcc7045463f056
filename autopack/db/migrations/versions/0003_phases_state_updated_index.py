"""An index on phases (state, updated_at) for stale triage on large backlogs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 04:12:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Do older autopacks keep working on the result? (autopack.db.compat)
additive: bool = True  # a new index only

INDEX = "ix_phases_state_updated"


def upgrade() -> None:
    existing = {index["name"] for index in sa.inspect(op.get_bind()).get_indexes("phases")}
    if INDEX not in existing:
        op.create_index(INDEX, "phases", ["state", "updated_at"], unique=False)


def downgrade() -> None:
    op.drop_index(INDEX, table_name="phases")
