"""Stale triage through SQLAlchemy Core: reads on any backend, and the marking transaction.

autopack.triage.stale loads this module only when it needs it: to read PostgreSQL or an
in-memory SQLite DB (a SQLite file is read through sqlite3, autopack.triage.stale_sqlite,
with the same rows in the same order) and to mark phases FAILED on any backend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from autopack.db.engine import Database, translated_errors
from autopack.db.models import NaiveUtcDateTime, Phase, PhaseClaim, PhaseState, table_of, utc_now
from autopack.triage.stale import (
    STALE_TAG,
    STREAM_ROWS,
    MarkResult,
    StaleKind,
    StalePhase,
    StaleQuery,
    StaleReport,
    StaleTally,
    age_minutes,
    naive_utc,
    stale_reason,
)

PHASES = table_of(Phase)
CLAIMS = table_of(PhaseClaim)


def iter_stale(
    db: Database, query: StaleQuery, *, unleased: bool = False, limit: int | None = None
) -> Iterator[StalePhase]:
    """Stream the stale (or unleased) phases in report order from a server-side cursor."""
    statement = _unleased_select(query) if unleased else _stale_select(query)
    if limit is not None:
        statement = statement.limit(limit)
    now = query.now
    kinds = {kind.value: kind for kind in StaleKind}
    names: dict[str, str] = {}  # one string per run, not one per phase
    with translated_errors(db), db.engine.connect() as connection:
        result = connection.execution_options(yield_per=STREAM_ROWS).execute(statement)
        for rows in result.partitions():
            for pk, run_id, phase_id, state, reason, kind, last, worker, session, expires in rows:
                last = naive_utc(last)
                yield StalePhase(
                    pk,
                    names.setdefault(run_id, run_id),
                    phase_id,
                    state,
                    kinds[kind],
                    last,
                    age_minutes(last, now),
                    reason,
                    worker,
                    session,
                    None if expires is None else naive_utc(expires),
                )


def summarize_stale(
    db: Database, query: StaleQuery, *, unleased: bool = False, keep: int | None = None
) -> StaleTally:
    """Counts from one aggregate query, and the first `keep` entries (None: all of them)."""
    statement = _unleased_select(query) if unleased else _stale_select(query)
    rows = statement.order_by(None).subquery("rows")
    aggregate = sa.select(rows.c.run_id, rows.c.kind, sa.func.count()).group_by(
        rows.c.run_id, rows.c.kind
    )
    tally = StaleTally(keep=keep)
    runs: set[str] = set()
    with translated_errors(db), db.engine.connect() as connection:
        for run_id, kind, n in connection.execute(aggregate):
            runs.add(run_id)
            tally.count += n
            tally.by_kind[StaleKind(kind)] = tally.by_kind.get(StaleKind(kind), 0) + n
    tally.runs = len(runs)
    if tally.count and keep != 0:
        tally.kept = list(iter_stale(db, query, unleased=unleased, limit=keep))
    return tally


def _touched_before(query: StaleQuery, cutoff: Any) -> sa.ColumnElement[bool]:
    """Last touched before the cutoff, written so an index led by (state, …) can serve it."""
    before: sa.ColumnElement[bool] = PHASES.c.updated_at < cutoff
    if not query.updated_at_nullable:
        return before
    return sa.or_(
        before,
        sa.and_(PHASES.c.updated_at.is_(None), PHASES.c.created_at < cutoff),
    )


def _last_touched(query: StaleQuery) -> sa.ColumnElement[datetime]:
    if not query.updated_at_nullable:
        return PHASES.c.updated_at
    return sa.func.coalesce(PHASES.c.updated_at, PHASES.c.created_at, type_=NaiveUtcDateTime)


def _claim_exists() -> sa.Exists:
    return sa.exists().where(
        CLAIMS.c.run_id == PHASES.c.run_id, CLAIMS.c.phase_id == PHASES.c.phase_id
    )


def _phase_branch(
    query: StaleQuery, kind: StaleKind, state: PhaseState, *extra: sa.ColumnElement[bool]
) -> sa.Select[Any]:
    """Phases of `state` untouched since the cutoff, shaped like every branch of the union."""
    return sa.select(
        PHASES.c.id,
        PHASES.c.run_id,
        PHASES.c.phase_id,
        PHASES.c.state,
        PHASES.c.last_failure_reason,
        sa.literal(kind.value, sa.String).label("kind"),
        _last_touched(query).label("last_activity"),
        sa.cast(sa.null(), sa.String).label("worker"),
        sa.cast(sa.null(), sa.String).label("session_id"),
        sa.cast(sa.null(), NaiveUtcDateTime).label("lease_expires_at"),
    ).where(PHASES.c.state == state.value, _touched_before(query, query.cutoff), *extra)


def _stale_select(query: StaleQuery) -> sa.Select[Any]:
    queued = _phase_branch(query, StaleKind.QUEUED, PhaseState.QUEUED)
    if not query.leases_checked:
        return queued.order_by(PHASES.c.run_id, sa.text("last_activity"), PHASES.c.phase_id)
    expired = (
        sa.select(
            PHASES.c.id,
            PHASES.c.run_id,
            PHASES.c.phase_id,
            PHASES.c.state,
            PHASES.c.last_failure_reason,
            sa.literal(StaleKind.LEASE_EXPIRED.value, sa.String).label("kind"),
            CLAIMS.c.heartbeat_at.label("last_activity"),
            CLAIMS.c.worker,
            CLAIMS.c.session_id,
            CLAIMS.c.lease_expires_at,
        )
        .select_from(
            PHASES.join(
                CLAIMS,
                sa.and_(CLAIMS.c.run_id == PHASES.c.run_id, CLAIMS.c.phase_id == PHASES.c.phase_id),
            )
        )
        .where(
            PHASES.c.state == PhaseState.EXECUTING.value,
            CLAIMS.c.lease_expires_at < query.now,
        )
    )
    both = sa.union_all(queued, expired).subquery("stale")
    return sa.select(*both.c).order_by(both.c.run_id, both.c.last_activity, both.c.phase_id)


def _unleased_select(query: StaleQuery) -> sa.Select[Any]:
    extra = [~_claim_exists()] if query.leases_checked else []
    branch = _phase_branch(query, StaleKind.UNLEASED, PhaseState.EXECUTING, *extra)
    return branch.order_by(PHASES.c.run_id, sa.text("last_activity"), PHASES.c.phase_id)


def mark_stale_failed(
    db: Database,
    report: StaleReport,
    *,
    include_unleased: bool,
    progress: Callable[[int], None] | None,
    chunk_size: int,
) -> MarkResult:
    """See autopack.triage.stale.mark_stale_failed (which checks the DB is writable first)."""
    query = report.query
    targets = list(report.stale) + (list(report.unleased) if include_unleased else [])
    now = utc_now()
    marked: list[StalePhase] = []
    skipped: list[StalePhase] = []
    reasons: dict[int, str] = {}
    released = 0
    done = 0
    with translated_errors(db), db.engine.begin() as connection:
        for kind in StaleKind:
            entries = [e for e in targets if e.kind is kind]
            statement = _mark_statement(kind, query)
            for start in range(0, len(entries), chunk_size):
                chunk = entries[start : start + chunk_size]
                if kind is StaleKind.LEASE_EXPIRED:
                    released += _release_expired(connection, chunk, now)
                params = [
                    {
                        "b_pk": e.pk,
                        "b_state": e.state,
                        "b_old": e.last_failure_reason,
                        "b_reason": stale_reason(e, query.threshold),
                        "b_now": now,
                        "b_cutoff": query.cutoff,
                    }
                    for e in chunk
                ]
                changed = connection.execute(statement, params).rowcount
                done_pks = (
                    {e.pk for e in chunk}
                    if changed == len(chunk)
                    else _marked_pks(connection, chunk, now)
                )
                for entry, param in zip(chunk, params, strict=True):
                    if entry.pk in done_pks:
                        marked.append(entry)
                        reasons[entry.pk] = str(param["b_reason"])
                    else:
                        skipped.append(entry)
                done += len(chunk)
                if progress is not None:
                    progress(done)
    return MarkResult(
        marked_at=now, marked=marked, skipped=skipped, released_claims=released, reasons=reasons
    )


def _mark_statement(kind: StaleKind, query: StaleQuery) -> sa.Update:
    conditions: list[sa.ColumnElement[bool]] = [
        PHASES.c.id == sa.bindparam("b_pk"),
        PHASES.c.state == sa.bindparam("b_state"),
        # The reason we append to must be the one we read: a newer one is never overwritten.
        PHASES.c.last_failure_reason.is_not_distinct_from(sa.bindparam("b_old", type_=sa.String)),
    ]
    if kind is not StaleKind.LEASE_EXPIRED:
        cutoff = sa.bindparam("b_cutoff", type_=NaiveUtcDateTime)
        conditions.append(_touched_before(query, cutoff))
    if kind is not StaleKind.QUEUED and query.leases_checked:
        # lease_expired: its expired lease was just released; a renewed one is still there.
        conditions.append(~_claim_exists())
    return (
        sa.update(PHASES)
        .where(*conditions)
        .values(
            state=PhaseState.FAILED.value,
            last_failure_reason=sa.bindparam("b_reason", type_=sa.String),
            updated_at=sa.bindparam("b_now", type_=NaiveUtcDateTime),
        )
    )


def _release_expired(connection: sa.Connection, chunk: Sequence[StalePhase], now: datetime) -> int:
    """Delete the still-expired leases of these phases; a renewed lease is kept."""
    statement = sa.delete(CLAIMS).where(
        CLAIMS.c.run_id == sa.bindparam("b_run"),
        CLAIMS.c.phase_id == sa.bindparam("b_phase"),
        CLAIMS.c.lease_expires_at < sa.bindparam("b_now", type_=NaiveUtcDateTime),
    )
    params = [{"b_run": e.run_id, "b_phase": e.phase_id, "b_now": now} for e in chunk]
    return int(connection.execute(statement, params).rowcount)


def _marked_pks(connection: sa.Connection, chunk: Sequence[StalePhase], now: datetime) -> set[int]:
    """Which rows of a chunk this transaction changed (asked only when some were skipped)."""
    rows = connection.execute(
        sa.select(PHASES.c.id).where(
            PHASES.c.id.in_([e.pk for e in chunk]),
            PHASES.c.state == PhaseState.FAILED.value,
            PHASES.c.updated_at == now,
            PHASES.c.last_failure_reason.startswith(STALE_TAG, autoescape=True),
        )
    )
    return {int(pk) for (pk,) in rows}
