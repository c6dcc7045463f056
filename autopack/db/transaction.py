"""One transaction in plain SQL: the snapshot every report reads (panel, identity, triage).

`read_snapshot(db)` opens one connection and begins one read transaction on it; every
statement run through it sees the same state of the DB, whatever writers do meanwhile.
`write_transaction(db)` is the same for a change, committed at the end of the block (rolled
back on any error). A SQLite file is used through `sqlite3` itself, so these reports never
load SQLAlchemy (its import alone costs more than the whole `db identity` query on a million
phases); PostgreSQL (and in-memory SQLite) goes through the engine, on PostgreSQL at
REPEATABLE READ (its default, READ COMMITTED, gives each statement its own snapshot).

Statements are SQL text with `:name` parameters, which both sqlite3 and SQLAlchemy's `text()`
bind. On SQLite a datetime parameter is bound as SQLAlchemy stores it (text), so comparisons
with stored timestamps agree with the rest of autopack.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from autopack.db.compat import tables_sql
from autopack.db.engine import Database, translated_errors

if TYPE_CHECKING:
    import sqlalchemy as sa

Rows = list[tuple[Any, ...]]
Params = Mapping[str, Any]

BATCH_ROWS = 2_000
"""Rows fetched at a time while streaming (a server-side cursor on PostgreSQL)."""


class Transaction:
    """Plain SQL on one transaction of one connection; see the module docstring."""

    def __init__(
        self, db: Database, sqlite: sqlite3.Connection | None, engine_connection: Any
    ) -> None:
        self._db = db
        self._sqlite = sqlite
        self._connection: sa.Connection | None = engine_connection

    @property
    def backend(self) -> str:
        return self._db.target.backend

    def all(self, sql: str, params: Params | None = None) -> Rows:
        """Every row of one statement."""
        return [row for batch in self.batches(sql, params) for row in batch]

    def batches(
        self, sql: str, params: Params | None = None, size: int = BATCH_ROWS
    ) -> Iterator[Rows]:
        """The rows of one statement, `size` at a time (constant memory however many)."""
        bound = self._bound(params)
        if self._sqlite is not None:
            with closing(self._sqlite.execute(sql, bound)) as cursor:
                while rows := cursor.fetchmany(size):
                    yield rows
            return
        import sqlalchemy as sa

        assert self._connection is not None
        streaming = self._connection.execution_options(stream_results=True, yield_per=size)
        result = streaming.execute(sa.text(sql), bound)
        for partition in result.partitions():
            yield [tuple(row) for row in partition]

    def decoded(self, raw: bytes) -> str:
        """Bytes read as a BLOB, as text: UTF-8, or the database's replacement and report
        for text that is not (autopack.db.text_cells)."""
        return self._db.invalid_text.decoder()(raw)

    def execute_many(self, sql: str, params: Sequence[Params]) -> int:
        """Run one changing statement once per parameter set; the rows it changed in all."""
        if not params:
            return 0
        bound = [self._bound(one) for one in params]
        if self._sqlite is not None:
            return self._sqlite.executemany(sql, bound).rowcount
        import sqlalchemy as sa

        assert self._connection is not None
        return int(self._connection.execute(sa.text(sql), bound).rowcount)

    def _bound(self, params: Params | None) -> dict[str, Any]:
        if not params:
            return {}
        if self.backend != "sqlite":
            return dict(params)
        return {
            name: stored_sqlite_text(value) if isinstance(value, datetime) else value
            for name, value in params.items()
        }


def stored_sqlite_text(value: datetime) -> str:
    """A naive UTC datetime as SQLAlchemy's SQLite DateTime binds (and stores) it."""
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d} "
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}"
    )


@contextmanager
def read_snapshot(db: Database) -> Iterator[Transaction]:
    """One read transaction for the block; driver errors become one-line TargetErrors."""
    with _transaction(db, write=False) as transaction:
        yield transaction


@contextmanager
def write_transaction(db: Database) -> Iterator[Transaction]:
    """One transaction that changes the DB: committed when the block ends, else rolled back."""
    with _transaction(db, write=True) as transaction:
        yield transaction


@contextmanager
def _transaction(db: Database, *, write: bool) -> Iterator[Transaction]:
    with translated_errors(db):
        connection = db.sqlite_connect()
        if connection is not None:
            with closing(connection):
                # A read is deferred: its snapshot is taken by the first read and held to the
                # end. A write takes the write lock at once, so its reads see what it changes.
                connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                committed = False
                try:
                    yield Transaction(db, connection, None)
                    if write:
                        connection.commit()
                        committed = True
                finally:
                    if not committed:
                        connection.rollback()
            return
        with db.engine.connect() as engine_connection:
            postgres = db.target.backend == "postgresql"
            if postgres and not write:
                engine_connection.execution_options(isolation_level="REPEATABLE READ")
            transaction = engine_connection.begin()
            committed = False
            try:
                if postgres and not write:
                    engine_connection.exec_driver_sql("SET TRANSACTION READ ONLY")
                yield Transaction(db, None, engine_connection)
                if write:
                    transaction.commit()
                    committed = True
            finally:
                if not committed:
                    transaction.rollback()


def table_names(transaction: Transaction) -> set[str]:
    """The tables of the DB's default schema."""
    return {str(name) for (name,) in transaction.all(tables_sql(transaction.backend))}


@contextmanager
def engine_snapshot(db: Database) -> Iterator[sa.Connection]:
    """One read transaction on an engine connection, for reads written in SQLAlchemy Core.

    SQLite's driver (pysqlite) begins no transaction before a SELECT, so each statement would
    read its own state of the file: BEGIN is sent here, and the snapshot is held to the end.
    PostgreSQL reads at REPEATABLE READ (one snapshot for the whole transaction).
    """
    with translated_errors(db), db.engine.connect() as connection:
        postgres = db.target.backend == "postgresql"
        if postgres:
            connection.execution_options(isolation_level="REPEATABLE READ")
        transaction = connection.begin()
        try:
            if postgres:
                connection.exec_driver_sql("SET TRANSACTION READ ONLY")
            elif not connection.connection.dbapi_connection.in_transaction:  # type: ignore[union-attr]
                connection.exec_driver_sql("BEGIN")
            yield connection
        finally:
            transaction.rollback()
