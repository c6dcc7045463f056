"""Stale phases: QUEUED ones nobody touched for too long, EXECUTING ones whose worker is gone.

Three kinds, one SQL statement each, so that only stale rows ever reach Python:

- `queued`: state QUEUED, last touched (`updated_at`, or `created_at` where that is empty)
  before the cutoff `now - threshold`. A phase with neither timestamp is never stale.
- `lease_expired`: state EXECUTING with an autopack lease (autopack_phase_claims) that has
  expired — its worker stopped renewing it and is presumed dead. The lease is its own
  threshold: the worker promised to finish or renew by then.
- `unleased`: state EXECUTING without any lease (left by the original tool, which keeps no
  leases) and last touched before the cutoff. Listed apart; marked only when asked for.

`stale_report` reads the stale list together with the unleased list in ONE read transaction
(autopack.db.transaction), so the two agree with each other and with one instant. Rows come in
report order (runs in order, oldest first within a run, then phase_id): each statement reads
its index in that order, and the two kinds of the stale list are merged as they stream. Every
entry's `--json` object is written by the DB itself (`json_object` on SQLite,
`json_build_object` on PostgreSQL: autopack.triage.stale_dialect); Python only passes the
texts on, so a backlog of a million phases costs one index scan and bounded memory.

`mark_stale_failed` is one write transaction that re-checks every condition for every row it
changes (state, staleness, lease, and the failure reason it read), so a phase that a worker
took, renewed or finished after the report is left alone and reported as skipped.
"""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from itertools import islice
from typing import Any, NamedTuple

from autopack.db.clock import utc_now
from autopack.db.engine import Database
from autopack.db.names import PhaseState
from autopack.db.transaction import (
    BATCH_ROWS,
    Rows,
    Transaction,
    read_snapshot,
    table_names,
    write_transaction,
)
from autopack.errors import ConfigError, GuardError
from autopack.triage.stale_dialect import StaleDialect, dialect_of

DEFAULT_STALE_HOURS = 48.0
"""The runbook's threshold: a QUEUED phase untouched for two days is not waiting in a drain."""

MAX_THRESHOLD = timedelta(days=3650)
STALE_TAG = "[STALE]"
PREVIOUS_SEPARATOR = "; previous: "
MARK_CHUNK = 500
"""Rows per executemany while marking: bounded parameter lists on every backend."""
DOCUMENT_SEPARATOR = ",\n"
"""Between the entries' JSON texts joined into one string (StaleList.documents)."""
CLAIMS = "autopack_phase_claims"
_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)


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
    """Whole minutes from last_activity to the query's `now` (rounded down), by the DB."""
    last_failure_reason: str | None
    worker: str | None
    session_id: str | None
    lease_expires_at: datetime | None
    document: str
    """The entry's `--json` object (docs/json.md), as the DB wrote it."""


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
class StaleList:
    """One list of the report (the stale phases, or the unleased ones): counts and entries."""

    count: int = 0
    runs: int = 0
    by_kind: dict[StaleKind, int] = field(default_factory=dict)
    entries: list[StalePhase] = field(default_factory=list)
    """The first entries in report order: as many as asked for (all when marking)."""
    documents: list[str] = field(default_factory=list)
    """Every entry's JSON text in report order, as the DB wrote it, several to a string
    (joined by DOCUMENT_SEPARATOR: one string per batch read, not one per entry); empty
    unless asked for."""

    @property
    def complete(self) -> bool:
        """Every entry was read (what marking needs)."""
        return len(self.entries) == self.count

    @property
    def hidden(self) -> int:
        return self.count - len(self.entries)


@dataclass(frozen=True)
class StaleReport:
    """Every stale and unleased phase at `query.now`, read from one snapshot."""

    query: StaleQuery
    stale: StaleList
    """queued and lease_expired phases: runs in order, oldest first within a run."""
    unleased: StaleList
    """EXECUTING phases with no lease, untouched for longer than the threshold."""

    @property
    def count(self) -> int:
        return self.stale.count

    @property
    def found(self) -> bool:
        """Anything that needs an operator (the command then exits 1)."""
        return bool(self.stale.count or self.unleased.count)

    def with_marks(self, result: MarkResult) -> StaleReport:
        """This report with `marked` and `new_reason` set in the entries `result` marked."""
        return replace(
            self, stale=_marked(self.stale, result), unleased=_marked(self.unleased, result)
        )


