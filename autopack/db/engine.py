"""Open a named database exactly as asked: read-only, read-write, or (for `db init`) create.

No module-level engine: every engine is built here from an explicit target. A SQLite file is
never created by opening it; only `OpenMode.CREATE` (used by `db init`) may do that.

SQLAlchemy is imported only when an engine is first needed: the read-only reports that run
before every command (the target panel, `db identity`) read a SQLite file through plain
`sqlite3` (autopack.db.transaction), and SQLAlchemy's import alone costs a quarter of a second.
"""

from __future__ import annotations

import os
import re
import sqlite3
import stat
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from autopack.db.compat import read_compatibility, require_writable_schema
from autopack.db.text_cells import InvalidTextLog
from autopack.errors import TargetError
from autopack.settings import DatabaseTarget

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

SQLITE_HEADER = b"SQLite format 3\x00"
SQLITE_BUSY_TIMEOUT_MS = 10_000


class OpenMode(Enum):
    READ_ONLY = "read-only"
    READ_WRITE = "read-write"
    CREATE = "create"


@dataclass
class Database:
    """An open database: the target it came from and an engine bound to exactly that place.

    The engine is built on first use (`build_engine`), so a command that only reads through
    `sqlite_connect` never loads SQLAlchemy.
    """

    target: DatabaseTarget
    build_engine: Callable[[], Engine] = field(repr=False)
    mode: OpenMode
    created_file: bool = False
    _engine: Engine | None = field(default=None, repr=False)
    invalid_text: InvalidTextLog = field(default_factory=lambda: InvalidTextLog(None), repr=False)
    """Text cells that were not UTF-8, met by any of this Database's SQLite connections."""
    _closed: bool = field(default=False, repr=False)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self.build_engine()
        return self._engine

    @property
    def writable(self) -> bool:
        return self.mode is not OpenMode.READ_ONLY

    def sqlite_connect(self) -> sqlite3.Connection | None:
        """A new plain sqlite3 connection, opened as the engine's would be (same mode, same
        pragmas); None for PostgreSQL and in-memory SQLite, which are read through the engine.
        The caller closes it."""
        path = self.target.sqlite_path
        if path is None or self.target.in_memory:
            return None
        connection: sqlite3.Connection = _sqlite_creator(
            path, read_only=self.mode is OpenMode.READ_ONLY
        )()
        _apply_sqlite_pragmas(connection, self.invalid_text)
        return connection

    def close(self) -> None:
        if not self._closed:
            if self._engine is not None:
                self._engine.dispose()
            self._closed = True

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_database(target: DatabaseTarget, mode: OpenMode) -> Database:
    """Check the target can be opened as asked, then build its engine.

    Raises TargetError (exit 2, one line and a hint) for a missing file, a directory, a file
    that is not SQLite, a read-only file for a writing command, or an unreachable server; and
    SchemaError (exit 2) when a writing command meets a schema a newer autopack made that this
    one cannot follow (autopack.db.compat: every writer opens through here).
    """
    if target.backend == "sqlite":
        return _open_sqlite(target, mode)
    if target.backend == "postgresql":
        return _open_postgresql(target, mode)
    raise TargetError(
        f"unsupported database {target.display_url}: autopack speaks SQLite and PostgreSQL.",
        hint="give sqlite:///path.db or postgresql://user@host/dbname",
    )


def _open_sqlite(target: DatabaseTarget, mode: OpenMode) -> Database:
    if target.in_memory:
        # One connection for the life of the Database: an in-memory DB lives in it.
        memory_log = InvalidTextLog(None)
        return Database(
            target, lambda: _in_memory_engine(memory_log), mode, invalid_text=memory_log
        )
    path = target.sqlite_path
    assert path is not None  # a file target always has a path (settings.build_target)
    created = False
    try:
        if mode is OpenMode.CREATE:
            created = _check_sqlite_creatable(path)
        else:
            _check_sqlite_file(path, writable=mode is OpenMode.READ_WRITE)
    except TargetError as exc:
        meant = target.absolute_intent()
        if meant is None or path.exists():
            raise
        raise TargetError(
            exc.message,
            hint=f"{target.relative_path} is relative to this directory (three slashes); an "
            f"absolute path takes four: {meant}",
        ) from None

    def build() -> Engine:
        import sqlalchemy as sa

        engine = sa.create_engine(
            "sqlite://",
            creator=_sqlite_creator(path, read_only=mode is OpenMode.READ_ONLY),
            # A bare "sqlite://" would get SQLAlchemy's in-memory pool (one connection per
            # thread, closed under other threads' feet); a file needs a real pool for workers.
            poolclass=sa.pool.QueuePool,
            pool_size=8,
            max_overflow=8,
        )
        _install_sqlite_pragmas(engine, text_log)
        return engine

    text_log = InvalidTextLog(path)
    db = Database(target, build, mode, created_file=created, invalid_text=text_log)
    if mode is OpenMode.READ_WRITE:
        with translated_errors(db):
            check = _sqlite_creator(path, read_only=True)()
            try:
                compatibility = read_compatibility(
                    lambda sql: check.execute(sql).fetchall(), "sqlite"
                )
            finally:
                check.close()
        require_writable_schema(compatibility, display_url=target.display_url)
    return db


