"""A legacy backlog for the demo: runs with FAILED phases, some failing the same way, and
QUEUED phases nobody touched for days — what `autopack_legacy.db` held (original_spec §12.1:
456 phases, 207 FAILED, 107 QUEUED), in miniature.

Each run has phases a model can complete (deliverable inside the phase's scope) and, in some
runs, phases that fail the same way every time: their deliverable lies outside their scope,
so the workspace refuses the write whatever the model replies. That is one failure
fingerprint repeating, which the sample-first drain is there to notice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import sqlalchemy as sa

from autopack.db import Database
from autopack.db.models import Phase, table_of
from autopack.db.names import PhaseState
from autopack.seed.model import SeedPhase, SeedRunSpec, SeedScope, create_seed_run

LEGACY_RUNS: Final = 4
PHASES_PER_RUN: Final = 4
STALE_AGE: Final = timedelta(days=3)
"""Older than triage's default threshold, so `triage stale` finds them."""
_SCOPE: Final = "legacy/"
_OUTSIDE: Final = "elsewhere/module.py"
"""Outside every legacy phase's scope: the same refusal, one fingerprint, every time."""
_FAILURE_REASON: Final = "BUILDER_FAILED: the builder output could not be applied"


@dataclass(frozen=True)
class BacklogSummary:
    runs: int
    failed: int
    failing_the_same_way: int
    stale_queued: int


def _phase(run_id: str, index: int) -> SeedPhase:
    folder = f"{_SCOPE}{run_id}/"
    return SeedPhase(
        phase_id=f"{run_id}-p{index}",
        name=f"Legacy step {index} of {run_id}",
        description=f"Write module step_{index}.py with one small pure function for {run_id}.",
        task_category="implementation",
        complexity="low",
        # The seed model keeps deliverables inside the scope; the outside ones are set below.
        scope=SeedScope(paths=[_SCOPE], deliverables=[f"{folder}step_{index}.py"]),
        phase_index=index,
    )


def create_legacy_backlog(database: Database, now: datetime) -> BacklogSummary:
    """Insert the demo's legacy runs: FAILED phases (some doomed) and stale QUEUED ones."""
    phases = table_of(Phase)
    failed = doomed = stale = 0
    for number in range(1, LEGACY_RUNS + 1):
        run_id = f"legacy-run-{number:02d}"
        spec = SeedRunSpec(
            run_id=run_id,
            description="A demo legacy run (simulated backlog)",
            phases=[_phase(run_id, index) for index in range(PHASES_PER_RUN)],
        )
        create_seed_run(database.engine, spec)
        with database.engine.begin() as connection:
            for index in range(PHASES_PER_RUN):
                where = (phases.c.run_id == run_id) & (phases.c.phase_index == index)
                if index == PHASES_PER_RUN - 1 and number % 2 == 0:
                    # Even runs end with a QUEUED phase left for days: stale.
                    old = now - STALE_AGE
                    values: dict[str, object] = {"created_at": old, "updated_at": old}
                    stale += 1
                else:
                    values = {
                        "state": PhaseState.FAILED.value,
                        "last_failure_reason": _FAILURE_REASON,
                    }
                    failed += 1
                    if number <= 2 and index < 2:
                        # The first two runs' first two phases can never succeed (one fingerprint).
                        values["scope"] = {"paths": [_SCOPE], "deliverables": [_OUTSIDE]}
                        doomed += 1
                connection.execute(sa.update(phases).where(where).values(**values))
    return BacklogSummary(LEGACY_RUNS, failed, doomed, stale)


__all__ = ["BacklogSummary", "create_legacy_backlog"]
