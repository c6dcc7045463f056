"""The invariants the standing reliability suite checks after every trial (issue 11)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from autopack.db.models import (
    DrainResult,
    DrainSession,
    Phase,
    TokenEstimationV2Event,
    table_of,
)

PHASES = table_of(Phase)
RESULTS = table_of(DrainResult)
SESSIONS = table_of(DrainSession)
EVENTS = table_of(TokenEstimationV2Event)
_COUNTERS = {"complete": "succeeded", "timeout": "timeouts", "refused": "refused"}


@dataclass
class Invariants:
    """What a finished backlog looks like; `problems` is empty when every invariant holds."""

    phases: int = 0
    states: Counter[str] = field(default_factory=Counter)
    results: int = 0
    telemetry_rows: int = 0
    problems: list[str] = field(default_factory=list)


def check_invariants(
    engine: Engine,
    *,
    answered_calls: int,
    in_flight_slack: int = 0,
    unreadable_bodies: int = 0,
    finished: bool = True,
) -> Invariants:
    """Check a backlog after a trial.

    - no phase stuck EXECUTING;
    - no phase COMPLETE twice (at most one `complete` result per phase);
    - every COMPLETE phase has its `complete` drain result;
    - telemetry rows equal answered calls: never more rows than the server answered, and at
      most `in_flight_slack` fewer (calls answered just as a process was killed, which that
      process never read); a 2xx whose body is not a reply at all (`unreadable_bodies`: not
      JSON, empty) has no usage to record and is counted on the usage ledger instead;
    - every finished session's counters equal its results.
    """
    found = Invariants()
    answered_calls -= unreadable_bodies
    with engine.connect() as connection:
        states = connection.execute(sa.select(PHASES.c.run_id, PHASES.c.phase_id, PHASES.c.state))
        phase_states = {(row.run_id, row.phase_id): row.state for row in states}
        results = connection.execute(
            sa.select(RESULTS.c.session_id, RESULTS.c.run_id, RESULTS.c.phase_id, RESULTS.c.outcome)
        ).all()
        sessions = connection.execute(
            sa.select(SESSIONS.c.id, SESSIONS.c.status, SESSIONS.c.state)
        ).all()
        found.telemetry_rows = int(
            connection.execute(sa.select(sa.func.count()).select_from(EVENTS)).scalar_one()
        )
    found.phases = len(phase_states)
    found.states = Counter(phase_states.values())
    found.results = len(results)
    if found.states["EXECUTING"]:
        found.problems.append(f"{found.states['EXECUTING']} phase(s) stuck EXECUTING")
    completes = Counter((r.run_id, r.phase_id) for r in results if r.outcome == "complete")
    twice = [key for key, count in completes.items() if count > 1]
    if twice:
        found.problems.append(f"{len(twice)} phase(s) COMPLETE twice, e.g. {twice[0]}")
    unrecorded = [
        key for key, state in phase_states.items() if state == "COMPLETE" and not completes[key]
    ]
    if unrecorded:
        found.problems.append(
            f"{len(unrecorded)} COMPLETE phase(s) without a drain result, e.g. {unrecorded[0]}"
        )
    if found.telemetry_rows > answered_calls:
        found.problems.append(
            f"{found.telemetry_rows} telemetry rows for {answered_calls} answered calls"
        )
    elif answered_calls - found.telemetry_rows > in_flight_slack:
        found.problems.append(
            f"{answered_calls - found.telemetry_rows} answered calls without a telemetry row "
            f"(more than the {in_flight_slack} a kill can catch in flight)"
        )
    by_session = Counter(r.session_id for r in results)
    outcomes = Counter((r.session_id, r.outcome) for r in results)
    for session in sessions:
        if session.status not in ("completed", "stopped") or not finished:
            continue
        state = session.state or {}
        if state.get("processed", 0) != by_session[session.id]:
            found.problems.append(
                f"session {session.id[:8]}: processed={state.get('processed')} but "
                f"{by_session[session.id]} results"
            )
        for outcome, counter in _COUNTERS.items():
            if state.get(counter, 0) != outcomes[(session.id, outcome)]:
                found.problems.append(
                    f"session {session.id[:8]}: {counter}={state.get(counter)} but "
                    f"{outcomes[(session.id, outcome)]} {outcome} results"
                )
    return found
