"""One `db upgrade` of a database at a time; a second one waits, then finds nothing to do.

Two upgrades that both plan from the old revision would both create the new tables, and the
second would fail half-way ("table already exists"). On a SQLite file the lock is an exclusive
`flock` on `<file>.upgrade-lock` beside it (SQLite's own locks are POSIX record locks, which a
process loses when it closes any descriptor of the file, so the DB file itself is not used);
on PostgreSQL it is a session advisory lock keyed on the schema. Both are released by the
operating system or the server when the process dies, so a killed upgrade never leaves it held.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from autopack.db.engine import Database, translated_errors

WAITING = "another `db upgrade` of this database is running: waiting for it to finish"
_PG_KEY = "hashtext('autopack db upgrade ' || current_schema())"


def lock_file_for(path: Path) -> Path:
    return path.with_name(f"{path.name}.upgrade-lock")


@contextmanager
def upgrade_lock(db: Database, *, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the upgrade lock of `db` for the block, waiting (and saying so) while another
    process holds it. An in-memory DB belongs to this process alone: nothing to lock."""
    if db.target.backend == "postgresql":
        with _postgres_lock(db, on_wait):
            yield
    elif db.target.sqlite_path is not None and not db.target.in_memory:
        with _file_lock(lock_file_for(db.target.sqlite_path), on_wait):
            yield
    else:
        yield


@contextmanager
def _file_lock(path: Path, on_wait: Callable[[str], None] | None) -> Iterator[None]:
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait(WAITING)
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing the descriptor releases the flock


@contextmanager
def _postgres_lock(db: Database, on_wait: Callable[[str], None] | None) -> Iterator[None]:
    with translated_errors(db), db.engine.connect() as connection:
        got = connection.exec_driver_sql(f"SELECT pg_try_advisory_lock({_PG_KEY})").scalar()
        if not got:
            if on_wait is not None:
                on_wait(WAITING)
            connection.exec_driver_sql(f"SELECT pg_advisory_lock({_PG_KEY})")
        connection.commit()  # the lock belongs to the session, not to this transaction
        try:
            yield
        finally:
            connection.exec_driver_sql(f"SELECT pg_advisory_unlock({_PG_KEY})")
            connection.commit()
