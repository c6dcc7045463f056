"""Which phase next: each run's head (lowest phase_index among eligible phases), ranked.

One aggregate query returns at most one phase per run, so selection stays cheap on a backlog of
thousands of runs. Ranking (lowest first): sample-first group (unsampled runs, then promising,
then deprioritised), attempts already made in this session, failure-reason bucket (unknown →
collection → deliverable → patch → other → timeout), phase index, run id.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from autopack.db.models import Phase, PhaseState, Run, table_of
from autopack.db.retry import retrying
from autopack.drain.claims import independent_clause, live_lease_runs
from autopack.drain.triage import BUCKET_ORDER, Limits, TriageState, failure_bucket, phase_key

PHASES = table_of(Phase)
RUNS = table_of(Run)


@dataclass(frozen=True)
class Candidate:
    run_id: str
    phase_id: str
    phase_index: int
    state: str
    last_failure_reason: str | None
    independent: bool
    phase_tokens_used: int
    incident_token_cap: int | None
    run_tokens_used: int
    run_token_cap: int | None

    @property
    def key(self) -> str:
        return phase_key(self.run_id, self.phase_id)

    @property
    def bucket(self) -> str:
        return failure_bucket(self.last_failure_reason)


@dataclass(frozen=True)
class Filters:
    states: tuple[str, ...]
    run_ids: tuple[str, ...] = ()
    skip_run_prefixes: tuple[str, ...] = ()
    ignore_order: bool = False
    """Let a phase run although an earlier phase of its run is not COMPLETE (--ignore-order)."""


class Verdict(Enum):
    PICK = "pick"
    WAIT = "wait"
    """Nothing can be taken now, but a phase remains behind a live claim: poll again."""
    DONE = "done"
    """Nothing remains that this session could ever take."""


@dataclass(frozen=True)
class Selection:
    verdict: Verdict
    candidate: Candidate | None = None
    skipped: dict[str, str] | None = None
    """Phases ruled out on the way (key → reason), e.g. an incident token cap reached."""
    stopped_runs: dict[str, str] | None = None
    """Runs found past their token cap (run → reason): the controller stops them."""


# A phase in one of these states no longer holds its run's later phases back.
FINISHED_STATES = (PhaseState.COMPLETE.value, PhaseState.SKIPPED.value)


def _run_filters(filters: Filters, exclude_runs: Collection[str]) -> list[sa.ColumnElement[bool]]:
    conditions: list[sa.ColumnElement[bool]] = []
    if filters.run_ids:
        conditions.append(PHASES.c.run_id.in_(filters.run_ids))
    for prefix in filters.skip_run_prefixes:
        conditions.append(sa.not_(PHASES.c.run_id.startswith(prefix, autoescape=True)))
    if exclude_runs:
        conditions.append(PHASES.c.run_id.not_in(list(exclude_runs)))
    return conditions


@retrying("read the backlog")
def head_candidates(
    engine: Engine,
    filters: Filters,
    *,
    exclude_runs: Collection[str],
    exclude_keys: Collection[tuple[str, str]],
    blocked: dict[str, str] | None = None,
    executing: set[str] | None = None,
) -> list[Candidate]:
    """Each run's head, when it is in a drained state: its lowest-index phase that is not
    finished (COMPLETE or SKIPPED). An independent phase neither waits nor holds the others
    back: when the lowest is one that is not drained, the run's head is looked up past it.
    With `ignore_order`, the lowest-index phase in a drained state instead. Phases in
    `exclude_keys` count as finished (in flight, or done in a dry run).

    `blocked`, when given, receives the runs whose head is in another state (run → why), and
    `executing` the runs whose head is EXECUTING (someone is on it: the run may wait)."""
    conditions = _run_filters(filters, exclude_runs)
    if exclude_keys:
        conditions.append(sa.tuple_(PHASES.c.run_id, PHASES.c.phase_id).not_in(list(exclude_keys)))
    drained: sa.ColumnElement[bool] = PHASES.c.state.in_(filters.states)
    # No JSON in the big query: a backlog of a million phases must not parse a million
    # scopes per selection. Independence is looked at on the heads only.
    in_line = drained if filters.ignore_order else PHASES.c.state.not_in(FINISHED_STATES)
    candidates: list[Candidate] = []
    with engine.connect() as connection:
        for row in _heads(connection, in_line, conditions):
            if (
                not filters.ignore_order
                and row.state not in filters.states
                and scope_is_independent(row.scope)
            ):
                past = _heads(
                    connection, _in_line_past_independent(drained), conditions, row.run_id
                )
                row = past[0] if past else None
                if row is None:
                    continue
            if row.state not in filters.states:
                if row.state == PhaseState.EXECUTING.value and executing is not None:
                    executing.add(row.run_id)
                elif blocked is not None:
                    blocked[row.run_id] = (
                        f"waits behind {row.phase_id} ({row.state}), an earlier phase that "
                        "is not COMPLETE (--ignore-order drains later phases anyway)"
                    )
                continue
            candidates.append(
                Candidate(
                    run_id=row.run_id,
                    phase_id=row.phase_id,
                    phase_index=row.phase_index or 0,
                    state=row.state,
                    last_failure_reason=row.last_failure_reason,
                    independent=scope_is_independent(row.scope),
                    phase_tokens_used=row.tokens_used or 0,
                    incident_token_cap=row.incident_token_cap,
                    run_tokens_used=row.run_tokens_used or 0,
                    run_token_cap=row.run_token_cap,
                )
            )
    return candidates


def _in_line_past_independent(drained: sa.ColumnElement[bool]) -> sa.ColumnElement[bool]:
    """Phases that hold a run's line: unfinished dependent ones, and drained independent
    ones (which may go now). Parses scopes: used for one run at a time."""
    independent = independent_clause(PHASES.c.scope)
    return sa.or_(
        sa.and_(PHASES.c.state.not_in(FINISHED_STATES), sa.not_(independent)),
        sa.and_(drained, independent),
    )


def _heads(
    connection: sa.Connection,
    in_line: sa.ColumnElement[bool],
    conditions: list[sa.ColumnElement[bool]],
    run_id: str | None = None,
) -> list[Any]:
    """Per run, the lowest-index phase matching `in_line` (ties: lowest phase_id)."""
    where = [in_line, *conditions]
    if run_id is not None:
        where.append(PHASES.c.run_id == run_id)
    heads = (
        sa.select(PHASES.c.run_id, sa.func.min(PHASES.c.phase_index).label("head_index"))
        .where(*where)
        .group_by(PHASES.c.run_id)
        .subquery("heads")
    )
    query = (
        sa.select(
            PHASES.c.run_id,
            PHASES.c.phase_id,
            PHASES.c.phase_index,
            PHASES.c.state,
            PHASES.c.last_failure_reason,
            PHASES.c.scope,
            PHASES.c.tokens_used,
            PHASES.c.incident_token_cap,
            RUNS.c.tokens_used.label("run_tokens_used"),
            RUNS.c.token_cap.label("run_token_cap"),
        )
        .join(
            heads,
            sa.and_(PHASES.c.run_id == heads.c.run_id, PHASES.c.phase_index == heads.c.head_index),
        )
        .join(RUNS, RUNS.c.id == PHASES.c.run_id)
        .where(*where)
        .order_by(PHASES.c.run_id, PHASES.c.phase_id)
    )
    first: dict[str, Any] = {}
    for row in connection.execute(query):
        first.setdefault(row.run_id, row)
    return list(first.values())


def unfinished_predecessors(
    connection: sa.Connection, run_id: str, phase_index: int
) -> list[tuple[str, str]]:
    """Earlier phases of the run (not independent) that are not finished: (phase_id, state)."""
    rows = connection.execute(
        sa.select(PHASES.c.phase_id, PHASES.c.state)
        .where(
            PHASES.c.run_id == run_id,
            PHASES.c.phase_index < phase_index,
            PHASES.c.state.not_in(FINISHED_STATES),
            sa.not_(independent_clause(PHASES.c.scope)),
        )
        .order_by(PHASES.c.phase_index)
    ).all()
    return [(row.phase_id, row.state) for row in rows]


def scope_is_independent(scope: Any) -> bool:
    return isinstance(scope, dict) and scope.get("independent") is True


@retrying("read which runs are busy")
def busy_runs(engine: Engine, run_ids: Sequence[str], *, leases: bool = True) -> dict[str, bool]:
    """Runs with an EXECUTING phase → whether someone holds it under a live lease.

    An EXECUTING phase without a live lease belongs to a dead worker or the original tool:
    its run is blocked until `triage stale` recovers it, so it is not worth waiting for.
    """
    if not run_ids:
        return {}
    with engine.connect() as connection:
        executing = {
            row[0]
            for row in connection.execute(
                sa.select(PHASES.c.run_id)
                .where(
                    PHASES.c.state == PhaseState.EXECUTING.value,
                    PHASES.c.run_id.in_(list(run_ids)),
                )
                .distinct()
            )
        }
    if not executing:
        return {}
    live = live_lease_runs(engine) if leases else set()
    return {run_id: run_id in live for run_id in executing}


def rank(candidate: Candidate, state: TriageState, limits: Limits) -> tuple[Any, ...]:
    return (
        state.group(candidate.run_id, limits),
        state.attempts(candidate.run_id, candidate.phase_id),
        BUCKET_ORDER.index(candidate.bucket),
        candidate.phase_index,
        candidate.run_id,
    )


def select_next(
    engine: Engine,
    filters: Filters,
    state: TriageState,
    limits: Limits,
    *,
    in_flight_runs: Collection[str],
    done_keys: Collection[tuple[str, str]] = (),
    cooldown_keys: Collection[tuple[str, str]] = (),
    blocked: dict[str, str] | None = None,
    leases: bool = True,
) -> Selection:
    """The next phase to drain, or whether to wait or stop.

    A run's head is its lowest-index phase that is not finished (see `head_candidates`); a
    run whose head is in a state not drained waits (`blocked` says why). Phases in
    `done_keys` (a dry run's selections) and phases skipped for their incident token cap are
    passed over, so the run
    moves on; a head that used up its attempts stops its run instead (its later phases build
    on it), and a head in `cooldown_keys` (just lost to another worker) makes the run wait.
    """
    exhausted = {
        (run_id, phase_id)
        for key, count in state.phase_attempts.items()
        if count >= limits.max_attempts_per_phase
        for run_id, phase_id in [key.split("\x1f", 1)]
    }
    passed_over = {(a, b) for a, b in (k.split("\x1f", 1) for k in state.skipped_phases)}
    passed_over |= set(done_keys)
    skipped: dict[str, str] = {}
    while True:
        executing: set[str] = set()
        candidates = head_candidates(
            engine,
            filters,
            exclude_runs=state.stopped_runs.keys(),
            exclude_keys=passed_over,
            blocked=blocked,
            executing=executing,
        )
        capped = [
            c
            for c in candidates
            if c.incident_token_cap is not None and c.phase_tokens_used >= c.incident_token_cap
        ]
        if not capped:
            break
        # A phase past its incident token cap is not spent on again; its run moves on.
        for c in capped:
            reason = (
                f"incident token cap {c.incident_token_cap:,} reached ({c.phase_tokens_used:,})"
            )
            skipped[c.key] = reason
            passed_over.add((c.run_id, c.phase_id))
    stopped = token_capped_runs(candidates)
    for c in candidates:
        if (c.run_id, c.phase_id) in exhausted and c.run_id not in stopped:
            stopped[c.run_id] = (
                f"phase {c.phase_id} used its {limits.max_attempts_per_phase} attempt(s); "
                "the run's later phases wait behind it"
            )
    candidates = [c for c in candidates if c.run_id not in stopped]
    busy = busy_runs(engine, [c.run_id for c in candidates if not c.independent], leases=leases)
    cooling = set(cooldown_keys)
    takeable: list[Candidate] = []
    # A run whose head another worker is executing goes on once that phase is done.
    waiting = any(busy_runs(engine, sorted(executing), leases=leases).values())
    for candidate in candidates:
        if (candidate.run_id, candidate.phase_id) in cooling:
            waiting = True
            continue
        if not candidate.independent and (
            candidate.run_id in in_flight_runs or candidate.run_id in busy
        ):
            waiting = waiting or candidate.run_id in in_flight_runs or busy[candidate.run_id]
            continue
        takeable.append(candidate)
    if takeable:
        best = min(takeable, key=lambda c: rank(c, state, limits))
        return Selection(Verdict.PICK, best, skipped or None, stopped or None)
    verdict = Verdict.WAIT if waiting else Verdict.DONE
    return Selection(verdict, None, skipped or None, stopped or None)


def token_capped_runs(candidates: Sequence[Candidate]) -> dict[str, str]:
    return {
        c.run_id: f"run token cap {c.run_token_cap:,} reached ({c.run_tokens_used:,} used)"
        for c in candidates
        if c.run_token_cap is not None and c.run_tokens_used >= c.run_token_cap
    }
