"""Drain sessions and their per-attempt results, persisted in the DB as they happen."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from autopack.db.clock import utc_now
from autopack.db.models import DrainResult, DrainSession, PhaseClaim, table_of
from autopack.db.retry import retrying
from autopack.drain.holders import parse_holder, this_process
from autopack.drain.report import (
    DrainReport,
    SessionList,
    SessionSummary,
    per_hour,
    summarise,
    telemetry_per_minute,
)
from autopack.errors import GuardError

SESSIONS = table_of(DrainSession)
RESULTS = table_of(DrainResult)
CLAIMS = table_of(PhaseClaim)


def worker_name() -> str:
    """This process as a session's or claim's holder (see drain/holders.py)."""
    return this_process().text()


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
SEQ_LOCK = threading.Lock()


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
    twice. On this machine its pid and start time answer; elsewhere, how recently it saved."""
    if row.status != "running":
        return False
    holder = parse_holder(row.worker)
    if holder is not None and holder.is_local():
        return not holder.is_dead()
    age = float((utc_now() - row.updated_at).total_seconds())
    return age < SESSION_STALE_AFTER_S


def shown_status(row: Any) -> str:
    """The status to show: a `running` session whose local process is gone is `dead`."""
    if row.status == "running":
        holder = parse_holder(row.worker)
        if holder is not None and holder.is_dead():
            return "dead"
    return str(row.status)


def find_session(engine: Engine, session_id: str | None, *, kinds: tuple[str, ...]) -> Any:
    """A session named by its id or any unique prefix of it (as git abbreviates commits), or
    the newest unfinished one of these kinds that has claims or results to take over; None
    if there is none. An ambiguous prefix is refused."""
    with engine.connect() as connection:
        if session_id is not None:
            exact = connection.execute(
                sa.select(SESSIONS).where(SESSIONS.c.id == session_id)
            ).first()
            if exact is not None:
                return exact
            matches = connection.execute(
                sa.select(SESSIONS)
                .where(SESSIONS.c.id.startswith(session_id, autoescape=True))
                .order_by(SESSIONS.c.id)
                .limit(5)
            ).all()
            if len(matches) > 1:
                raise GuardError(
                    f"session id {session_id!r} is ambiguous: it starts "
                    + ", ".join(row.id[:12] for row in matches)
                    + ("…" if len(matches) == 5 else "")
                    + ".",
                    hint="give more characters of the id (`autopack drain sessions` lists them)",
                )
            return matches[0] if matches else None
        has_work = sa.or_(
            sa.exists().where(RESULTS.c.session_id == SESSIONS.c.id),
            sa.exists().where(CLAIMS.c.session_id == SESSIONS.c.id),
        )
        return connection.execute(
            sa.select(SESSIONS)
            .where(SESSIONS.c.kind.in_(kinds), SESSIONS.c.status.in_(RESUMABLE), has_work)
            .order_by(SESSIONS.c.started_at.desc(), SESSIONS.c.id.desc())
            .limit(1)
        ).first()


def take_over_session(engine: Engine, row: Any, worker: str) -> None:
    """Make this process the session's holder, atomically: a compare-and-set of the new
    holder on the one that was read. Of two resumes of one dead session, exactly one wins;
    the other is refused (it would run the same phases twice)."""
    with engine.begin() as connection:
        taken = connection.execute(
            sa.update(SESSIONS)
            .where(
                SESSIONS.c.id == row.id,
                SESSIONS.c.worker == row.worker,
                SESSIONS.c.status == row.status,
            )
            .values(worker=worker, status="running", updated_at=utc_now(), finished_at=None)
        ).rowcount
    if taken != 1:
        raise GuardError(
            f"session {row.id} was taken over by another process while this one resumed it.",
            hint="only one resume of a session runs; see `autopack drain sessions`",
        )


@retrying("read the session's results")
def session_entries(engine: Engine, session_id: str) -> list[dict[str, Any]]:
    """The session's results, in order, as report entries."""
    with engine.connect() as connection:
        return _session_entries(connection, session_id)


def _session_entries(connection: sa.Connection, session_id: str) -> list[dict[str, Any]]:
    columns = [c for c in RESULTS.c if c.name != "session_id"]
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
        entry["telemetry_per_hour"] = per_hour(entry["telemetry_events"], entry["duration_s"])
        entries.append(entry)
    return entries


def session_report(engine: Engine, session_id: str) -> DrainReport:
    """`drain sessions ID`: a session's report as it was saved (any kind, any status)."""
    with engine.connect() as connection:
        row = connection.execute(sa.select(SESSIONS).where(SESSIONS.c.id == session_id)).first()
        if row is None:
            raise GuardError(
                f"there is no drain session {session_id!r} in this database.",
                hint="list them with `autopack drain sessions`",
            )
        entries = _session_entries(connection, row.id)
    state = row.state or {}
    return summarise(
        row.id,
        entries,
        kind=row.kind,
        telemetry_enabled=row.telemetry_enabled,
        stopped_runs=state.get("stopped_runs") or {},
        skipped_phases=state.get("skipped_phases") or {},
        stop_reason=row.stop_reason,
    )


def list_sessions(engine: Engine, limit: int = 50) -> SessionList:
    """`drain sessions`: the newest `limit` sessions, with their result counts."""
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
        rows = connection.execute(query).all()
    return SessionList(
        sessions=[
            SessionSummary.model_validate({**row._mapping, "status": shown_status(row)})
            for row in rows
        ]
    )
