"""Stale phases: QUEUED ones nobody touched for too long, EXECUTING ones whose worker is gone.

Three kinds, each selected in SQL, so that only stale rows ever reach Python:

- `queued`: state QUEUED, last touched (`updated_at`, or `created_at` where that is empty)
  before the cutoff `now - threshold`. A phase with neither timestamp is never stale.
- `lease_expired`: state EXECUTING with an autopack lease (autopack_phase_claims) that has
  expired — its worker stopped renewing it and is presumed dead. The lease is its own
  threshold: the worker promised to finish or renew by then.
- `unleased`: state EXECUTING without any lease (left by the original tool, which keeps no
  leases) and last touched before the cutoff. Listed apart; marked only when asked for.

Reading streams: `iter_stale` yields the rows in order (runs in order, oldest first within a
run) from a server-side cursor, so a backlog of a million phases costs an indexed scan and
constant memory, never a million objects. `find_stale` collects them, for marking.

Marking is one transaction that re-checks every condition for every row it changes (state,
staleness, lease, and the failure reason it read), so a phase that a worker took, renewed or
finished after the report is left alone and reported as skipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple

import sqlalchemy as sa

from autopack.db.engine import Database, translated_errors
from autopack.db.models import (
    NaiveUtcDateTime,
    Phase,
    PhaseClaim,
    PhaseState,
    table_of,
    utc_now,
)
from autopack.errors import ConfigError, GuardError

DEFAULT_STALE_HOURS = 48.0
"""The runbook's threshold: a QUEUED phase untouched for two days is not waiting in a drain."""

MAX_THRESHOLD = timedelta(days=3650)
STALE_TAG = "[STALE]"
PREVIOUS_SEPARATOR = "; previous: "
STREAM_ROWS = 2_000
"""Rows fetched at a time while streaming (server-side cursor on PostgreSQL)."""
MARK_CHUNK = 500
"""Rows per executemany while marking: bounded parameter lists on every backend."""

PHASES = table_of(Phase)
CLAIMS = table_of(PhaseClaim)
_MINUTE = timedelta(minutes=1)


class StaleKind(StrEnum):
    QUEUED = "queued"
    LEASE_EXPIRED = "lease_expired"
    UNLEASED = "unleased"


class StalePhase(NamedTuple):
    """One stale phase, as found (naive UTC timestamps, like the DB's). A tuple: cheap in bulk."""

    pk: int
    """phases.id: the row, since phase_id is unique only within its run."""
    run_id: str
    phase_id: str
    state: str
    kind: StaleKind
    last_activity: datetime
    """updated_at (or created_at); for lease_expired, the worker's last heartbeat."""
    age_minutes: int
    """Whole minutes from last_activity to the query's `now` (rounded down)."""
    last_failure_reason: str | None
    worker: str | None = None
    session_id: str | None = None
    lease_expires_at: datetime | None = None


@dataclass(frozen=True)
class StaleQuery:
    """What counts as stale, fixed once: `now`, the threshold, and what the DB can tell."""

    now: datetime
    threshold: timedelta
    leases_checked: bool
    """False when the DB has no autopack_phase_claims table: every EXECUTING phase is unleased."""
    updated_at_nullable: bool = False
    """True on a DB whose phases.updated_at may be NULL (then created_at stands in)."""

    @property
    def cutoff(self) -> datetime:
        return self.now - self.threshold

    @property
    def threshold_minutes(self) -> float:
        return self.threshold.total_seconds() / 60


@dataclass
class StaleTally:
    """Counts taken while entries stream past, keeping the first `keep` (None: all) of them."""

    keep: int | None = None
    count: int = 0
    runs: int = 0
    by_kind: dict[StaleKind, int] = field(default_factory=dict)
    kept: list[StalePhase] = field(default_factory=list)
    _last_run: str | None = field(default=None, repr=False)

    def add(self, entry: StalePhase) -> None:
        self.count += 1
        self.by_kind[entry.kind] = self.by_kind.get(entry.kind, 0) + 1
        if entry.run_id != self._last_run:  # entries come ordered by run
            self.runs += 1
            self._last_run = entry.run_id
        if self.keep is None or len(self.kept) < self.keep:
            self.kept.append(entry)

    def passing(self, entries: Iterable[StalePhase]) -> Iterator[StalePhase]:
        """Yield `entries` unchanged, counting them on the way."""
        for entry in entries:
            self.add(entry)
            yield entry

    @classmethod
    def of(cls, entries: Iterable[StalePhase], keep: int | None = None) -> StaleTally:
        tally = cls(keep=keep)
        for entry in entries:
            tally.add(entry)
        return tally

    @property
    def hidden(self) -> int:
        return self.count - len(self.kept)


