"""What revision a DB is at and how its schema compares with this autopack's models.

Read-only, and cheap to import (no Alembic, no models unless columns are compared): the target
panel runs this on every command. `db init` and `db upgrade` (autopack.db.lifecycle) are the
only callers that change a schema.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autopack.db.compat import SchemaCompatibility, is_newer, read_compatible_with, read_revision
from autopack.db.engine import Database
from autopack.db.names import ALL_TABLES, HEAD_REVISION
from autopack.db.transaction import Transaction, table_names
from autopack.errors import SchemaError

if TYPE_CHECKING:
    import sqlalchemy as sa


def _query(connection: sa.Connection) -> Callable[[str], list[tuple[Any, ...]]]:
    return lambda sql: [tuple(row) for row in connection.exec_driver_sql(sql).all()]


def expected_columns(table_name: str) -> list[str]:
    from sqlmodel import SQLModel  # the models are only needed to compare columns

    import autopack.db.models  # noqa: F401  (registers the tables)

    return [c.name for c in SQLModel.metadata.tables[table_name].columns]


@dataclass(frozen=True)
class SchemaState:
    """How a database's schema compares with this version of autopack's models."""

    revision: str | None
    head: str
    existing_tables: tuple[str, ...]
    missing_tables: tuple[str, ...]
    missing_columns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    compatible_with: str | None = None
    """Read only for a newer revision: what it declares itself compatible with."""

    @property
    def compatibility(self) -> SchemaCompatibility:
        return SchemaCompatibility(self.revision, self.compatible_with)

    @property
    def newer(self) -> bool:
        """Made by a newer autopack: never downgraded, never "upgraded" by this one."""
        return is_newer(self.revision)

    @property
    def at_head(self) -> bool:
        return self.revision == self.head

    @property
    def matches_code(self) -> bool:
        return self.at_head and not self.missing_tables and not self.missing_columns

    @property
    def is_autopack_db(self) -> bool:
        """Made by autopack or by the original Autopack (it has runs or our stamp)."""
        return "runs" in self.existing_tables or "autopack_meta" in self.existing_tables


def inspect_schema(connection: sa.Connection, *, columns: bool = False) -> SchemaState:
    """Tables present and missing, and the revision; with `columns`, missing columns too."""
    import sqlalchemy as sa

    inspector = sa.inspect(connection)
    present = set(inspector.get_table_names())
    missing_columns: dict[str, tuple[str, ...]] = {}
    if columns:
        for table_name in (t for t in ALL_TABLES if t in present):
            have = {c["name"] for c in inspector.get_columns(table_name)}
            absent = tuple(n for n in expected_columns(table_name) if n not in have)
            if absent:
                missing_columns[table_name] = absent
    query = _query(connection)
    revision = read_revision(query, present)
    compatible_with = (
        read_compatible_with(query, connection.dialect.name, present)
        if is_newer(revision)
        else None
    )
    return _schema_state(present, revision, missing_columns, compatible_with)


def read_schema(snapshot: Transaction) -> SchemaState:
    """inspect_schema() through plain SQL (no columns): what the target panel needs."""
    present = table_names(snapshot)
    revision = read_revision(snapshot.all, present)
    compatible_with = (
        read_compatible_with(snapshot.all, snapshot.backend, present)
        if is_newer(revision)
        else None
    )
    return _schema_state(present, revision, {}, compatible_with)


def _schema_state(
    present: set[str],
    revision: str | None,
    missing_columns: dict[str, tuple[str, ...]],
    compatible_with: str | None,
) -> SchemaState:
    known = tuple(t for t in ALL_TABLES if t in present)
    missing = tuple(t for t in ALL_TABLES if t not in present)
    return SchemaState(revision, HEAD_REVISION, known, missing, missing_columns, compatible_with)


def enable_wal(db: Database) -> None:
    """WAL lets readers and one writer work at once; only `db init` and `db upgrade` call this."""
    if db.target.backend == "sqlite" and not db.target.in_memory:
        with db.engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA journal_mode=WAL")


def require_autopack_schema(db: Database, state: SchemaState) -> None:
    """Refuse a database that is neither autopack's nor the original Autopack's."""
    if not state.is_autopack_db:
        raise SchemaError(
            f"{db.target.display_url} has no Autopack tables (no runs, no autopack_meta).",
            hint="check the target; `autopack db init` creates a new database",
        )


def require_tables(db: Database, names: tuple[str, ...]) -> SchemaState:
    """Refuse to act when a table the command needs is missing (e.g. a DB not yet upgraded)."""
    with db.engine.connect() as connection:
        state = inspect_schema(connection)
    require_autopack_schema(db, state)
    missing = [name for name in names if name not in state.existing_tables]
    if missing:
        raise SchemaError(
            f"{db.target.display_url} lacks {', '.join(missing)} "
            f"(schema {state.revision or 'none'}, this autopack needs {state.head}).",
            hint="back it up and bring it up to date with `autopack db upgrade`",
        )
    return state
