"""Claiming a phase atomically (QUEUED → EXECUTING with a lease), heartbeats, and releasing it.

Phases of one run build on each other, so a run executes one phase at a time: a claim is refused
while another phase of the same run is EXECUTING (unless the phase's scope says
`"independent": true`). The claim itself is one conditional UPDATE, so of two callers racing for
a phase exactly one sees a changed row. On PostgreSQL the run's row is first locked with
`SELECT … FOR UPDATE SKIP LOCKED`, which serialises claims within a run across processes and
machines without waiting: a caller that finds the run locked moves on to other work. On SQLite
the database's single writer does the same. The lease row (autopack_phase_claims) says who holds
the phase and until when, so a dead worker's phase can be recovered once its lease expires.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from autopack.db.clock import utc_now
from autopack.db.models import Phase, PhaseClaim, PhaseState, Run, table_of
from autopack.db.retry import retrying
from autopack.drain.holders import holder_label, parse_holder
from autopack.errors import GuardError

PHASES = table_of(Phase)
CLAIMS = table_of(PhaseClaim)
RUNS = table_of(Run)


class PhaseNotFound(GuardError):
    """The run/phase pair is not in this database (nothing to attempt, nothing to record)."""

    def __init__(self, run_id: str, phase_id: str) -> None:
        super().__init__(
            f"phase {phase_id!r} of run {run_id!r} does not exist in this database.",
            hint="check the run and phase ids, and that this is the database you meant",
        )


class ClaimRefused(GuardError):
    """The phase cannot be claimed now. `retryable`: it may become claimable later (another
    worker holds it or its run); otherwise its state rules it out."""

    def __init__(self, message: str, hint: str, *, retryable: bool) -> None:
        super().__init__(message, hint)
        self.retryable = retryable


@dataclass(frozen=True)
class Claim:
    run_id: str
    phase_id: str
    worker: str
    session_id: str | None
    requeued: bool
    previous_state: str = PhaseState.QUEUED.value
    previous_values: dict[str, Any] = field(default_factory=dict, compare=False)
    """The columns the claim changed, as they were: a phase given back untouched gets them
    back (an outage leaves the original tables as they were)."""


# The phase columns a claim writes besides its state.
CLAIM_TOUCHED = ("started_at", "updated_at", "last_attempt_timestamp")


def phase_state(connection: sa.Connection, run_id: str, phase_id: str) -> str | None:
    return connection.execute(
        sa.select(PHASES.c.state).where(PHASES.c.run_id == run_id, PHASES.c.phase_id == phase_id)
    ).scalar_one_or_none()


def independent_clause(column: sa.Column[object]) -> sa.ColumnElement[bool]:
    """The phase's scope says it does not depend on its run's other phases."""
    return sa.func.coalesce(sa.type_coerce(column, sa.JSON)["independent"].as_boolean(), False)


@retrying("claim a phase")
def claim_phase(
    engine: Engine,
    run_id: str,
    phase_id: str,
    *,
    worker: str,
    session_id: str | None,
    lease_seconds: float,
    requeue_failed: bool = False,
) -> Claim:
    """Take the phase for this worker, or raise saying why not (then nothing changed)."""
    now = utc_now()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql" and not _is_independent(
            connection, run_id, phase_id
        ):
            locked = connection.execute(
                sa.select(RUNS.c.id).where(RUNS.c.id == run_id).with_for_update(skip_locked=True)
            ).first()
            if locked is None and _run_exists(connection, run_id):
                raise ClaimRefused(
                    f"run {run_id!r} is being claimed by another worker right now.",
                    hint="try again in a moment",
                    retryable=True,
                )
        before = connection.execute(
            sa.select(PHASES.c.state, *(PHASES.c[name] for name in CLAIM_TOUCHED)).where(
                PHASES.c.run_id == run_id, PHASES.c.phase_id == phase_id
            )
        ).first()
        previous = before.state if before is not None else None
        requeued = False
        if requeue_failed and previous == PhaseState.FAILED.value:
            connection.execute(
                sa.update(PHASES)
                .where(
                    PHASES.c.run_id == run_id,
                    PHASES.c.phase_id == phase_id,
                    PHASES.c.state == PhaseState.FAILED.value,
                )
                .values(state=PhaseState.QUEUED.value, updated_at=now)
            )
            requeued = True
        sibling = PHASES.alias("sibling")
        run_busy = sa.exists().where(
            sibling.c.run_id == run_id,
            sibling.c.state == PhaseState.EXECUTING.value,
            sibling.c.phase_id != phase_id,
        )
        taken = connection.execute(
            sa.update(PHASES)
            .where(
                PHASES.c.run_id == run_id,
                PHASES.c.phase_id == phase_id,
                PHASES.c.state == PhaseState.QUEUED.value,
                sa.or_(independent_clause(PHASES.c.scope), sa.not_(run_busy)),
            )
            .values(
                state=PhaseState.EXECUTING.value,
                started_at=now,
                updated_at=now,
                last_attempt_timestamp=now,
            )
        ).rowcount
        if taken != 1:
            state = phase_state(connection, run_id, phase_id)
            busy = connection.execute(sa.select(run_busy)).scalar()
            # Raising inside the transaction rolls back a requeue made above: nothing changes.
            _refuse(run_id, phase_id, state, run_busy=bool(busy))
        connection.execute(
            sa.delete(CLAIMS).where(CLAIMS.c.run_id == run_id, CLAIMS.c.phase_id == phase_id)
        )
        connection.execute(
            sa.insert(CLAIMS).values(
                run_id=run_id,
                phase_id=phase_id,
                session_id=session_id,
                worker=worker,
                previous_state=previous or PhaseState.QUEUED.value,
                claimed_at=now,
                heartbeat_at=now,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
            )
        )
    assert before is not None  # the claim above found the phase
    return Claim(
        run_id,
        phase_id,
        worker,
        session_id,
        requeued,
        previous or "QUEUED",
        {name: before._mapping[name] for name in CLAIM_TOUCHED},
    )


def _is_independent(connection: sa.Connection, run_id: str, phase_id: str) -> bool:
    """Independent phases do not serialise on their run (they may run side by side)."""
    return bool(
        connection.execute(
            sa.select(independent_clause(PHASES.c.scope)).where(
                PHASES.c.run_id == run_id, PHASES.c.phase_id == phase_id
            )
        ).scalar()
    )


def _run_exists(connection: sa.Connection, run_id: str) -> bool:
    found = connection.execute(sa.select(RUNS.c.id).where(RUNS.c.id == run_id)).first()
    return found is not None


def _refuse(run_id: str, phase_id: str, state: str | None, *, run_busy: bool) -> None:
    where = f"phase {phase_id!r} of run {run_id!r}"
    if state is None:
        raise PhaseNotFound(run_id, phase_id)
    if state == PhaseState.QUEUED.value and run_busy:
        raise ClaimRefused(
            f"another phase of run {run_id!r} is EXECUTING; a run's phases drain one at a time.",
            hint="wait for it, or recover a dead worker's phase with `autopack triage stale`",
            retryable=True,
        )
    if state == PhaseState.FAILED.value:
        raise ClaimRefused(
            f"{where} is FAILED; it is not re-run silently.",
            hint="pass --requeue to queue it again and drain it",
            retryable=False,
        )
    if state == PhaseState.EXECUTING.value:
        raise ClaimRefused(
            f"{where} is already EXECUTING (claimed by a worker).",
            hint="wait for it, or recover a dead worker's phase with `autopack triage stale`",
            retryable=True,
        )
    raise ClaimRefused(
        f"{where} is {state}; only QUEUED phases are drained.",
        hint="pick a QUEUED phase",
        retryable=False,
    )


def release_claim(connection: sa.Connection, run_id: str, phase_id: str, worker: str) -> bool:
    """Delete the claim if `worker` still holds it; whether it did."""
    return bool(
        connection.execute(
            sa.delete(CLAIMS).where(
                CLAIMS.c.run_id == run_id,
                CLAIMS.c.phase_id == phase_id,
                CLAIMS.c.worker == worker,
            )
        ).rowcount
    )


def return_phase(
    connection: sa.Connection,
    run_id: str,
    phase_id: str,
    state: str,
    values: dict[str, Any] | None = None,
) -> None:
    """Put a phase still EXECUTING back in `state`, with `values` (the columns the claim
    changed, as they were) or else a fresh updated_at. Every give-back goes through here."""
    connection.execute(
        sa.update(PHASES)
        .where(
            PHASES.c.run_id == run_id,
            PHASES.c.phase_id == phase_id,
            PHASES.c.state == PhaseState.EXECUTING.value,
        )
        .values(state=state, **(values or {"updated_at": utc_now()}))
    )


@retrying("give a phase back")
def unclaim(engine: Engine, claim: Claim) -> None:
    """Give the phase back untouched (interrupted before it ran): its previous state returns."""
    with engine.begin() as connection:
        if release_claim(connection, claim.run_id, claim.phase_id, claim.worker):
            return_phase(
                connection,
                claim.run_id,
                claim.phase_id,
                claim.previous_state,
                claim.previous_values,
            )


@retrying("extend leases")
def extend_leases(
    engine: Engine, worker: str, keys: Iterable[tuple[str, str]], lease_seconds: float
) -> int:
    """Heartbeat: push the leases this worker holds on `keys` forward; return how many."""
    keys = list(keys)
    if not keys:
        return 0
    now = utc_now()
    with engine.begin() as connection:
        return int(
            connection.execute(
                sa.update(CLAIMS)
                .where(
                    CLAIMS.c.worker == worker,
                    sa.tuple_(CLAIMS.c.run_id, CLAIMS.c.phase_id).in_(keys),
                )
                .values(heartbeat_at=now, lease_expires_at=now + timedelta(seconds=lease_seconds))
            ).rowcount
        )


@retrying("reclaim a session's phases")
def reclaim_session(engine: Engine, session_id: str) -> list[tuple[str, str, str]]:
    """Give back, at once, every phase a (dead) session still holds, in the state it had
    before the claim (QUEUED, or FAILED for a requeued backlog phase)."""
    with engine.begin() as connection:
        held = [
            (row.run_id, row.phase_id, row.previous_state)
            for row in connection.execute(
                sa.select(CLAIMS.c.run_id, CLAIMS.c.phase_id, CLAIMS.c.previous_state).where(
                    CLAIMS.c.session_id == session_id
                )
            )
        ]
        for run_id, phase_id, previous_state in held:
            return_phase(connection, run_id, phase_id, previous_state)
        connection.execute(sa.delete(CLAIMS).where(CLAIMS.c.session_id == session_id))
    return held


@retrying("read the live leases")
def live_lease_runs(engine: Engine, now: datetime | None = None) -> set[str]:
    """Runs with a phase held under a lease that has not expired (another worker is on it)."""
    moment = now or utc_now()
    with engine.connect() as connection:
        return {
            row[0]
            for row in connection.execute(
                sa.select(CLAIMS.c.run_id).where(CLAIMS.c.lease_expires_at > moment).distinct()
            )
        }


@dataclass(frozen=True)
class HeldClaim:
    """A claim as the waiting side sees it."""

    run_id: str
    phase_id: str
    worker: str
    session_id: str | None
    previous_state: str
    lease_expires_at: datetime

    @property
    def holder(self) -> str:
        return holder_label(self.worker)


def held_claims(engine: Engine) -> list[HeldClaim]:
    """Every claim in the DB (a short list: one per phase in flight anywhere)."""
    with engine.connect() as connection:
        return [
            HeldClaim(
                row.run_id,
                row.phase_id,
                row.worker,
                row.session_id,
                row.previous_state,
                row.lease_expires_at,
            )
            for row in connection.execute(
                sa.select(
                    CLAIMS.c.run_id,
                    CLAIMS.c.phase_id,
                    CLAIMS.c.worker,
                    CLAIMS.c.session_id,
                    CLAIMS.c.previous_state,
                    CLAIMS.c.lease_expires_at,
                ).order_by(CLAIMS.c.run_id, CLAIMS.c.phase_id)
            )
        ]


def dead_local_claims(engine: Engine) -> list[HeldClaim]:
    """Claims whose holder was a process on this machine that is gone (see drain/holders.py)."""
    return [claim for claim in held_claims(engine) if _holder_dead(claim.worker)]


def _holder_dead(worker: str) -> bool:
    holder = parse_holder(worker)
    return holder is not None and holder.is_dead()


def reclaim_dead_local(engine: Engine) -> list[HeldClaim]:
    """Give back at once the phases held by dead processes of this machine, to the state they
    had before the claim (as `--resume` does for its own session). A claim is taken back only
    if it is still the one that was judged dead (its holder unchanged)."""
    reclaimed: list[HeldClaim] = []
    for claim in dead_local_claims(engine):
        with engine.begin() as connection:
            if not release_claim(connection, claim.run_id, claim.phase_id, claim.worker):
                continue
            return_phase(connection, claim.run_id, claim.phase_id, claim.previous_state)
        reclaimed.append(claim)
    return reclaimed