@dataclass(frozen=True)
class StaleReport:
    """Every stale phase at `query.now`, collected: the input to `mark_stale_failed`."""

    query: StaleQuery
    stale: list[StalePhase]
    """queued and lease_expired phases: runs in order, oldest first within a run."""
    unleased: list[StalePhase]
    """EXECUTING phases with no lease, untouched for longer than the threshold."""

    @property
    def count(self) -> int:
        return len(self.stale)

    @property
    def found(self) -> bool:
        """Anything that needs an operator (the command then exits 1)."""
        return bool(self.stale or self.unleased)


@dataclass(frozen=True)
class MarkResult:
    marked_at: datetime
    marked: list[StalePhase] = field(default_factory=list)
    skipped: list[StalePhase] = field(default_factory=list)
    """Changed after the report (taken, renewed, finished, re-reasoned): left as they are."""
    released_claims: int = 0
    reasons: dict[int, str] = field(default_factory=dict)
    """phases.id → the failure reason written, for every marked phase."""


def stale_threshold(
    stale_hours: float | None = None, max_age_minutes: int | None = None
) -> timedelta:
    """The threshold from the two mutually exclusive options (default: 48 hours)."""
    if stale_hours is not None and max_age_minutes is not None:
        raise ConfigError(
            "--stale-hours and --max-age-minutes both set the threshold; give only one.",
            hint="e.g. --stale-hours 48, or --max-age-minutes 90",
        )
    limit_minutes = MAX_THRESHOLD.total_seconds() / 60
    if stale_hours is not None:
        if not math.isfinite(stale_hours) or stale_hours <= 0:
            raise ConfigError(
                f"--stale-hours must be a positive number of hours, not {stale_hours:g}.",
                hint=f"e.g. --stale-hours {DEFAULT_STALE_HOURS:g} (the default) or 0.5",
            )
        if stale_hours * 60 > limit_minutes:
            raise _too_large(f"--stale-hours {stale_hours:g}")
        threshold = timedelta(hours=stale_hours)
    elif max_age_minutes is not None:
        if max_age_minutes < 1:
            raise ConfigError(
                f"--max-age-minutes must be at least 1, not {max_age_minutes}.",
                hint="e.g. --max-age-minutes 90",
            )
        if max_age_minutes > limit_minutes:
            raise _too_large(f"--max-age-minutes {max_age_minutes}")
        threshold = timedelta(minutes=max_age_minutes)
    else:
        threshold = timedelta(hours=DEFAULT_STALE_HOURS)
    if threshold < timedelta(seconds=1):
        raise ConfigError(
            f"a threshold of {threshold.total_seconds():g} seconds is too small to mean anything.",
            hint="give at least a second, e.g. --max-age-minutes 1",
        )
    return threshold


def _too_large(given: str) -> ConfigError:
    return ConfigError(
        f"{given} is longer than {MAX_THRESHOLD.days} days, the largest threshold accepted.",
        hint="give a threshold in hours or minutes, e.g. --stale-hours 48",
    )


def stale_query(db: Database, threshold: timedelta, *, now: datetime | None = None) -> StaleQuery:
    """Fix `now` and look at what the DB offers (a lease table; a nullable updated_at)."""
    if threshold <= timedelta(0):
        raise ConfigError(
            "the stale threshold must be positive.", hint="e.g. --stale-hours 48 (the default)"
        )
    with translated_errors(db), db.engine.connect() as connection:
        inspector = sa.inspect(connection)
        leases = inspector.has_table(CLAIMS.name)
        nullable = any(
            c["name"] == "updated_at" and c.get("nullable", False)
            for c in inspector.get_columns(PHASES.name)
        )
    return StaleQuery(
        now=utc_now() if now is None else _naive_utc(now),
        threshold=threshold,
        leases_checked=leases,
        updated_at_nullable=nullable,
    )