@dataclass(frozen=True)
class MarkResult:
    marked_at: datetime
    marked: list[StalePhase] = field(default_factory=list)
    skipped: list[StalePhase] = field(default_factory=list)
    """Changed after the report (taken, renewed, finished, re-reasoned): left as they are."""
    released_claims: int = 0
    reasons: dict[int, str] = field(default_factory=dict)
    """phases.id → the failure reason written, for every marked phase."""


def _marked(listing: StaleList, result: MarkResult) -> StaleList:
    """The list's entries with what marking wrote (needs every entry: see StaleList.complete)."""
    if not listing.complete:
        raise ValueError("marks apply to a report read in full (keep=None)")
    documents = []
    for entry in listing.entries:
        reason = result.reasons.get(entry.pk)
        if reason is None:
            documents.append(entry.document)
            continue
        # The DB wrote the entry; marking adds the two facts only it knows afterwards.
        document = json.loads(entry.document)
        document["marked"], document["new_reason"] = True, reason
        documents.append(json.dumps(document, separators=(",", ":"), ensure_ascii=False))
    return replace(listing, documents=documents)


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


def naive_utc(value: datetime) -> datetime:
    """Naive UTC, as the DB stores it; an aware value (a timestamptz column) is converted."""
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo is not None else value


# Reading --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _KindStatement:
    """One kind's rows as SQL: FROM … WHERE … (`p` the phase, `c` its claim) and its columns."""

    kind: StaleKind
    source: str
    last: str
    worker: str = "NULL"
    session: str = "NULL"
    expires: str = "NULL"

    def document(self, dialect: StaleDialect) -> str:
        """The entry's `--json` object (docs/triage.md), built by the DB's JSON function."""
        expires = "NULL" if self.expires == "NULL" else dialect.utc_text(self.expires)
        return dialect.as_text.format(
            f"{dialect.json_object}('run_id', p.run_id, 'phase_id', p.phase_id, "
            f"'state', p.state, 'kind', '{self.kind.value}', "
            f"'age_minutes', {dialect.age_minutes(self.last)}, "
            f"'last_activity', {dialect.utc_text(self.last)}, "
            "'last_failure_reason', p.last_failure_reason, "
            f"'worker', {self.worker}, 'session_id', {self.session}, "
            f"'lease_expires_at', {expires}, "
            f"'marked', {dialect.json_false}, 'new_reason', NULL)"
        )

    def listing(self, dialect: StaleDialect, *, full: bool, limit: bool = False) -> str:
        """Its rows in report order: run_id, last activity, phase_id, then (`full`) the
        StalePhase columns, then the entry's JSON text."""
        if full:
            columns = ["p.run_id", f"{self.last} AS last_activity", "p.phase_id"]
        else:
            raw = dialect.as_raw
            columns = [raw.format("p.run_id"), raw.format(self.last), raw.format("p.phase_id")]
        if full:
            columns += [
                "p.id",
                "p.state",
                "p.last_failure_reason",
                self.worker,
                self.session,
                self.expires,
                dialect.age_minutes(self.last),
            ]
        document = self.document(dialect)
        columns.append(document if full else dialect.as_raw.format(document))
        order = f"p.run_id{dialect.collate}, {self.last}, p.phase_id{dialect.collate}"
        sql = f"SELECT {', '.join(columns)} {self.source} ORDER BY {order}"
        return sql + (" LIMIT :limit" if limit else "")


def _touched_before(query: StaleQuery, phase: str = "p") -> str:
    """Last touched before :cutoff, written so an index led by (state, run_id, updated_at)
    serves it."""
    before = f"{phase}.updated_at < :cutoff"
    if not query.updated_at_nullable:
        return before
    return f"({before} OR ({phase}.updated_at IS NULL AND {phase}.created_at < :cutoff))"


def _no_claim(phase: str) -> str:
    return (
        f"NOT EXISTS (SELECT 1 FROM {CLAIMS} c WHERE c.run_id = {phase}.run_id "
        f"AND c.phase_id = {phase}.phase_id)"
    )


def _statements(query: StaleQuery, *, unleased: bool) -> list[_KindStatement]:
    """The statements of one list: unleased; or queued (then lease_expired, where leases are)."""
    last = "coalesce(p.updated_at, p.created_at)" if query.updated_at_nullable else "p.updated_at"
    touched = _touched_before(query)
    executing = PhaseState.EXECUTING.value
    if unleased:
        unclaimed = f" AND {_no_claim('p')}" if query.leases_checked else ""
        source = f"FROM phases p WHERE p.state = '{executing}' AND {touched}{unclaimed}"
        return [_KindStatement(StaleKind.UNLEASED, source, last)]
    queued = PhaseState.QUEUED.value
    statements = [
        _KindStatement(
            StaleKind.QUEUED, f"FROM phases p WHERE p.state = '{queued}' AND {touched}", last
        )
    ]
    if query.leases_checked:
        source = (
            f"FROM phases p JOIN {CLAIMS} c ON c.run_id = p.run_id AND c.phase_id = p.phase_id "
            f"WHERE p.state = '{executing}' AND c.lease_expires_at < :now"
        )
        statements.append(
            _KindStatement(
                StaleKind.LEASE_EXPIRED,
                source,
                "c.heartbeat_at",
                "c.worker",
                "c.session_id",
                "c.lease_expires_at",
            )
        )
    return statements


