"""Plain-SQL reads for the facts shown before every command (panel, identity, schema revision).

A SQLite file is read through `sqlite3` itself, so these reports never load SQLAlchemy (its
import alone costs more than the whole `db identity` query on a million phases), and
independent queries run at once on their own connections: sqlite3 releases the GIL while
SQLite works. PostgreSQL (and in-memory SQLite) is read through the engine, one query after
another. The SQL must be portable and take no parameters (the drivers' placeholders differ).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from autopack.db.compat import tables_sql
from autopack.db.engine import Database, translated_errors

if TYPE_CHECKING:
    import sqlalchemy as sa

Rows = list[tuple[Any, ...]]

MAX_PARALLEL = 4
"""Connections reading at once on a SQLite file (each query is one index scan)."""


class PlainReader:
    """Runs plain SQL against one Database; see the module docstring."""

    def __init__(self, db: Database, first: sqlite3.Connection | None, engine_connection: Any):
        self._db = db
        self._sqlite = first
        self._connection: sa.Connection | None = engine_connection

    @property
    def backend(self) -> str:
        return self._db.target.backend

    def all(self, sql: str) -> Rows:
        if self._sqlite is not None:
            return self._sqlite.execute(sql).fetchall()
        assert self._connection is not None
        return [tuple(row) for row in self._connection.exec_driver_sql(sql).all()]

    def all_at_once(self, statements: Sequence[str]) -> list[Rows]:
        """Each statement's rows, in order; on a SQLite file the statements run in parallel."""
        if self._sqlite is None or len(statements) < 2:
            return [self.all(sql) for sql in statements]
        with ThreadPoolExecutor(min(MAX_PARALLEL, len(statements))) as pool:
            return list(pool.map(self._on_own_connection, statements))

    def _on_own_connection(self, sql: str) -> Rows:
        connection = self._db.sqlite_connect()
        assert connection is not None  # only called for a SQLite file
        try:
            return connection.execute(sql).fetchall()
        finally:
            connection.close()


@contextmanager
def plain_reads(db: Database) -> Iterator[PlainReader]:
    """A reader for the duration of the block; driver errors become one-line TargetErrors."""
    with translated_errors(db):
        first = db.sqlite_connect()
        if first is not None:
            try:
                yield PlainReader(db, first, None)
            finally:
                first.close()
            return
        with db.engine.connect() as connection:
            yield PlainReader(db, None, connection)


def table_names(reader: PlainReader) -> set[str]:
    """The tables of the DB's default schema."""
    return {str(name) for (name,) in reader.all(tables_sql(reader.backend))}