def iter_stale(
    db: Database, query: StaleQuery, *, unleased: bool = False, limit: int | None = None
) -> Iterator[StalePhase]:
    """Stream the stale phases (or, with `unleased`, the unleased ones) in report order.

    Read-only; the connection stays open until the iterator is exhausted or closed.
    """
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
                if last.tzinfo is not None:
                    last = _naive_utc(last)
                yield StalePhase(
                    pk,
                    names.setdefault(run_id, run_id),
                    phase_id,
                    state,
                    kinds[kind],
                    last,
                    (now - last) // _MINUTE if last <= now else 0,
                    reason,
                    worker,
                    session,
                    None if expires is None else _naive_utc(expires),
                )


def summarize_stale(
    db: Database, query: StaleQuery, *, unleased: bool = False, keep: int | None = None
) -> StaleTally:
    """Counts from one aggregate query, and the first `keep` entries (None: all of them).

    Cheaper than streaming every row through Python when only a screenful is shown.
    """
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


def find_stale(db: Database, threshold: timedelta, *, now: datetime | None = None) -> StaleReport:
    """Every stale and unleased phase, collected in lists (what `--mark-failed` acts on)."""
    query = stale_query(db, threshold, now=now)
    return StaleReport(
        query=query,
        stale=list(iter_stale(db, query)),
        unleased=list(iter_stale(db, query, unleased=True)),
    )


def _touched_before(query: StaleQuery, cutoff: Any) -> sa.ColumnElement[bool]:
    """Last touched before the cutoff, written so an index on (state, updated_at) can serve it."""
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


def _naive_utc(value: datetime) -> datetime:
    """Naive UTC, as the DB stores it; an aware value (a timestamptz column) is converted."""
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo is not None else value


def _stamp(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")


def stale_reason(entry: StalePhase, threshold: timedelta) -> str:
    """The failure reason a marked phase gets: `[STALE] …`, then `; previous: <old reason>`."""
    limit = f"{threshold.total_seconds() / 60:g} minutes"
    if entry.kind is StaleKind.QUEUED:
        text = (
            f"{STALE_TAG} QUEUED for {entry.age_minutes} minutes without progress "
            f"(last touched {_stamp(entry.last_activity)} UTC; threshold {limit})"
        )
    elif entry.kind is StaleKind.LEASE_EXPIRED:
        expired = _stamp(entry.lease_expires_at) if entry.lease_expires_at else "unknown"
        text = (
            f"{STALE_TAG} EXECUTING, but the lease of worker {entry.worker} expired at "
            f"{expired} UTC (last heartbeat {entry.age_minutes} minutes before triage); "
            "worker presumed dead"
        )
    else:
        text = (
            f"{STALE_TAG} EXECUTING for {entry.age_minutes} minutes without a lease "
            f"(last touched {_stamp(entry.last_activity)} UTC; threshold {limit}); "
            "left by a worker that keeps no lease"
        )
    if entry.last_failure_reason:
        text += PREVIOUS_SEPARATOR + entry.last_failure_reason
    return text


def mark_stale_failed(
    db: Database,
    report: StaleReport,
    *,
    include_unleased: bool = False,
    progress: Callable[[int], None] | None = None,
) -> MarkResult:
    """Mark the report's stale phases FAILED, in one transaction, re-checking each one.

    Expired leases of the phases marked are released (deleted) in the same transaction.
    EXECUTING phases without a lease are marked only with `include_unleased`. `progress`
    is called with the number of phases handled so far, after every chunk.
    """
    if not db.writable:
        raise GuardError(
            f"{db.target.display_url} was opened read-only; marking phases writes to it.",
            hint="open it with OpenMode.READ_WRITE",
        )
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
            for start in range(0, len(entries), MARK_CHUNK):
                chunk = entries[start : start + MARK_CHUNK]
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
