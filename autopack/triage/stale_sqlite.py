"""Stale triage on a SQLite file, through sqlite3 itself: no SQLAlchemy, rows in index order.

The same rows, in the same order, with the same values as the SQLAlchemy statements of
autopack.triage.stale_portable (tests compare the two), but:

- the stale list is one compound SELECT whose branches each come in index order
  (`ix_phases_state_run_updated`: state, run_id, updated_at, phase_id), merged by SQLite: no
  sort of the whole backlog, and the first screenful costs nothing;
- for `--json`, SQLite writes each entry's text (`entry_document`, encoded as Python's json
  would), so Python only passes strings on. A timestamp not in SQLAlchemy's storage form
  (`YYYY-MM-DD HH:MM:SS[.ffffff]`) gets no text from SQLite; that entry alone is read again and
  encoded in Python, like every entry on PostgreSQL. A long list is read in two halves at
  once, the second by a forked child process (json_batches), to use a second core.

Timestamps are compared as the text SQLAlchemy stores and binds, exactly as the portable path
compares them. `age_minutes` is computed in whole microseconds (integers, never floats).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, NoReturn

from autopack.db.names import PhaseState
from autopack.triage.stale import (
    STREAM_ROWS,
    StaleKind,
    StalePhase,
    StaleQuery,
    StaleTally,
    age_minutes,
    encode_entry,
    naive_utc,
)

CLAIMS = "autopack_phase_claims"
SPLIT_FROM = 20_000
"""Rows of a list from which `--json` reads it in two halves at once (one per core)."""
_CAN_FORK = sys.platform == "linux"
"""A forked child runs only sqlite3 and plain Python, which is safe after fork on Linux."""
_FIRST, _SECOND = " AND p.run_id < :pivot", " AND p.run_id >= :pivot"
_CHUNK_CHARACTERS = 1 << 20
"""Read back from the child's file at a time (one text per line)."""
_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)

# unixepoch() is exact integer seconds (SQLite 3.38+); strftime('%s') is its older spelling.
_EPOCH_SECONDS = (
    "unixepoch({})"
    if sqlite3.sqlite_version_info >= (3, 38, 0)
    else "CAST(strftime('%s', {}) AS INTEGER)"
)


@dataclass(frozen=True)
class _Branch:
    """One SELECT of the stale (or unleased) list: its kind, rows and timestamps, as SQL."""

    kind: StaleKind
    state: str
    source: str
    """FROM … WHERE …, with `p` the phase (and `c` its claim)."""
    last: str
    worker: str = "NULL"
    session: str = "NULL"
    expires: str = "NULL"


def _touched_before(query: StaleQuery, phase: str = "p") -> str:
    """Last touched before the cutoff, as stale_portable writes it (an index serves it)."""
    before = f"{phase}.updated_at < :cutoff"
    if not query.updated_at_nullable:
        return before
    return f"({before} OR ({phase}.updated_at IS NULL AND {phase}.created_at < :cutoff))"


def _branches(query: StaleQuery, *, unleased: bool) -> list[_Branch]:
    last = "coalesce(p.updated_at, p.created_at)" if query.updated_at_nullable else "p.updated_at"
    touched = _touched_before(query)
    if unleased:
        unclaimed = (
            f" AND NOT EXISTS (SELECT 1 FROM {CLAIMS} c WHERE c.run_id = p.run_id "
            "AND c.phase_id = p.phase_id)"
            if query.leases_checked
            else ""
        )
        executing = PhaseState.EXECUTING.value
        source = f"FROM phases p WHERE p.state = '{executing}' AND {touched}{unclaimed}"
        return [_Branch(StaleKind.UNLEASED, executing, source, last)]
    queued = PhaseState.QUEUED.value
    branches = [
        _Branch(
            StaleKind.QUEUED,
            queued,
            f"FROM phases p WHERE p.state = '{queued}' AND {touched}",
            last,
        )
    ]
    if query.leases_checked:
        executing = PhaseState.EXECUTING.value
        source = (
            f"FROM phases p JOIN {CLAIMS} c ON c.run_id = p.run_id AND c.phase_id = p.phase_id "
            f"WHERE p.state = '{executing}' AND c.lease_expires_at < :now"
        )
        branches.append(
            _Branch(
                StaleKind.LEASE_EXPIRED,
                executing,
                source,
                "c.heartbeat_at",
                "c.worker",
                "c.session_id",
                "c.lease_expires_at",
            )
        )
    return branches


