"""Claiming is atomic: of many callers racing for one phase, exactly one runs it."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from autopack.db.engine import Database
from autopack.db.models import Phase, PhaseClaim, PhaseState, table_of
from autopack.drain.claims import PhaseNotFound, claim_phase, release_phase
from autopack.errors import GuardError

RUN = "telemetry-collection-v4"
PHASE = "telemetry-p1-string-util"


def _state(db: Database, phase_id: str = PHASE) -> str:
    phases = table_of(Phase)
    with db.engine.connect() as connection:
        return str(
            connection.execute(
                sa.select(phases.c.state).where(
                    phases.c.run_id == RUN, phases.c.phase_id == phase_id
                )
            ).scalar_one()
        )


def test_claim_moves_queued_to_executing_with_a_lease(seed_db: Database) -> None:
    claim = claim_phase(seed_db.engine, RUN, PHASE, worker="w1", session_id=None, lease_seconds=60)
    assert claim.worker == "w1"
    assert _state(seed_db) == "EXECUTING"
    with seed_db.engine.connect() as connection:
        lease = connection.execute(sa.select(table_of(PhaseClaim))).one()
    assert lease.worker == "w1"
    assert lease.lease_expires_at > lease.claimed_at


def test_racing_claims_have_exactly_one_winner(seed_db: Database) -> None:
    winners: list[str] = []
    refusals: list[str] = []
    barrier = threading.Barrier(8)

    def worker(name: str) -> None:
        barrier.wait()
        try:
            claim_phase(seed_db.engine, RUN, PHASE, worker=name, session_id=None, lease_seconds=60)
            winners.append(name)
        except GuardError as exc:
            refusals.append(exc.message)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1
    assert len(refusals) == 7
    assert all("already EXECUTING" in r for r in refusals)


def test_failed_phase_needs_explicit_requeue(seed_db: Database) -> None:
    claim = claim_phase(seed_db.engine, RUN, PHASE, worker="w", session_id=None, lease_seconds=60)
    release_phase(
        seed_db.engine,
        claim,
        final_state=PhaseState.FAILED,
        failure_reason="boom",
        builder_attempts=1,
        tokens_used=10,
    )
    assert _state(seed_db) == "FAILED"
    with pytest.raises(GuardError, match="not re-run silently") as info:
        claim_phase(seed_db.engine, RUN, PHASE, worker="w", session_id=None, lease_seconds=60)
    assert info.value.hint == "pass --requeue to queue it again and drain it"
    again = claim_phase(
        seed_db.engine,
        RUN,
        PHASE,
        worker="w",
        session_id=None,
        lease_seconds=60,
        requeue_failed=True,
    )
    assert again.requeued is True
    assert _state(seed_db) == "EXECUTING"


def test_missing_phase_is_refused(seed_db: Database) -> None:
    with pytest.raises(PhaseNotFound, match="does not exist"):
        claim_phase(seed_db.engine, RUN, "nope", worker="w", session_id=None, lease_seconds=60)


def test_release_by_a_worker_that_lost_the_claim_changes_nothing(seed_db: Database) -> None:
    claim = claim_phase(seed_db.engine, RUN, PHASE, worker="w1", session_id=None, lease_seconds=60)
    impostor = type(claim)(claim.run_id, claim.phase_id, "w2", None, False)
    release_phase(
        seed_db.engine,
        impostor,
        final_state=PhaseState.COMPLETE,
        failure_reason=None,
        builder_attempts=1,
        tokens_used=1,
    )
    assert _state(seed_db) == "EXECUTING"
    release_phase(
        seed_db.engine,
        claim,
        final_state=PhaseState.COMPLETE,
        failure_reason=None,
        builder_attempts=1,
        tokens_used=1,
    )
    assert _state(seed_db) == "COMPLETE"
