"""Drain sessions and their per-attempt results, persisted in the DB as they happen."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from autopack.db.models import DrainResult, DrainSession, table_of, utc_now
from autopack.db.retry import retrying
from autopack.drain.report import telemetry_per_minute

SESSIONS = table_of(DrainSession)
RESULTS = table_of(DrainResult)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def new_session_id() -> str:
    return uuid.uuid4().hex


@retrying("start the session")
def start_session(
    engine: Engine,
    *,
    kind: str,
    options: dict[str, Any],
    telemetry_enabled: bool,
    dry_run: bool = False,
    session_id: str | None = None,
) -> str:
    session_id = session_id or new_session_id()
    with engine.begin() as connection:
        connection.execute(
            sa.insert(SESSIONS).values(
                id=session_id,
                kind=kind,
                status="running",
                started_at=utc_now(),
                updated_at=utc_now(),
                dry_run=dry_run,
                telemetry_enabled=telemetry_enabled,
                worker=worker_name(),
                options=options,
                state={},
            )
        )
    return session_id


def next_seq(connection: sa.Connection, session_id: str) -> int:
    current = connection.execute(
        sa.select(sa.func.max(RESULTS.c.seq)).where(RESULTS.c.session_id == session_id)
    ).scalar()
    return int(current or 0) + 1


# A session belongs to one process; its worker threads take turns numbering results.
_SEQ_LOCK = threading.Lock()


@retrying("record a drain result")
def record_result(engine: Engine, session_id: str, values: dict[str, Any]) -> int:
    """Append one attempt's result (its seq is the next in the session); return its id."""
    with _SEQ_LOCK, engine.begin() as connection:
        seq = next_seq(connection, session_id)
        key = connection.execute(
            sa.insert(RESULTS).values(session_id=session_id, seq=seq, **values)
        ).inserted_primary_key
        connection.execute(
            sa.update(SESSIONS).where(SESSIONS.c.id == session_id).values(updated_at=utc_now())
        )
    assert key is not None
    return int(key[0])


@retrying("finish the session")
def finish_session(
    engine: Engine, session_id: str, *, status: str, stop_reason: str | None = None
) -> None:
    with engine.begin() as connection:
        connection.execute(
            sa.update(SESSIONS)
            .where(SESSIONS.c.id == session_id)
            .values(status=status, stop_reason=stop_reason, finished_at=utc_now())
        )


@retrying("save the session")
def save_session(
    engine: Engine,
    session_id: str,
    *,
    state: dict[str, Any],
    status: str = "running",
    stop_reason: str | None = None,
) -> None:
    """Cache the session's triage state and status (its results are already rows)."""
    values: dict[str, Any] = {"state": state, "status": status, "updated_at": utc_now()}
    if stop_reason is not None:
        values["stop_reason"] = stop_reason
    if status != "running":
        values["finished_at"] = utc_now()
    with engine.begin() as connection:
        connection.execute(sa.update(SESSIONS).where(SESSIONS.c.id == session_id).values(**values))


RESUMABLE = ("running", "interrupted", "failed")
# A running session on another machine is taken for dead when it has not saved for this long
# (the controller saves at least every 30 s).
SESSION_STALE_AFTER_S = 120.0


def session_alive(row: Any) -> bool:
    """Is this session's process still running? Resuming a live session would run its phases
    twice. On this machine the process id answers; elsewhere, how recently it saved."""
    if row.status != "running":
        return False
    host, _, pid = str(row.worker or "").rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    age = float((utc_now() - row.updated_at).total_seconds())
    return age < SESSION_STALE_AFTER_S


def find_session(engine: Engine, session_id: str | None, *, kinds: tuple[str, ...]) -> Any:
    """A named session, or the newest unfinished one of these kinds; None if there is none."""
    query = sa.select(SESSIONS)
    if session_id is not None:
        query = query.where(SESSIONS.c.id == session_id)
    else:
        query = (
            query.where(SESSIONS.c.kind.in_(kinds), SESSIONS.c.status.in_(RESUMABLE))
            .order_by(SESSIONS.c.started_at.desc(), SESSIONS.c.id.desc())
            .limit(1)
        )
    with engine.connect() as connection:
        return connection.execute(query).first()


@retrying("read the session's results")
def session_entries(engine: Engine, session_id: str) -> list[dict[str, Any]]:
    """The session's results, in order, as report entries."""
    columns = [c for c in RESULTS.c if c.name != "session_id"]
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(*columns).where(RESULTS.c.session_id == session_id).order_by(RESULTS.c.seq)
        ).all()
    entries = []
    for row in rows:
        entry = dict(row._mapping)
        entry["result_id"] = entry.pop("id")
        entry["telemetry_per_minute"] = telemetry_per_minute(
            entry["telemetry_events"], entry["duration_s"]
        )
        entries.append(entry)
    return entries


def list_sessions(engine: Engine, limit: int = 50) -> list[dict[str, Any]]:
    counts = (
        sa.select(
            RESULTS.c.session_id,
            sa.func.count().label("results"),
            sa.func.count().filter(RESULTS.c.outcome == "complete").label("succeeded"),
            sa.func.coalesce(sa.func.sum(RESULTS.c.telemetry_events), 0).label("telemetry"),
        )
        .group_by(RESULTS.c.session_id)
        .subquery()
    )
    query = (
        sa.select(
            SESSIONS.c.id,
            SESSIONS.c.kind,
            SESSIONS.c.status,
            SESSIONS.c.started_at,
            SESSIONS.c.finished_at,
            SESSIONS.c.worker,
            SESSIONS.c.stop_reason,
            sa.func.coalesce(counts.c.results, 0).label("results"),
            sa.func.coalesce(counts.c.succeeded, 0).label("succeeded"),
            sa.func.coalesce(counts.c.telemetry, 0).label("telemetry_events"),
        )
        .outerjoin(counts, counts.c.session_id == SESSIONS.c.id)
        .order_by(SESSIONS.c.started_at.desc())
        .limit(limit)
    )
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]