def _listing(branches: list[_Branch], columns: Callable[[_Branch], str], *, limit: bool) -> str:
    """The branches' rows in report order: runs in order, oldest first, then phase_id.

    Every row starts with its run_id. One branch is ordered by its own expressions (the index
    gives that order). Several make a compound SELECT ordered by its result columns, which
    SQLite merges from the branches' ordered rows; their rows start with the three keys and
    the kind.
    """
    if len(branches) == 1:
        (branch,) = branches
        sql = (
            f"SELECT p.run_id AS k_run, {columns(branch)} {branch.source} "
            f"ORDER BY p.run_id, {branch.last}, p.phase_id"
        )
    else:
        sql = " UNION ALL ".join(
            f"SELECT p.run_id AS k_run, {branch.last} AS k_last, p.phase_id AS k_phase, "
            f"'{branch.kind.value}' AS k_kind, {columns(branch)} {branch.source}"
            for branch in branches
        )
        sql += " ORDER BY k_run, k_last, k_phase"
    return sql + (" LIMIT :limit" if limit else "")


def _raw_columns(branch: _Branch) -> str:
    """The columns of a StalePhase (without its age, computed in Python)."""
    return (
        f"p.id, p.run_id, p.phase_id, p.state, p.last_failure_reason, '{branch.kind.value}', "
        f"{branch.last}, {branch.worker}, {branch.session}, {branch.expires}"
    )


def _text_column(branch: _Branch) -> str:
    """The entry's text; where SQLite writes none, NUL and the phase's id (json_batches)."""
    return f"coalesce({_entry_text(branch)}, char(0) || p.id)"


def _params(query: StaleQuery, **extra: Any) -> dict[str, Any]:
    return {
        "cutoff": _stored(query.cutoff),
        "now": _stored(query.now),
        "now_us": (query.now - _EPOCH) // _MICROSECOND,
        **extra,
    }


def _stored(value: datetime) -> str:
    """A naive UTC datetime as SQLAlchemy's SQLite DateTime binds (and stores) it."""
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d} "
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}"
    )


@contextmanager
def snapshot(connection: sqlite3.Connection) -> Iterator[None]:
    """One read transaction: every statement inside sees the same state of the DB (inside
    another one, that one)."""
    if connection.in_transaction:
        yield
        return
    connection.execute("BEGIN")
    try:
        yield
    finally:
        connection.execute("COMMIT")


def _present(connection: sqlite3.Connection, query: StaleQuery, *, unleased: bool) -> list[_Branch]:
    """The branches that have rows: the lease_expired one is dropped when it has none.

    Expired leases are rare, and a compound SELECT costs far more per row than one branch
    read straight from the index. Call it inside the snapshot that reads the rows.
    """
    branches = _branches(query, unleased=unleased)
    present = [branches[0]]
    for branch in branches[1:]:
        (found,) = connection.execute(
            f"SELECT EXISTS (SELECT 1 {branch.source})", _params(query)
        ).fetchone()
        if found:
            present.append(branch)
    return present


def iter_stale(
    connection: sqlite3.Connection,
    query: StaleQuery,
    *,
    unleased: bool = False,
    limit: int | None = None,
) -> Iterator[StalePhase]:
    """See autopack.triage.stale.iter_stale."""
    names: dict[str, str] = {}  # one string per run, not one per phase
    with snapshot(connection):
        branches = _present(connection, query, unleased=unleased)
        sql = _listing(branches, _raw_columns, limit=limit is not None)
        with closing(connection.execute(sql, _params(query, limit=limit))) as cursor:
            while rows := cursor.fetchmany(STREAM_ROWS):
                for row in rows:
                    yield _entry(row[-10:], query.now, names)


def _entry(row: tuple[Any, ...], now: datetime, names: dict[str, str]) -> StalePhase:
    pk, run_id, phase_id, state, reason, kind, last, worker, session, expires = row
    # As SQLAlchemy reads a SQLite DateTime: datetime.fromisoformat of the stored text.
    last = naive_utc(datetime.fromisoformat(last))
    return StalePhase(
        pk,
        names.setdefault(run_id, run_id),
        phase_id,
        state,
        StaleKind(kind),
        last,
        age_minutes(last, now),
        reason,
        worker,
        session,
        None if expires is None else naive_utc(datetime.fromisoformat(expires)),
    )


