"""Refusing an unknown run or phase id inside the report's snapshot, naming the closest one."""

from __future__ import annotations

from autopack.db.suggest import did_you_mean
from autopack.db.transaction import Transaction
from autopack.errors import GuardError


def require_run(snapshot: Transaction, run_id: str) -> tuple[object, ...]:
    """The run's row (id, state, created, updated, started, completed, token_cap, tokens_used,
    max_phases, failure_reason); exit 2 naming the closest run id when there is none."""
    rows = snapshot.all(
        "SELECT id, state, created_at, updated_at, started_at, completed_at, token_cap, "
        "tokens_used, max_phases, failure_reason FROM runs WHERE id = :run_id",
        {"run_id": run_id},
    )
    if rows:
        return rows[0]
    known = [str(row[0]) for row in snapshot.all("SELECT id FROM runs")]
    raise GuardError(
        f"run {run_id!r} is not in this database{did_you_mean(run_id, known)}.",
        hint="list the runs with `autopack runs list`",
    )


def unknown_phase(snapshot: Transaction, run_id: str, phase_id: str) -> GuardError:
    """The refusal of a phase id the run does not hold, naming the closest of its phases."""
    known = [
        str(row[0])
        for row in snapshot.all(
            "SELECT phase_id FROM phases WHERE run_id = :run_id", {"run_id": run_id}
        )
    ]
    return GuardError(
        f"phase {phase_id!r} is not in run {run_id!r}{did_you_mean(phase_id, known)}.",
        hint=f"list the run's phases with `autopack runs show {run_id}`",
    )
