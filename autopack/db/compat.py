"""Can this autopack write a DB whose schema a newer autopack may have migrated?

A newer autopack records in `autopack_meta.compatible_with` the oldest revision whose code
still works on its schema: the revision before the newest run of *additive* revisions (ones
that only add tables, nullable or defaulted columns, or indexes; each migration declares
`additive`). An older autopack does not know the newer revision, but it knows whether it knows
`compatible_with`: if so, the newer schema is a superset it can read and write, so a fleet can
upgrade its DB before all its workers. Otherwise every writer refuses (exit 2) and readers warn.

The reads here are plain SQL through any `query` callable (sqlite3 or an engine connection),
so the check runs when a writer opens the DB, before SQLAlchemy is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autopack.db.names import HEAD_REVISION, KNOWN_REVISIONS, VERSION_TABLE
from autopack.errors import SchemaError

Query = Callable[[str], list[tuple[Any, ...]]]

META_TABLE = "autopack_meta"
NEWER_HINT = "this DB was written by a newer autopack: upgrade autopack on this machine"

_TABLES_SQL = {
    "postgresql": "SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = current_schema()",
    "sqlite": "SELECT name FROM sqlite_master WHERE type = 'table'",
}
_META_COLUMNS_SQL = {
    "postgresql": "SELECT column_name FROM information_schema.columns "
    f"WHERE table_schema = current_schema() AND table_name = '{META_TABLE}'",
    "sqlite": f"SELECT name FROM pragma_table_info('{META_TABLE}')",
}


def tables_sql(backend: str) -> str:
    """The statement listing the tables of the DB's default schema."""
    return _TABLES_SQL["postgresql" if backend == "postgresql" else "sqlite"]


def is_newer(revision: str | None) -> bool:
    """A revision this autopack does not know: made by a newer one (there are no branches)."""
    return revision is not None and revision not in KNOWN_REVISIONS


@dataclass(frozen=True)
class SchemaCompatibility:
    """The DB's revision and the oldest revision it declares itself compatible with."""

    revision: str | None
    compatible_with: str | None

    @property
    def newer(self) -> bool:
        return is_newer(self.revision)

    @property
    def writable(self) -> bool:
        """This autopack may write: a revision it knows, or a newer one compatible with it."""
        return not self.newer or self.compatible_with in KNOWN_REVISIONS

    def warning(self) -> str | None:
        """The line readers show for a newer DB; None for a revision this autopack knows."""
        if not self.newer:
            return None
        if self.writable:
            return (
                f"schema {self.revision} is newer than this autopack ({HEAD_REVISION}) and "
                f"declared compatible with {self.compatible_with}: safe to use; upgrade "
                "autopack for the newer features"
            )
        return (
            f"this DB was written by a newer autopack (schema {self.revision}; this autopack "
            f"knows up to {HEAD_REVISION}): reading only, every writing command refuses"
        )


def read_compatible_with(query: Query, backend: str, tables: set[str]) -> str | None:
    """autopack_meta.compatible_with, or None where the table or column does not exist."""
    if META_TABLE not in tables:
        return None
    key = "postgresql" if backend == "postgresql" else "sqlite"
    columns = {str(name) for (name,) in query(_META_COLUMNS_SQL[key])}
    if "compatible_with" not in columns:
        return None
    rows = query(f"SELECT compatible_with FROM {META_TABLE} WHERE id = 1")
    return str(rows[0][0]) if rows and rows[0][0] is not None else None


def read_revision(query: Query, tables: set[str]) -> str | None:
    """The revision in autopack's own version table (Alembic's one-row table), if any."""
    if VERSION_TABLE not in tables:
        return None
    rows = query(f"SELECT version_num FROM {VERSION_TABLE}")
    return str(rows[0][0]) if rows and rows[0][0] is not None else None


def read_compatibility(query: Query, backend: str) -> SchemaCompatibility:
    """Three small reads: the tables, the revision, and (only for a newer one) compatible_with."""
    tables = {str(name) for (name,) in query(tables_sql(backend))}
    revision = read_revision(query, tables)
    compatible_with = read_compatible_with(query, backend, tables) if is_newer(revision) else None
    return SchemaCompatibility(revision, compatible_with)


def require_writable_schema(compatibility: SchemaCompatibility, *, display_url: str) -> None:
    """The one guard every writer passes (autopack.db.engine.open_database calls it for every
    read-write open): refuse a DB a newer autopack migrated in a way this one cannot follow."""
    if compatibility.writable:
        return
    declared = (
        f"compatible only with {compatibility.compatible_with}"
        if compatibility.compatible_with
        else "declaring no compatible older revision"
    )
    raise SchemaError(
        f"{display_url} is at schema {compatibility.revision}, {declared}; this autopack knows "
        f"up to {HEAD_REVISION} and will not write to it.",
        hint=NEWER_HINT,
    )
