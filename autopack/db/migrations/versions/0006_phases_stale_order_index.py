"""Stale triage reads in index order: phases (state, run_id, updated_at, phase_id).

It replaces 0003's (state, updated_at): a report lists stale phases by run, oldest first,
then phase_id, so this index gives its rows in report order (no sort of the whole backlog)
and covers the counts. A query on (state, updated_at) alone, the old index's use, is still
served by its leading column. One index fewer to update on every phase write.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 07:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Do older autopacks keep working on the result? (autopack.db.compat)
additive: bool = False  # it drops 0003's index: harmless, but more than adding

TABLE = "phases"
INDEX = "ix_phases_state_run_updated"
COLUMNS = ["state", "run_id", "updated_at", "phase_id"]
OLD_INDEX = "ix_phases_state_updated"
OLD_COLUMNS = ["state", "updated_at"]


def upgrade() -> None:
    existing = _indexes()
    if INDEX not in existing:
        op.create_index(INDEX, TABLE, COLUMNS, unique=False)
        _analyze(INDEX)
    if OLD_INDEX in existing:
        op.drop_index(OLD_INDEX, table_name=TABLE)


def downgrade() -> None:
    existing = _indexes()
    if OLD_INDEX not in existing:
        op.create_index(OLD_INDEX, TABLE, OLD_COLUMNS, unique=False)
        _analyze(OLD_INDEX)
    if INDEX in existing:
        op.drop_index(INDEX, table_name=TABLE)


def _indexes() -> set[str]:
    return {str(index["name"]) for index in sa.inspect(op.get_bind()).get_indexes(TABLE)}


def _analyze(index: str) -> None:
    """Give a new index its statistics on a SQLite DB that keeps them (sqlite_stat1).

    SQLite plans with the statistics it has: where the other indexes of phases have some and
    the new one has none, the planner guesses for it and may prefer it where the drain's
    selection is faster on ix_phases_run_state. A DB without statistics is left without.
    """
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return  # PostgreSQL keeps per-column statistics itself (autovacuum)
    has_stats = bind.exec_driver_sql(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat1'"
    ).first()
    if has_stats is not None:
        bind.exec_driver_sql(f'ANALYZE "{index}"')