def summarize(
    connection: sqlite3.Connection,
    query: StaleQuery,
    *,
    unleased: bool = False,
    keep: int | None = None,
) -> StaleTally:
    """See autopack.triage.stale.summarize_stale: one aggregate per branch, then the rows."""
    params = _params(query)
    tally = StaleTally(keep=keep)
    for index, branch in enumerate(_branches(query, unleased=unleased)):  # each counted
        runs = "count(DISTINCT p.run_id)"
        if index:  # lease_expired: a run counts once, so only runs without a stale QUEUED phase
            queued_in_run = (
                f"SELECT 1 FROM phases q WHERE q.state = '{PhaseState.QUEUED.value}' "
                f"AND q.run_id = p.run_id AND {_touched_before(query, 'q')}"
            )
            runs = f"count(DISTINCT CASE WHEN NOT EXISTS ({queued_in_run}) THEN p.run_id END)"
        count, new_runs = connection.execute(
            f"SELECT count(*), {runs} {branch.source}", params
        ).fetchone()
        if count:
            tally.count += count
            tally.runs += new_runs
            tally.by_kind[branch.kind] = count
    if tally.count and keep != 0:
        tally.kept = list(iter_stale(connection, query, unleased=unleased, limit=keep))
    return tally


def json_batches(
    connection: sqlite3.Connection,
    query: StaleQuery,
    tally: StaleTally,
    *,
    unleased: bool,
    connect: Callable[[], sqlite3.Connection | None] | None = None,
) -> Iterator[list[str]]:
    """See autopack.triage.stale.stale_json: the entries' texts, counted into `tally`.

    A long list (SPLIT_FROM rows or more) is read in two halves at once where `connect` gives
    another connection and the OS can fork: a child process writes the second half's texts
    to a temporary file while this one streams the first (see _SecondHalf). The two halves
    are two read transactions, begun a moment apart.
    """
    forks = connect is not None and _CAN_FORK
    pivot = _pivot(connection, query, unleased=unleased) if forks else None
    second = None
    if connect is not None and pivot is not None:
        try:
            second = _SecondHalf(connect, query, unleased=unleased, pivot=pivot)
        except OSError:  # no process to spare (fork refused): all of it is read here
            second = None
    if second is None:
        yield from _texts(connection, query, tally, unleased=unleased)
        return
    try:
        yield from _texts(connection, query, tally, unleased=unleased, before=pivot)
        yield from second.texts(tally, connection)
    finally:
        second.close()


def _pivot(connection: sqlite3.Connection, query: StaleQuery, *, unleased: bool) -> str | None:
    """The run_id splitting a long list in two (its runs before it, and the rest); None for a
    list shorter than SPLIT_FROM. The runs are halved, not the rows: close enough."""
    (first, *_rest) = _branches(query, unleased=unleased)
    (rows,) = connection.execute(
        f"SELECT count(*) FROM (SELECT 1 {first.source} LIMIT :limit)",
        _params(query, limit=SPLIT_FROM),
    ).fetchone()
    if rows < SPLIT_FROM:
        return None
    row = connection.execute(
        "SELECT id FROM runs ORDER BY id LIMIT 1 OFFSET (SELECT count(*) / 2 FROM runs)"
    ).fetchone()
    return None if row is None else str(row[0])


def _texts(
    connection: sqlite3.Connection,
    query: StaleQuery,
    tally: StaleTally,
    *,
    unleased: bool,
    before: str | None = None,
    after: str | None = None,
) -> Iterator[list[str]]:
    """The entries' texts (runs before `before`, or from `after` on), counted into `tally`.

    Python touches each row as little as it can (whole batches at a time): on a large backlog
    the rows are the whole cost of the command.
    """
    runs = _FIRST if before is not None else _SECOND if after is not None else ""
    last_run: str | None = None
    with snapshot(connection):
        branches = [
            replace(branch, source=branch.source + runs)
            for branch in _present(connection, query, unleased=unleased)
        ]
        merged = len(branches) > 1  # then each row tells its kind (see _listing)
        sql = _listing(branches, _text_column, limit=False)
        params = _params(query, pivot=before if before is not None else after)
        with closing(connection.execute(sql, params)) as cursor:
            while rows := cursor.fetchmany(STREAM_ROWS):
                columns = list(zip(*rows, strict=True))  # in C: no Python loop per row
                run_ids, texts = columns[0], list(columns[-1])
                kinds = (
                    [StaleKind(kind) for kind in columns[3]]
                    if merged
                    else [branches[0].kind] * len(rows)
                )
                if min(texts)[0] != "{":  # every text starts with "{"; a NUL sorts first
                    texts = [
                        _encoded_alone(connection, query, int(text[1:]), kind)
                        if text[0] == "\0"
                        else text
                        for text, kind in zip(texts, kinds, strict=True)
                    ]
                # A run's rows come together, so its first row may end the batch before.
                tally.runs += len(set(run_ids)) - (run_ids[0] == last_run)
                last_run = run_ids[-1]
                tally.count += len(rows)
                for kind, n in Counter(kinds).items():
                    tally.by_kind[kind] = tally.by_kind.get(kind, 0) + n
                yield texts