def _in_memory_engine(text_log: InvalidTextLog) -> Engine:
    import sqlalchemy as sa

    engine = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool)
    _install_sqlite_pragmas(engine, text_log)
    return engine


def _sqlite_creator(path: Path, *, read_only: bool) -> Any:
    # mode=rw refuses to create a missing file (a typo must never yield a fresh DB);
    # mode=rwc is used by `db init` only; mode=ro cannot change the file at all.
    uri_mode = "ro" if read_only else "rw"

    def connect() -> sqlite3.Connection:
        uri = f"file:{quote(path.as_posix())}?mode={uri_mode}"
        return sqlite3.connect(uri, uri=True, check_same_thread=False)

    return connect


def _install_sqlite_pragmas(engine: Engine, text_log: InvalidTextLog) -> None:
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        _apply_sqlite_pragmas(dbapi_connection, text_log)


def _apply_sqlite_pragmas(connection: sqlite3.Connection, text_log: InvalidTextLog) -> None:
    """The settings of every SQLite connection autopack makes (plain and engine alike)."""
    # One text cell that is not UTF-8 must not fail a whole report: it is read with U+FFFD
    # and located (autopack.db.text_cells).
    connection.text_factory = text_log.decoder()
    cursor = connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    # In WAL mode NORMAL never corrupts the database, and spares an fsync per commit
    # (a drain commits several times per phase); only the last commits before a power
    # loss can be lost. It is a per-connection setting: nothing in the file changes.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _check_sqlite_file(path: Path, *, writable: bool) -> None:
    if not path.exists():
        raise TargetError(
            f"no database file at {path}.",
            hint="check the path or name; only `autopack db init` creates a database",
        )
    if path.is_dir():
        raise TargetError(
            f"{path} is a directory, not a database file.",
            hint="name the .db file inside it, e.g. sqlite:///dir/autopack.db",
        )
    _check_sqlite_header(path)
    if writable and not _is_writable(path):
        raise TargetError(
            f"{path} is read-only, and this command writes to it.",
            hint=f"make it writable (chmod u+w {path}) or work on a copy",
        )
    if writable and not _is_writable(path.parent):
        raise TargetError(
            f"the directory of {path} is read-only; SQLite needs it for its journal.",
            hint=f"make {path.parent} writable or move the database",
        )


def _check_sqlite_header(path: Path) -> None:
    try:
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise TargetError(
            f"cannot read {path}: {exc.strerror}.", hint="check its permissions"
        ) from exc
    if header and header != SQLITE_HEADER:
        raise TargetError(
            f"{path} is not a SQLite database.",
            hint="check the path: it points at some other kind of file",
        )


def _is_writable(path: Path) -> bool:
    # root passes os.access whatever the mode bits say; a file without write bits is
    # still one its owner meant to keep read-only, so honour the bits too.
    mode = path.stat().st_mode
    return os.access(path, os.W_OK) and bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _check_sqlite_creatable(path: Path) -> bool:
    """True if `db init` will create the file; raises if it must not touch it."""
    if path.is_dir():
        raise TargetError(
            f"{path} is a directory, not a database file.",
            hint="name the .db file to create, e.g. sqlite:///dir/autopack.db",
        )
    if not path.parent.is_dir():
        raise TargetError(
            f"the directory {path.parent} does not exist.",
            hint=f"create it first (mkdir -p {path.parent}); autopack makes no directories",
        )
    if not _is_writable(path.parent):
        raise TargetError(
            f"cannot create a database in {path.parent}: it is read-only.",
            hint="pick a writable directory",
        )
    if not path.exists():
        path.touch(exist_ok=False)
        return True
    _check_sqlite_header(path)
    if not _is_writable(path):
        raise TargetError(f"{path} is read-only.", hint=f"make it writable (chmod u+w {path})")
    return False


