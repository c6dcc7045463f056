"""The schema head constant (used on the fast path) matches the migrations Alembic runs."""

from __future__ import annotations

from alembic.script import ScriptDirectory
from sqlmodel import SQLModel

from autopack.db.lifecycle import alembic_config
from autopack.db.names import ALL_TABLES, HEAD_REVISION


def test_head_revision_constant_is_alembics_head() -> None:
    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD_REVISION


def test_every_model_table_is_named() -> None:
    import autopack.db.models  # noqa: F401  (registers the tables)

    assert set(SQLModel.metadata.tables) == set(ALL_TABLES)
