"""Is the database file damaged? SQLite's own page-level checks, for `db check`.

`quick_check` reads every page (O(size), minutes on a multi-GB file, hence not run by
writers); `integrity_check` (`--full`) also checks that every index matches its table.
PostgreSQL checks its own pages as it reads them: there is nothing comparable to run here.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from autopack.db.engine import Database

QUICK_CHECK = "quick_check"
FULL_CHECK = "integrity_check"
MAX_PROBLEMS = 100
"""SQLite stops listing after this many problems; the first ones say enough."""


@dataclass(frozen=True)
class IntegrityReport:
    checked: bool
    """False where there is no check to run (PostgreSQL)."""
    mode: str | None
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_integrity(db: Database, *, full: bool = False) -> IntegrityReport:
    """Run SQLite's quick_check (or integrity_check with `full`); a file so damaged that the
    check itself cannot run is reported as that one problem, never raised."""
    if db.target.backend != "sqlite":
        return IntegrityReport(checked=False, mode=None, problems=())
    mode = FULL_CHECK if full else QUICK_CHECK
    pragma = f"PRAGMA {mode}({MAX_PROBLEMS})"
    try:
        connection = db.sqlite_connect()
        if connection is None:  # in-memory: its one connection is the engine's
            with db.engine.connect() as engine_connection:
                rows = [tuple(row) for row in engine_connection.exec_driver_sql(pragma).all()]
        else:
            try:
                rows = connection.execute(pragma).fetchall()
            finally:
                connection.close()
    except sqlite3.DatabaseError as exc:
        return IntegrityReport(checked=True, mode=mode, problems=(str(exc),))
    found = tuple(str(row[0]) for row in rows)
    return IntegrityReport(checked=True, mode=mode, problems=() if found == ("ok",) else found)