def _open_postgresql(target: DatabaseTarget, mode: OpenMode) -> Database:
    import sqlalchemy as sa
    from sqlalchemy import event
    from sqlalchemy.exc import SQLAlchemyError

    try:
        engine = sa.create_engine(target.url, pool_pre_ping=True)
    except ImportError as exc:
        raise TargetError(
            "PostgreSQL needs the psycopg driver, which is not installed.",
            hint="pip install 'autopack[postgres]'",
        ) from exc
    if mode is OpenMode.READ_ONLY:

        @event.listens_for(engine, "connect")
        def _read_only(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            cursor.close()
            dbapi_connection.commit()

    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except SQLAlchemyError as exc:
        engine.dispose()
        raise _connection_refused(target, engine.url, exc) from exc
    db = Database(target, lambda: engine, mode, _engine=engine)
    if mode is not OpenMode.READ_ONLY:
        try:
            with translated_errors(db), engine.connect() as connection:
                compatibility = read_compatibility(
                    lambda sql: [tuple(row) for row in connection.exec_driver_sql(sql).all()],
                    "postgresql",
                )
            require_writable_schema(compatibility, display_url=target.display_url)
        except BaseException:
            engine.dispose()
            raise
    return db


# The server's own words when the database named is not there: the server was reached. psycopg
# gives no SQLSTATE (3D000) for an error raised while connecting, only the message.
_NO_SUCH_DATABASE = re.compile(r'database "(?P<name>[^"]*)" does not exist')


def _connection_refused(target: DatabaseTarget, url: Any, exc: BaseException) -> TargetError:
    """Why PostgreSQL could not be used: a missing database is not an unreachable server."""
    message = _first_line(exc)
    missing = _NO_SUCH_DATABASE.search(message)
    if missing is None:
        return TargetError(
            f"cannot reach PostgreSQL at {target.display_url}: {message}.",
            hint="check the server is running and the URL's host, port, user and database",
        )
    name = missing["name"]
    where = f"{url.host or 'localhost'}:{url.port or 5432}"
    return TargetError(
        f"database {name!r} does not exist on {where} (the server answered).",
        hint=f"create it (createdb -h {url.host or 'localhost'} -p {url.port or 5432} {name}) "
        "and run `autopack db init` on it, or correct the database name in the URL",
    )


def _first_line(exc: BaseException) -> str:
    inner = getattr(exc, "orig", None) or exc
    text = str(inner).strip().splitlines()
    return text[0].rstrip(".") if text else type(inner).__name__


def _driver_error_kind(exc: BaseException) -> str | None:
    """`operational`, `database` or None: the same for SQLAlchemy's wrappers and for plain
    sqlite3 errors (from autopack.db.transaction reads), without importing SQLAlchemy to ask."""
    if isinstance(exc, sqlite3.OperationalError):
        return "operational"
    if isinstance(exc, sqlite3.DatabaseError):
        return "database"
    if "adbc_driver_manager" in sys.modules:  # Arrow's drivers (telemetry export)
        import adbc_driver_manager

        if isinstance(exc, adbc_driver_manager.OperationalError):
            return "operational"
        if isinstance(exc, adbc_driver_manager.DatabaseError):
            return "database"
    if "sqlalchemy" in sys.modules:  # an SQLAlchemy error can only exist once it is loaded
        from sqlalchemy.exc import DBAPIError, OperationalError

        if isinstance(exc, OperationalError):
            return "operational"
        if isinstance(exc, DBAPIError):
            return "database"
    return None


@contextmanager
def translated_errors(db: Database) -> Iterator[None]:
    """Turn driver errors into one-line TargetErrors that name the database."""
    try:
        yield
    except Exception as exc:
        kind = _driver_error_kind(exc)
        if kind is None:
            raise
        raise _translated(db, exc, kind) from exc


def _translated(db: Database, exc: Exception, kind: str) -> TargetError:
    message = _first_line(exc)
    lowered = message.lower()
    if kind == "operational":
        if "readonly" in lowered or "read-only" in lowered or "read only" in lowered:
            return TargetError(
                f"{db.target.display_url} is read-only: {message}.",
                hint="make the file and its directory writable, or work on a copy",
            )
        return TargetError(
            f"database error on {db.target.display_url}: {message}.",
            hint="run `autopack db check` on it; restore it from a backup if it is damaged",
        )
    if "not a database" in message or "malformed" in message:
        return TargetError(
            f"{db.target.display_url} is damaged: {message}.",
            hint="`autopack db check` lists the damage; restore the file from a backup "
            "(db upgrade leaves one beside it)",
        )
    return TargetError(
        f"database error on {db.target.display_url}: {message}.",
        hint="run again with --debug for the details",
    )
