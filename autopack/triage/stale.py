"""Stale phases: QUEUED ones nobody touched for too long, EXECUTING ones whose worker is gone.

Three kinds, each selected in SQL, so that only stale rows ever reach Python:

- `queued`: state QUEUED, last touched (`updated_at`, or `created_at` where that is empty)
  before the cutoff `now - threshold`. A phase with neither timestamp is never stale.
- `lease_expired`: state EXECUTING with an autopack lease (autopack_phase_claims) that has
  expired — its worker stopped renewing it and is presumed dead. The lease is its own
  threshold: the worker promised to finish or renew by then.
- `unleased`: state EXECUTING without any lease (left by the original tool, which keeps no
  leases) and last touched before the cutoff. Listed apart; marked only when asked for.

Reading streams the rows in report order (runs in order, oldest first within a run, then
phase_id), so a backlog of a million phases costs one index scan and constant memory. A SQLite
file is read through sqlite3 itself (autopack.triage.stale_sqlite: no SQLAlchemy, and for
`--json` SQLite writes each entry's text); PostgreSQL and in-memory SQLite through SQLAlchemy
Core (autopack.triage.stale_portable), with the same rows in the same order. `find_stale`
collects them, for marking.

Marking is one transaction that re-checks every condition for every row it changes (state,
staleness, lease, and the failure reason it read), so a phase that a worker took, renewed or
finished after the report is left alone and reported as skipped.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple

from autopack.db.engine import Database, translated_errors
from autopack.db.plain import PlainReader, plain_reads, table_names
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

_MINUTE = timedelta(minutes=1)
_ENCODER = json.JSONEncoder(default=str)
"""Made once: json.dumps with options builds a new encoder for every entry."""


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


def utc_now() -> datetime:
    """Naive UTC now, as autopack.db.models.utc_now (whose module loads SQLModel to import)."""
    return datetime.now(UTC).replace(tzinfo=None)


def naive_utc(value: datetime) -> datetime:
    """Naive UTC, as the DB stores it; an aware value (a timestamptz column) is converted."""
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo is not None else value


def age_minutes(last: datetime, now: datetime) -> int:
    """Whole minutes from `last` to `now`, rounded down; 0 for a `last` after `now`."""
    return (now - last) // _MINUTE if last <= now else 0


def stale_query(db: Database, threshold: timedelta, *, now: datetime | None = None) -> StaleQuery:
    """Fix `now` and look at what the DB offers (a lease table; a nullable updated_at)."""
    if threshold <= timedelta(0):
        raise ConfigError(
            "the stale threshold must be positive.", hint="e.g. --stale-hours 48 (the default)"
        )
    with plain_reads(db) as reader:
        leases = "autopack_phase_claims" in table_names(reader)
        nullable = _updated_at_nullable(reader)
    return StaleQuery(
        now=utc_now() if now is None else naive_utc(now),
        threshold=threshold,
        leases_checked=leases,
        updated_at_nullable=nullable,
    )


def _updated_at_nullable(reader: PlainReader) -> bool:
    if reader.backend == "postgresql":
        rows = reader.all(
            "SELECT is_nullable FROM information_schema.columns WHERE table_schema = "
            "current_schema() AND table_name = 'phases' AND column_name = 'updated_at'"
        )
        return bool(rows) and rows[0][0] == "YES"
    # cid, name, type, notnull, default, pk
    return any(
        row[1] == "updated_at" and not row[3] for row in reader.all("PRAGMA table_info(phases)")
    )


def _sqlite_file(db: Database) -> sqlite3.Connection | None:
    """A plain connection to a SQLite file (read through stale_sqlite); None: use SQLAlchemy."""
    with translated_errors(db):
        return db.sqlite_connect()


def iter_stale(
    db: Database, query: StaleQuery, *, unleased: bool = False, limit: int | None = None
) -> Iterator[StalePhase]:
    """Stream the stale phases (or, with `unleased`, the unleased ones) in report order.

    Read-only; the connection stays open until the iterator is exhausted or closed.
    """
    connection = _sqlite_file(db)
    if connection is None:
        from autopack.triage import stale_portable  # SQLAlchemy: loaded only when needed

        yield from stale_portable.iter_stale(db, query, unleased=unleased, limit=limit)
        return
    from autopack.triage import stale_sqlite

    with closing(connection), translated_errors(db):
        yield from stale_sqlite.iter_stale(connection, query, unleased=unleased, limit=limit)


def summarize_stale(
    db: Database, query: StaleQuery, *, unleased: bool = False, keep: int | None = None
) -> StaleTally:
    """Counts from aggregate queries, and the first `keep` entries (None: all of them).

    Cheaper than streaming every row through Python when only a screenful is shown.
    """
    connection = _sqlite_file(db)
    if connection is None:
        from autopack.triage import stale_portable

        return stale_portable.summarize_stale(db, query, unleased=unleased, keep=keep)
    from autopack.triage import stale_sqlite

    with closing(connection), translated_errors(db):
        return stale_sqlite.summarize(connection, query, unleased=unleased, keep=keep)


def summarize_report(
    db: Database, query: StaleQuery, *, keep: int | None = None
) -> tuple[StaleTally, StaleTally]:
    """`summarize_stale` of the stale and of the unleased phases, from one read of the DB."""
    connection = _sqlite_file(db)
    if connection is None:
        from autopack.triage import stale_portable

        return (
            stale_portable.summarize_stale(db, query, keep=keep),
            stale_portable.summarize_stale(db, query, unleased=True, keep=keep),
        )
    from autopack.triage import stale_sqlite

    with closing(connection), translated_errors(db), stale_sqlite.snapshot(connection):
        return (
            stale_sqlite.summarize(connection, query, keep=keep),
            stale_sqlite.summarize(connection, query, unleased=True, keep=keep),
        )


@dataclass
class EncodedEntries:
    """Report entries as JSON texts (`entry_document`, one line each), in batches.

    `tally` counts them as they are read (its `kept` stays empty): read it once `batches` is
    exhausted.
    """

    batches: Iterator[list[str]]
    tally: StaleTally


def stale_json(db: Database, query: StaleQuery, *, unleased: bool = False) -> EncodedEntries:
    """The report's entries encoded, streamed in report order (constant memory).

    On a SQLite file SQLite itself writes each entry's text (Python only passes the texts
    on); elsewhere each StalePhase is encoded here.
    """
    tally = StaleTally(keep=0)
    return EncodedEntries(_json_batches(db, query, tally, unleased=unleased), tally)


def _json_batches(
    db: Database, query: StaleQuery, tally: StaleTally, *, unleased: bool
) -> Iterator[list[str]]:
    connection = _sqlite_file(db)
    if connection is None:
        yield from encode_entries(iter_stale(db, query, unleased=unleased), tally=tally).batches
        return
    from autopack.triage import stale_sqlite

    with closing(connection), translated_errors(db):
        yield from stale_sqlite.json_batches(
            connection, query, tally, unleased=unleased, connect=db.sqlite_connect
        )


def encode_entries(
    entries: Iterable[StalePhase],
    reasons: Mapping[int, str] | None = None,
    *,
    tally: StaleTally | None = None,
) -> EncodedEntries:
    """`entries` encoded in batches as `stale_json` gives them; `reasons` as in entry_document."""
    counted = tally if tally is not None else StaleTally(keep=0)

    def batches() -> Iterator[list[str]]:
        batch: list[str] = []
        for entry in counted.passing(entries):
            batch.append(encode_entry(entry, reasons))
            if len(batch) >= STREAM_ROWS:
                yield batch
                batch = []
        if batch:
            yield batch

    return EncodedEntries(batches(), counted)


def entry_document(entry: StalePhase, reasons: Mapping[int, str] | None = None) -> dict[str, Any]:
    """One entry of the `--json` lists (docs/triage.md). `reasons`: phases.id → the reason
    marking wrote. autopack.triage.stale_sqlite writes the same text in SQL."""
    return {
        "run_id": entry.run_id,
        "phase_id": entry.phase_id,
        "state": entry.state,
        "kind": entry.kind.value,
        "age_minutes": entry.age_minutes,
        "last_activity": utc_text(entry.last_activity),
        "last_failure_reason": entry.last_failure_reason,
        "worker": entry.worker,
        "session_id": entry.session_id,
        "lease_expires_at": utc_text(entry.lease_expires_at),
        "marked": reasons is not None and entry.pk in reasons,
        "new_reason": None if reasons is None else reasons.get(entry.pk),
    }


def utc_text(value: datetime | None) -> str | None:
    """ISO 8601 with an explicit +00:00 (the DB's values are naive UTC)."""
    return None if value is None else value.isoformat() + "+00:00"


def encode_entry(entry: StalePhase, reasons: Mapping[int, str] | None = None) -> str:
    """`entry_document` as compact JSON text, as in the `--json` lists."""
    return _ENCODER.encode(entry_document(entry, reasons))


def find_stale(db: Database, threshold: timedelta, *, now: datetime | None = None) -> StaleReport:
    """Every stale and unleased phase, collected in lists (what `--mark-failed` acts on)."""
    query = stale_query(db, threshold, now=now)
    return StaleReport(
        query=query,
        stale=list(iter_stale(db, query)),
        unleased=list(iter_stale(db, query, unleased=True)),
    )


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
    is called with the number of phases handled so far, after every chunk of MARK_CHUNK.
    """
    if not db.writable:
        raise GuardError(
            f"{db.target.display_url} was opened read-only; marking phases writes to it.",
            hint="open it with OpenMode.READ_WRITE",
        )
    from autopack.triage import stale_portable

    return stale_portable.mark_stale_failed(
        db, report, include_unleased=include_unleased, progress=progress, chunk_size=MARK_CHUNK
    )


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