def _params(query: StaleQuery, **extra: Any) -> dict[str, Any]:
    return {
        "cutoff": query.cutoff,
        "now": query.now,
        "now_us": (query.now - _EPOCH) // _MICROSECOND,  # SQLite's age arithmetic
        **extra,
    }


def _stored_datetime(value: Any) -> datetime | None:
    """A timestamp as read (text on SQLite, a datetime on PostgreSQL) as naive UTC."""
    if value is None:
        return None
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    assert isinstance(parsed, datetime)
    return naive_utc(parsed)


def _entry(kind: StaleKind, row: Sequence[Any], names: dict[str, str]) -> StalePhase:
    run_id, last, phase_id, pk, state, reason, worker, session, expires, age, document = row
    last_activity = _stored_datetime(last)
    assert last_activity is not None  # a row is stale only by a timestamp
    return StalePhase(
        int(pk),
        names.setdefault(run_id, run_id),  # one string per run, not one per phase
        phase_id,
        state,
        kind,
        last_activity,
        int(age or 0),
        reason,
        worker,
        session,
        _stored_datetime(expires),
        document,
    )


def _sort_key(row: Sequence[Any]) -> tuple[Any, ...]:
    """Report order, as the statements' ORDER BY (run_id, last activity, phase_id)."""
    return row[0], row[1], row[2]


def _in_report_order(
    snapshot: Transaction,
    statements: list[_KindStatement],
    sql_of: Callable[[_KindStatement], str],
    params: dict[str, Any],
) -> Iterator[tuple[StaleKind, Sequence[Any]]]:
    """The statements' rows merged in report order, each with its kind.

    The other kinds (expired leases: a few dead workers' phases) are read first, in full; the
    first (queued, or unleased) streams, straight through when the others have no rows.
    """
    first, *rest = statements
    others = [(s.kind, snapshot.all(sql_of(s), params)) for s in rest]
    streamed = (
        (first.kind, row)
        for rows in snapshot.batches(sql_of(first), params, BATCH_ROWS)
        for row in rows
    )
    present = [[(kind, row) for row in rows] for kind, rows in others if rows]
    if not present:
        return streamed
    return heapq.merge(streamed, *present, key=lambda kind_row: _sort_key(kind_row[1]))


def _read_list(
    snapshot: Transaction,
    query: StaleQuery,
    *,
    unleased: bool,
    keep: int | None,
    documents: bool,
) -> StaleList:
    dialect = dialect_of(snapshot.backend)
    params = _params(query)
    statements = _statements(query, unleased=unleased)
    if keep is None:
        return _read_entries(snapshot, dialect, statements, params)
    if documents:
        listing = _read_documents(snapshot, dialect, statements, params)
    else:
        listing = _counted(snapshot, statements, params)
    if keep and listing.count:
        rows = _in_report_order(
            snapshot,
            statements,
            lambda statement: statement.listing(dialect, full=True, limit=True),
            {**params, "limit": keep},
        )
        names: dict[str, str] = {}
        listing.entries = [_entry(kind, row, names) for kind, row in islice(rows, keep)]
    return listing


def _read_entries(
    snapshot: Transaction,
    dialect: StaleDialect,
    statements: list[_KindStatement],
    params: dict[str, Any],
) -> StaleList:
    """Every entry of the list, as StalePhase rows (and their texts, one per string)."""
    rows = _in_report_order(
        snapshot, statements, lambda statement: statement.listing(dialect, full=True), params
    )
    names: dict[str, str] = {}
    entries = [_entry(kind, row, names) for kind, row in rows]
    by_kind: dict[StaleKind, int] = {}
    for entry in entries:
        by_kind[entry.kind] = by_kind.get(entry.kind, 0) + 1
    return StaleList(
        count=len(entries),
        runs=len(names),
        by_kind=by_kind,
        entries=entries,
        documents=[entry.document for entry in entries],
    )


