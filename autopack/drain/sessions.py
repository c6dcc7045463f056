"""Drain sessions and their per-attempt results, persisted in the DB as they happen."""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from autopack.db.models import DrainResult, DrainSession, table_of, utc_now

SESSIONS = table_of(DrainSession)
RESULTS = table_of(DrainResult)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def start_session(
    engine: Engine,
    *,
    kind: str,
    options: dict[str, Any],
    telemetry_enabled: bool,
    dry_run: bool = False,
) -> str:
    session_id = uuid.uuid4().hex
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


def record_result(engine: Engine, session_id: str, values: dict[str, Any]) -> int:
    """Append one attempt's result (its seq is the next in the session); return its id."""
    with engine.begin() as connection:
        seq = next_seq(connection, session_id)
        key = connection.execute(
            sa.insert(RESULTS).values(session_id=session_id, seq=seq, **values)
        ).inserted_primary_key
        connection.execute(
            sa.update(SESSIONS).where(SESSIONS.c.id == session_id).values(updated_at=utc_now())
        )
    assert key is not None
    return int(key[0])


def finish_session(
    engine: Engine, session_id: str, *, status: str, stop_reason: str | None = None
) -> None:
    with engine.begin() as connection:
        connection.execute(
            sa.update(SESSIONS)
            .where(SESSIONS.c.id == session_id)
            .values(status=status, stop_reason=stop_reason, finished_at=utc_now())
        )