class _SecondHalf:
    """The second half of a long list, read by a forked child process into a temporary file.

    The child opens its own connection (a SQLite connection never crosses a fork), writes one
    text per line, then its tally (JSON) on a pipe, and leaves with os._exit: nothing of the
    parent's (buffered stdout, atexit) runs twice. Should it fail in any way, the parent reads
    the half itself, so an error is reported as on one process.
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection | None],
        query: StaleQuery,
        *,
        unleased: bool,
        pivot: str,
    ) -> None:
        self._query, self._unleased, self._pivot = query, unleased, pivot
        # Open for the object's life (closed by close()), shared with the child by the fork.
        self._file = tempfile.TemporaryFile("w+", encoding="utf-8", newline="\n")  # noqa: SIM115
        self._read, write = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            self._pid: int | None = os.fork()
        except OSError:
            os.close(write)
            self._pid = None
            self.close()
            raise
        if self._pid == 0:
            os.close(self._read)
            self._child(connect, write)
        os.close(write)

    def _child(self, connect: Callable[[], sqlite3.Connection | None], write: int) -> NoReturn:
        code = 1
        try:
            tally = StaleTally(keep=0)
            connection = connect()
            assert connection is not None
            with closing(connection):
                for texts in _texts(
                    connection, self._query, tally, unleased=self._unleased, after=self._pivot
                ):
                    self._file.write("\n".join(texts))
                    self._file.write("\n")  # apart: a joined copy of a whole batch costs
            self._file.flush()
            counts = {kind.value: n for kind, n in tally.by_kind.items()}
            os.write(write, json.dumps([tally.count, tally.runs, counts]).encode())
            code = 0
        finally:  # whatever happened (an error, ^C): the parent reads the half itself
            os._exit(code)

    def texts(self, tally: StaleTally, connection: sqlite3.Connection) -> Iterator[list[str]]:
        """The half's texts, counted into `tally`: the child's, or read here if it failed."""
        assert self._pid is not None
        _pid, status = os.waitpid(self._pid, 0)
        self._pid = None
        with os.fdopen(self._read, "rb") as pipe:
            self._read = -1
            report = pipe.read()
        if status != 0 or not report:
            yield from _texts(
                connection, self._query, tally, unleased=self._unleased, after=self._pivot
            )
            return
        count, runs, counts = json.loads(report)
        self._file.seek(0)
        partial = ""  # a text cut by the end of a chunk: it ends in the next one
        while chunk := self._file.read(_CHUNK_CHARACTERS):
            texts = (partial + chunk).split("\n")
            partial = texts.pop()
            if texts:
                yield texts
        tally.count += count
        tally.runs += runs
        for kind, n in counts.items():
            tally.by_kind[StaleKind(kind)] = tally.by_kind.get(StaleKind(kind), 0) + n

    def close(self) -> None:
        """Stop a child still running (the parent stopped early) and free what it used."""
        if self._pid is not None:
            os.kill(self._pid, signal.SIGKILL)
            os.waitpid(self._pid, 0)
            self._pid = None
        if self._read >= 0:
            os.close(self._read)
            self._read = -1
        self._file.close()


def _encoded_alone(
    connection: sqlite3.Connection, query: StaleQuery, pk: int, kind: StaleKind
) -> str:
    """The entry of phase `pk`, read again on its own and encoded in Python (its timestamps
    are not in the form SQLite's text is written for). Same connection: same snapshot."""
    (branch,) = [b for b in _branches(query, unleased=kind is StaleKind.UNLEASED) if b.kind is kind]
    sql = f"SELECT {_raw_columns(branch)} {branch.source} AND p.id = :pk"
    row = connection.execute(sql, _params(query, pk=pk)).fetchone()
    return encode_entry(_entry(row, query.now, {}))


def _entry_text(branch: _Branch) -> str:
    """SQL for the entry's JSON text, as encode_entry writes it; NULL for an unusual timestamp.

    Strings go through json_quote: the same escapes as Python's json, except that it writes
    non-ASCII characters as they are (the document writer escapes those). Literal parts are
    joined here: every `||` left to SQLite copies the text built so far, for every row.
    """
    # The last activity's age is NULL (and so the text) unless SQLite reads the whole stamp;
    # the lease's end, written as it is, is checked in full.
    usual = _usual(branch.last)
    if branch.expires != "NULL":
        expires_seconds = _EPOCH_SECONDS.format(f"substr({branch.expires}, 1, 19)")
        usual += (
            f" AND {_usual(branch.expires)} AND ({_microseconds(branch.expires)}) IS NOT NULL "
            f"AND {expires_seconds} IS NOT NULL"
        )
    parts: list[_Part] = [
        _Literal('{"run_id": '),
        "json_quote(p.run_id)",
        _Literal(', "phase_id": '),
        "json_quote(p.phase_id)",
        _Literal(f', "state": "{branch.state}", "kind": "{branch.kind.value}", "age_minutes": '),
        _age(branch.last),
        _Literal(', "last_activity": "'),
        _iso_in_utc(branch.last),
        _Literal('+00:00", "last_failure_reason": '),
        "json_quote(p.last_failure_reason)",
        _Literal(', "worker": '),
        _Literal("null") if branch.worker == "NULL" else f"json_quote({branch.worker})",
        _Literal(', "session_id": '),
        _Literal("null") if branch.session == "NULL" else f"json_quote({branch.session})",
        _Literal(', "lease_expires_at": '),
        *(
            [_Literal("null")]
            if branch.expires == "NULL"
            else [_Literal('"'), _iso_in_utc(branch.expires), _Literal('+00:00"')]
        ),
        _Literal(', "marked": false, "new_reason": null}'),
    ]
    return f"CASE WHEN {usual} THEN {_concatenated(parts)} END"


class _Literal(str):
    """A constant part of a text built in SQL (a plain str part is an SQL expression)."""


_Part = _Literal | str


def _concatenated(parts: list[_Part]) -> str:
    """`a || b || …`, adjacent literals joined into one SQL string literal."""
    merged: list[_Part] = []
    for part in parts:
        if isinstance(part, _Literal) and merged and isinstance(merged[-1], _Literal):
            merged[-1] = _Literal(merged[-1] + part)
        else:
            merged.append(part)
    return " || ".join(
        "'" + part.replace("'", "''") + "'" if isinstance(part, _Literal) else f"({part})"
        for part in merged
    )


def _usual(stamp: str) -> str:
    """`stamp` looks like SQLAlchemy's storage form, `YYYY-MM-DD HH:MM:SS[.ffffff]`."""
    return f"{stamp} LIKE '____-__-__ __:__:__%'"


def _microseconds(stamp: str) -> str:
    """The fraction of `YYYY-MM-DD HH:MM:SS[.ffffff]` in microseconds; NULL for another form."""
    return (
        f"CASE length({stamp}) WHEN 19 THEN 0 WHEN 26 THEN CASE WHEN substr({stamp}, 20, 1) = '.' "
        f"AND substr({stamp}, 21) GLOB '[0-9][0-9][0-9][0-9][0-9][0-9]' "
        f"THEN CAST(substr({stamp}, 21) AS INTEGER) END END"
    )


def _age(stamp: str) -> str:
    """Whole minutes from `stamp` to :now_us (rounded down; 0 if later), in integers.

    NULL when the stamp is no date and time SQLite reads (and so is the entry's text).
    """
    seconds = _EPOCH_SECONDS.format(f"substr({stamp}, 1, 19)")
    return f"max(:now_us - ({seconds} * 1000000 + {_microseconds(stamp)}), 0) / 60000000"


def _iso_in_utc(stamp: str) -> str:
    """`YYYY-MM-DDTHH:MM:SS[.ffffff]` (then `+00:00`), as datetime.isoformat writes it: no
    fraction when it is zero."""
    keep = f"CASE WHEN length({stamp}) = 26 AND substr({stamp}, 21) <> '000000' THEN 26 ELSE 19 END"
    return f"replace(substr({stamp}, 1, {keep}), ' ', 'T')"
