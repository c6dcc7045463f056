"""Claiming is atomic: of many callers racing for one phase, exactly one runs it."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as sa

from autopack.db.engine import Database
from autopack.db.models import Phase, PhaseClaim, table_of
from autopack.drain.attempt import PhaseOutcome
from autopack.drain.claims import Claim, PhaseNotFound, claim_phase
from autopack.drain.finish import finish_attempt
from autopack.drain.sessions import start_session
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
    assert _finish(seed_db, claim, "failed", "FAILED", failure_reason="boom")
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
    assert not _finish(seed_db, impostor, "complete", "COMPLETE")
    assert _state(seed_db) == "EXECUTING"
    assert _finish(seed_db, claim, "complete", "COMPLETE")
    assert _state(seed_db) == "COMPLETE"


def _finish(db: Database, claim: Claim, outcome: str, state: str, **values: Any) -> bool:
    """End the attempt as the drain does: state, result and claim release in one go."""
    session = start_session(db.engine, kind="phase", options={}, telemetry_enabled=True)
    attempt = PhaseOutcome(claim.run_id, claim.phase_id, outcome, state, llm_calls=1, **values)
    return finish_attempt(db.engine, session, attempt, claim)