def _read_documents(
    snapshot: Transaction,
    dialect: StaleDialect,
    statements: list[_KindStatement],
    params: dict[str, Any],
) -> StaleList:
    """Every entry's JSON text, touched as little as Python can (whole batches at a time):
    on a large backlog the rows are the whole cost of the command."""
    listing = StaleList()
    runs: set[str] = set()
    # The other kinds (expired leases: a few dead workers' phases) are read first, in full;
    # most often they have no rows, and the queued phases then stream straight through.
    others: list[Rows] = [
        snapshot.all(s.listing(dialect, full=False), params) for s in statements[1:]
    ]
    first = snapshot.batches(statements[0].listing(dialect, full=False), params, BATCH_ROWS)
    for statement, rows in zip(statements[1:], others, strict=True):
        if rows:
            listing.by_kind[statement.kind] = len(rows)
    batches: Iterable[Rows] = first
    if any(others):
        merged = heapq.merge((row for rows in first for row in rows), *others, key=_sort_key)
        batches = iter(lambda: list(islice(merged, BATCH_ROWS)), [])
    for rows in batches:
        columns = list(zip(*rows, strict=True))  # in C: no Python loop per row
        runs.update(columns[0])
        listing.count += len(rows)
        listing.documents.append(_joined_text(snapshot, columns[-1]))
    first_count = listing.count - sum(len(rows) for rows in others)
    if first_count:
        listing.by_kind = {statements[0].kind: first_count, **listing.by_kind}
    listing.runs = len(runs)
    return listing


def _joined_text(snapshot: Transaction, documents: Sequence[str | bytes]) -> str:
    """The documents joined by DOCUMENT_SEPARATOR: raw bytes (SQLite) decoded at once."""
    if documents and isinstance(documents[0], bytes):
        raw = DOCUMENT_SEPARATOR.encode().join(documents)  # type: ignore[arg-type]
        return snapshot.decoded(raw)
    return DOCUMENT_SEPARATOR.join(documents)  # type: ignore[arg-type]


def _counted(
    snapshot: Transaction, statements: list[_KindStatement], params: dict[str, Any]
) -> StaleList:
    """The list's counts from aggregates: cheaper than reading every row when only a
    screenful is shown."""
    listing = StaleList()
    for statement in statements:
        ((count,),) = snapshot.all(f"SELECT count(*) {statement.source}", params)
        if count:
            listing.count += count
            listing.by_kind[statement.kind] = int(count)
    if listing.count:
        union = " UNION ALL ".join(f"SELECT p.run_id {s.source}" for s in statements)
        ((runs,),) = snapshot.all(
            f"SELECT count(DISTINCT run_id) FROM ({union}) AS stale_runs", params
        )
        listing.runs = int(runs)
    return listing


def stale_report(
    db: Database,
    threshold: timedelta,
    *,
    now: datetime | None = None,
    keep: int | None = None,
    documents: bool = False,
) -> StaleReport:
    """The stale phases and the unleased ones, read together in one read transaction.

    `keep`: how many entries of each list to read as StalePhase rows (None: every one, which
    `mark_stale_failed` needs; 0: none). `documents`: also every entry's JSON text (with
    keep=None they come with the entries). Read-only.
    """
    if threshold <= timedelta(0):
        raise ConfigError(
            "the stale threshold must be positive.", hint="e.g. --stale-hours 48 (the default)"
        )
    with read_snapshot(db) as snapshot:
        query = StaleQuery(
            now=utc_now() if now is None else naive_utc(now),
            threshold=threshold,
            leases_checked=CLAIMS in table_names(snapshot),
            updated_at_nullable=_updated_at_nullable(snapshot),
        )
        stale = _read_list(snapshot, query, unleased=False, keep=keep, documents=documents)
        unleased = _read_list(snapshot, query, unleased=True, keep=keep, documents=documents)
    return StaleReport(query, stale, unleased)


def _updated_at_nullable(snapshot: Transaction) -> bool:
    if snapshot.backend == "postgresql":
        rows = snapshot.all(
            "SELECT is_nullable FROM information_schema.columns WHERE table_schema = "
            "current_schema() AND table_name = 'phases' AND column_name = 'updated_at'"
        )
        return bool(rows) and rows[0][0] == "YES"
    # cid, name, type, notnull, default, pk
    return any(
        row[1] == "updated_at" and not row[3] for row in snapshot.all("PRAGMA table_info(phases)")
    )


# Marking --------------------------------------------------------------------------------------


