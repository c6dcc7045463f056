"""Wait out a busy database instead of abandoning work (issue 11, defect 8).

Another writer can hold SQLite's write lock longer than the busy timeout (a big import in one
transaction), and a PostgreSQL connection can be cut under a drain (a restart, an operator's
`pg_terminate_backend`). A drain that gave up then left its claimed phases EXECUTING under long
leases and lost telemetry. A write wrapped here is retried as a whole (it is one transaction,
rolled back by the failure) with exponential backoff, for as long as it takes, and says so on
stderr (the `autopack.db` logger) when it starts waiting and every half-minute after; Ctrl-C
still stops it. Any other error is raised at once.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable
from typing import Final, ParamSpec, TypeVar

from sqlalchemy.exc import DBAPIError

logger = logging.getLogger("autopack.db")

P = ParamSpec("P")
T = TypeVar("T")

FIRST_DELAY_S: Final = 0.05
MAX_DELAY_S: Final = 5.0
REPORT_EVERY_S: Final = 30.0
_LOCKED: Final = (
    "database is locked",
    "database table is locked",
    "database is busy",
    # libpq/psycopg when the server ended the connection (pg_terminate_backend, a restart).
    "server closed the connection unexpectedly",
    "terminating connection due to administrator command",
    "the connection is closed",
    "connection is lost",
)
# PostgreSQL: admin_shutdown, crash_shutdown, cannot_connect_now, and connection exceptions.
_PG_TRANSIENT: Final = ("57P01", "57P02", "57P03", "08000", "08003", "08006", "08001", "08004")


def is_transient(exc: BaseException) -> bool:
    """Whether a database error goes away by itself: a lock held elsewhere, a cut connection."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    text = str(exc.orig).lower() if exc.orig is not None else str(exc).lower()
    if any(marker in text for marker in _LOCKED):
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate in _PG_TRANSIENT


def run_retrying(
    action: Callable[[], T],
    *,
    what: str,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Run `action` (one whole transaction) until it gets through a transient error."""
    started = clock()
    delay = FIRST_DELAY_S
    next_report = 0.0
    while True:
        try:
            return action()
        except DBAPIError as exc:
            if not is_transient(exc):
                raise
            waited = clock() - started
            if waited >= next_report:
                logger.warning(
                    "the database is busy or its connection was cut (%s); waiting to %s "
                    "(%.0f s so far, retrying with backoff; Ctrl-C stops)",
                    _first_line(exc),
                    what,
                    waited,
                )
                next_report = waited + REPORT_EVERY_S
            sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, MAX_DELAY_S)


def retrying(what: str) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Decorate a function that is one write transaction: `run_retrying` around every call."""

    def decorate(function: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return run_retrying(lambda: function(*args, **kwargs), what=what)

        return wrapper

    return decorate


def _first_line(exc: DBAPIError) -> str:
    lines = str(exc.orig if exc.orig is not None else exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


__all__ = ["is_transient", "retrying", "run_retrying"]
