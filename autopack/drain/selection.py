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
from autopack.drain.claims import live_lease_runs
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


def _eligible(filters: Filters, exclude_runs: Collection[str]) -> list[sa.ColumnElement[bool]]:
    conditions: list[sa.ColumnElement[bool]] = [PHASES.c.state.in_(filters.states)]
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
) -> list[Candidate]:
    """Each eligible run's lowest-index eligible phase (ties: lowest phase_id)."""
    conditions = _eligible(filters, exclude_runs)
    if exclude_keys:
        conditions.append(sa.tuple_(PHASES.c.run_id, PHASES.c.phase_id).not_in(list(exclude_keys)))
    heads = (
        sa.select(PHASES.c.run_id, sa.func.min(PHASES.c.phase_index).label("head_index"))
        .where(*conditions)
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
        .where(*conditions)
        .order_by(PHASES.c.run_id, PHASES.c.phase_id)
    )
    seen: set[str] = set()
    candidates: list[Candidate] = []
    with engine.connect() as connection:
        for row in connection.execute(query):
            if row.run_id in seen:
                continue
            seen.add(row.run_id)
            candidates.append(
                Candidate(
                    run_id=row.run_id,
                    phase_id=row.phase_id,
                    phase_index=row.phase_index or 0,
                    state=row.state,
                    last_failure_reason=row.last_failure_reason,
                    independent=_is_independent(row.scope),
                    phase_tokens_used=row.tokens_used or 0,
                    incident_token_cap=row.incident_token_cap,
                    run_tokens_used=row.run_tokens_used or 0,
                    run_token_cap=row.run_token_cap,
                )
            )
    return candidates


def _is_independent(scope: Any) -> bool:
    return isinstance(scope, dict) and scope.get("independent") is True


@retrying("read which runs are busy")
def busy_runs(engine: Engine, run_ids: Sequence[str]) -> dict[str, bool]:
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
    live = live_lease_runs(engine)
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
) -> Selection:
    """The next phase to drain, or whether to wait or stop.

    A run's head is its lowest-index eligible phase. Phases in `done_keys` (a dry run's
    selections) and phases skipped for their incident token cap are passed over, so the run
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
        candidates = head_candidates(
            engine, filters, exclude_runs=state.stopped_runs.keys(), exclude_keys=passed_over
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
    busy = busy_runs(engine, [c.run_id for c in candidates if not c.independent])
    cooling = set(cooldown_keys)
    takeable: list[Candidate] = []
    waiting = False
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