def mark_stale_failed(
    db: Database,
    report: StaleReport,
    *,
    include_unleased: bool = False,
    progress: Callable[[int], None] | None = None,
) -> MarkResult:
    """Mark the report's stale phases FAILED, in one transaction, re-checking each one.

    `report` must have been read in full (stale_report with keep=None). Expired leases of the
    phases marked are released (deleted) in the same transaction. EXECUTING phases without a
    lease are marked only with `include_unleased`. `progress` is called with the number of
    phases handled so far, after every chunk of MARK_CHUNK.
    """
    if not db.writable:
        raise GuardError(
            f"{db.target.display_url} was opened read-only; marking phases writes to it.",
            hint="open it with OpenMode.READ_WRITE",
        )
    if not (report.stale.complete and report.unleased.complete):
        raise ValueError("marking needs a report read in full (stale_report with keep=None)")
    query = report.query
    targets = report.stale.entries + (report.unleased.entries if include_unleased else [])
    marked_at = utc_now()
    marked: list[StalePhase] = []
    skipped: list[StalePhase] = []
    reasons: dict[int, str] = {}
    released = 0
    done = 0
    chunk_size = MARK_CHUNK  # read at call time: tests make it small
    with write_transaction(db) as transaction:
        dialect = dialect_of(transaction.backend)
        for kind in StaleKind:
            entries = [e for e in targets if e.kind is kind]
            statement = _mark_statement(kind, query, dialect)
            for start in range(0, len(entries), chunk_size):
                chunk = entries[start : start + chunk_size]
                if kind is StaleKind.LEASE_EXPIRED:
                    released += _release_expired(transaction, chunk, marked_at)
                params = [
                    {
                        "pk": e.pk,
                        "state": e.state,
                        "old": e.last_failure_reason,
                        "reason": stale_reason(e, query.threshold),
                        "marked_at": marked_at,
                        "cutoff": query.cutoff,
                    }
                    for e in chunk
                ]
                changed = transaction.execute_many(statement, params)
                done_pks = (
                    {e.pk for e in chunk}
                    if changed == len(chunk)
                    else _marked_pks(transaction, chunk, marked_at)
                )
                for entry, param in zip(chunk, params, strict=True):
                    if entry.pk in done_pks:
                        marked.append(entry)
                        reasons[entry.pk] = str(param["reason"])
                    else:
                        skipped.append(entry)
                done += len(chunk)
                if progress is not None:
                    progress(done)
    return MarkResult(
        marked_at=marked_at,
        marked=marked,
        skipped=skipped,
        released_claims=released,
        reasons=reasons,
    )


def _mark_statement(kind: StaleKind, query: StaleQuery, dialect: StaleDialect) -> str:
    """FAILED with the new reason, where the row is still as the report read it."""
    conditions = [
        "id = :pk",
        "state = :state",
        # The reason we append to must be the one we read: a newer one is never overwritten.
        f"last_failure_reason {dialect.null_safe_equal} CAST(:old AS VARCHAR)",
    ]
    if kind is not StaleKind.LEASE_EXPIRED:
        conditions.append(_touched_before(query, "phases"))
    if kind is not StaleKind.QUEUED and query.leases_checked:
        # lease_expired: its expired lease was just released; a renewed one is still there.
        conditions.append(_no_claim("phases"))
    return (
        f"UPDATE phases SET state = '{PhaseState.FAILED.value}', "
        "last_failure_reason = :reason, updated_at = :marked_at "
        f"WHERE {' AND '.join(conditions)}"
    )


def _release_expired(
    transaction: Transaction, chunk: Sequence[StalePhase], marked_at: datetime
) -> int:
    """Delete the still-expired leases of these phases; a renewed lease is kept."""
    statement = (
        f"DELETE FROM {CLAIMS} WHERE run_id = :run AND phase_id = :phase "
        "AND lease_expires_at < :marked_at"
    )
    params = [{"run": e.run_id, "phase": e.phase_id, "marked_at": marked_at} for e in chunk]
    return transaction.execute_many(statement, params)


def _marked_pks(
    transaction: Transaction, chunk: Sequence[StalePhase], marked_at: datetime
) -> set[int]:
    """Which rows of a chunk this transaction changed (asked only when some were skipped)."""
    names = [f":pk{index}" for index in range(len(chunk))]
    rows = transaction.all(
        f"SELECT id FROM phases WHERE id IN ({', '.join(names)}) "
        f"AND state = '{PhaseState.FAILED.value}' AND updated_at = :marked_at "
        f"AND substr(last_failure_reason, 1, {len(STALE_TAG)}) = '{STALE_TAG}'",
        {"marked_at": marked_at, **{name[1:]: e.pk for name, e in zip(names, chunk, strict=True)}},
    )
    return {int(pk) for (pk,) in rows}


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
