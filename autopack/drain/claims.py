"""Claiming a phase atomically (QUEUED → EXECUTING with a lease) and releasing it.

The claim is one conditional UPDATE: of two callers racing for one phase, exactly one sees a
changed row. The lease row (autopack_phase_claims) says who holds it and until when, so a
dead worker's phase can be recovered once the lease expires.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from autopack.db.models import Phase, PhaseClaim, PhaseState, table_of, utc_now
from autopack.errors import GuardError

PHASES = table_of(Phase)
CLAIMS = table_of(PhaseClaim)


class PhaseNotFound(GuardError):
    """The run/phase pair is not in this database (nothing to attempt, nothing to record)."""

    def __init__(self, run_id: str, phase_id: str) -> None:
        super().__init__(
            f"phase {phase_id!r} of run {run_id!r} does not exist in this database.",
            hint="check the run and phase ids, and that this is the database you meant",
        )


@dataclass(frozen=True)
class Claim:
    run_id: str
    phase_id: str
    worker: str
    session_id: str | None
    requeued: bool


def phase_state(connection: sa.Connection, run_id: str, phase_id: str) -> str | None:
    return connection.execute(
        sa.select(PHASES.c.state).where(PHASES.c.run_id == run_id, PHASES.c.phase_id == phase_id)
    ).scalar_one_or_none()


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
    """Take the phase for this worker, or raise GuardError saying why not (nothing changed)."""
    now = utc_now()
    with engine.begin() as connection:
        requeued = False
        if requeue_failed:
            requeued = (
                connection.execute(
                    sa.update(PHASES)
                    .where(
                        PHASES.c.run_id == run_id,
                        PHASES.c.phase_id == phase_id,
                        PHASES.c.state == PhaseState.FAILED.value,
                    )
                    .values(state=PhaseState.QUEUED.value, updated_at=now)
                ).rowcount
                == 1
            )
        taken = connection.execute(
            sa.update(PHASES)
            .where(
                PHASES.c.run_id == run_id,
                PHASES.c.phase_id == phase_id,
                PHASES.c.state == PhaseState.QUEUED.value,
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
            _refuse(run_id, phase_id, state)
        connection.execute(
            sa.delete(CLAIMS).where(CLAIMS.c.run_id == run_id, CLAIMS.c.phase_id == phase_id)
        )
        connection.execute(
            sa.insert(CLAIMS).values(
                run_id=run_id,
                phase_id=phase_id,
                session_id=session_id,
                worker=worker,
                claimed_at=now,
                heartbeat_at=now,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
            )
        )
    return Claim(run_id, phase_id, worker, session_id, requeued)


def _refuse(run_id: str, phase_id: str, state: str | None) -> None:
    if state is None:
        raise PhaseNotFound(run_id, phase_id)
    if state == PhaseState.FAILED.value:
        raise GuardError(
            f"phase {phase_id!r} of run {run_id!r} is FAILED; it is not re-run silently.",
            hint="pass --requeue to queue it again and drain it",
        )
    if state == PhaseState.EXECUTING.value:
        raise GuardError(
            f"phase {phase_id!r} of run {run_id!r} is already EXECUTING (claimed by a worker).",
            hint="wait for it, or recover a dead worker's phase with `autopack triage stale`",
        )
    raise GuardError(
        f"phase {phase_id!r} of run {run_id!r} is {state}; only QUEUED phases are drained.",
        hint="pick a QUEUED phase",
    )


def release_phase(
    engine: Engine,
    claim: Claim,
    *,
    final_state: PhaseState,
    failure_reason: str | None,
    builder_attempts: int,
    tokens_used: int,
) -> None:
    """Set the outcome and drop the lease, only if this worker still holds the phase."""
    now = utc_now()
    values: dict[str, object] = {
        "state": final_state.value,
        "updated_at": now,
        "builder_attempts": PHASES.c.builder_attempts + builder_attempts,
        "tokens_used": PHASES.c.tokens_used + tokens_used,
    }
    if final_state is PhaseState.COMPLETE:
        values["completed_at"] = now
    if failure_reason is not None:
        values["last_failure_reason"] = failure_reason
    with engine.begin() as connection:
        held = connection.execute(
            sa.delete(CLAIMS).where(
                CLAIMS.c.run_id == claim.run_id,
                CLAIMS.c.phase_id == claim.phase_id,
                CLAIMS.c.worker == claim.worker,
            )
        ).rowcount
        if held:
            connection.execute(
                sa.update(PHASES)
                .where(
                    PHASES.c.run_id == claim.run_id,
                    PHASES.c.phase_id == claim.phase_id,
                    PHASES.c.state == PhaseState.EXECUTING.value,
                )
                .values(**values)
            )
