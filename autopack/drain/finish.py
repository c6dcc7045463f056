"""Ending one phase attempt in ONE transaction: state, result, claim, telemetry link, run state.

A kill -9 between "the phase is COMPLETE" and "its result is recorded" used to leave a COMPLETE
phase without a result (issue 11, D3). Here the claim release, the phase's new state (or its
return, untouched, to the state it had), the drain result row, the link from the attempt's
telemetry rows to that result, and the run's and tier's state moves commit together, or not at
all. The telemetry rows themselves were committed earlier, as soon as each reply arrived.

Results are numbered (`seq`) and handed to `on_recorded` under one lock, so the controller
folds them in the order they were recorded and a resumed session replays the same state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from autopack.db.models import (
    DrainResult,
    DrainSession,
    Phase,
    PhaseState,
    Run,
    RunState,
    TelemetryProvenance,
    Tier,
    TierState,
    table_of,
    utc_now,
)
from autopack.db.retry import run_retrying
from autopack.drain.attempt import PhaseOutcome
from autopack.drain.claims import Claim, release_claim, return_phase
from autopack.drain.sessions import SEQ_LOCK, next_seq

PHASES = table_of(Phase)
RUNS = table_of(Run)
TIERS = table_of(Tier)
RESULTS = table_of(DrainResult)
SESSIONS = table_of(DrainSession)
PROVENANCE = table_of(TelemetryProvenance)

# The same form `triage stale` uses, so a reason's history reads alike whoever wrote it.
PREVIOUS_SEPARATOR = "; previous: "
# A reason that keeps its predecessors must not grow without bound over many attempts.
MAX_REASON_CHARS = 4000

# The run states the drain moves (original_spec §2.1); any other state is left alone.
_DRAINABLE_RUN_STATES = (
    RunState.QUEUED.value,
    RunState.RUN_CREATED.value,
    RunState.PHASE_QUEUEING.value,
    RunState.PHASE_EXECUTION.value,
)


def with_previous(reason: str, previous: str | None) -> str:
    """The new failure reason, keeping the old one after it (never silently overwritten)."""
    if not previous or previous == reason or previous.startswith(reason + PREVIOUS_SEPARATOR):
        return reason[:MAX_REASON_CHARS]
    return (reason + PREVIOUS_SEPARATOR + previous)[:MAX_REASON_CHARS]


def finish_attempt(
    engine: Engine,
    session_id: str,
    outcome: PhaseOutcome,
    claim: Claim | None,
    *,
    give_back: bool = False,
    on_recorded: Callable[[PhaseOutcome], None] | None = None,
) -> bool:
    """Release the claim, set the phase's state and record the result, atomically.

    `give_back`: the attempt said nothing about the phase (a provider outage): it returns to
    the state it had, with its timestamps and failure reason as they were. Returns False, and
    records nothing, when `claim` is no longer held (its lease expired and the phase was
    recovered, or the controller abandoned the attempt).
    """
    with SEQ_LOCK:
        # One transaction, retried as a whole when the DB is busy or the connection is cut
        # (a cut rolls it all back; a retry after a commit that did land finds no claim).
        recorded = run_retrying(
            lambda: _record(engine, session_id, outcome, claim, give_back=give_back),
            what="record the phase's result",
        )
        if recorded and on_recorded is not None:
            on_recorded(outcome)
    return recorded


def _record(
    engine: Engine,
    session_id: str,
    outcome: PhaseOutcome,
    claim: Claim | None,
    *,
    give_back: bool,
) -> bool:
    with engine.begin() as connection:
        if claim is not None:
            if not release_claim(connection, claim.run_id, claim.phase_id, claim.worker):
                return False
            if give_back:
                return_phase(
                    connection,
                    claim.run_id,
                    claim.phase_id,
                    claim.previous_state,
                    claim.previous_values,
                )
            else:
                _set_final_state(connection, claim, outcome)
                move_run_state(connection, claim.run_id)
        outcome.result_id = _insert_result(connection, session_id, outcome.result_values())
        link_telemetry(connection, outcome.event_ids, outcome.result_id)
    return True


def _set_final_state(connection: sa.Connection, claim: Claim, outcome: PhaseOutcome) -> None:
    now = utc_now()
    final = PhaseState(outcome.final_state or PhaseState.FAILED.value)
    tokens = outcome.input_tokens + outcome.output_tokens
    values: dict[str, object] = {
        "state": final.value,
        "updated_at": now,
        "builder_attempts": PHASES.c.builder_attempts + outcome.llm_calls,
        "tokens_used": PHASES.c.tokens_used + tokens,
    }
    if final is PhaseState.COMPLETE:
        values["completed_at"] = now
    if outcome.failure_reason is not None:
        previous = connection.execute(
            sa.select(PHASES.c.last_failure_reason).where(
                PHASES.c.run_id == claim.run_id, PHASES.c.phase_id == claim.phase_id
            )
        ).scalar_one_or_none()
        values["last_failure_reason"] = with_previous(outcome.failure_reason, previous)
    connection.execute(
        sa.update(PHASES)
        .where(
            PHASES.c.run_id == claim.run_id,
            PHASES.c.phase_id == claim.phase_id,
            PHASES.c.state == PhaseState.EXECUTING.value,
        )
        .values(**values)
    )
    if tokens:
        connection.execute(
            sa.update(RUNS)
            .where(RUNS.c.id == claim.run_id)
            .values(tokens_used=RUNS.c.tokens_used + tokens)
        )


def move_run_state(connection: sa.Connection, run_id: str) -> None:
    """The run and its tiers follow their phases: PHASE_EXECUTION / IN_PROGRESS while any
    phase is not COMPLETE, DONE_SUCCESS / COMPLETE once all are. Runs in any other state
    (a gate, CI, a DONE_FAILED_… verdict) and tiers marked FAILED or SKIPPED are left alone."""
    complete = PhaseState.COMPLETE.value
    remaining = connection.execute(
        sa.select(PHASES.c.tier_id, sa.func.count().filter(PHASES.c.state != complete))
        .where(PHASES.c.run_id == run_id)
        .group_by(PHASES.c.tier_id)
    ).all()
    if not remaining:
        return
    now = utc_now()
    all_done = all(left == 0 for _, left in remaining)
    run_state = RunState.DONE_SUCCESS if all_done else RunState.PHASE_EXECUTION
    run_values: dict[str, object] = {"state": run_state.value, "updated_at": now}
    if all_done:
        run_values["completed_at"] = now
    connection.execute(
        sa.update(RUNS)
        .where(
            RUNS.c.id == run_id,
            RUNS.c.state.in_(_DRAINABLE_RUN_STATES),
            RUNS.c.state != run_state.value,
        )
        .values(**run_values)
    )
    movable = (TierState.PENDING.value, TierState.IN_PROGRESS.value)
    for tier_id, left in remaining:
        tier_state = TierState.COMPLETE if left == 0 else TierState.IN_PROGRESS
        tier_values: dict[str, object] = {"state": tier_state.value, "updated_at": now}
        if left == 0:
            tier_values["completed_at"] = now
        connection.execute(
            sa.update(TIERS)
            .where(TIERS.c.id == tier_id, TIERS.c.state.in_(movable))
            .where(TIERS.c.state != tier_state.value)
            .values(**tier_values)
        )


def _insert_result(connection: sa.Connection, session_id: str, values: dict[str, Any]) -> int:
    seq = next_seq(connection, session_id)
    key = connection.execute(
        sa.insert(RESULTS).values(session_id=session_id, seq=seq, **values)
    ).inserted_primary_key
    assert key is not None
    connection.execute(
        sa.update(SESSIONS).where(SESSIONS.c.id == session_id).values(updated_at=utc_now())
    )
    return int(key[0])


def link_telemetry(connection: sa.Connection, event_ids: Sequence[int], result_id: int) -> None:
    """Point the attempt's telemetry rows at its result (the export's drain_result_id)."""
    if event_ids:
        connection.execute(
            sa.update(PROVENANCE)
            .where(PROVENANCE.c.event_id.in_(list(event_ids)))
            .values(drain_result_id=result_id)
        )
