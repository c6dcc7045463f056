"""Refusing unknown run and phase ids before anything happens, with a did-you-mean.

A misspelled `--run-id` used to succeed with "processed 0" (and a drain left an empty session
behind). Commands check the ids they were given first, and refuse (exit 2) naming the closest
known id.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from autopack.db.models import Phase, Run, TokenEstimationV2Event, table_of
from autopack.db.suggest import did_you_mean
from autopack.errors import GuardError

RUNS = table_of(Run)
PHASES = table_of(Phase)
EVENTS = table_of(TokenEstimationV2Event)


def require_known_runs(
    connection: sa.Connection, run_ids: Sequence[str], *, or_telemetry: bool = False
) -> None:
    """Every id names a run of `runs` (or, with `or_telemetry`, has telemetry rows: imported
    telemetry may name runs this DB never held)."""
    if not run_ids:
        return
    wanted = sorted(set(run_ids))
    found = {
        row[0] for row in connection.execute(sa.select(RUNS.c.id).where(RUNS.c.id.in_(wanted)))
    }
    missing = [run_id for run_id in wanted if run_id not in found]
    if missing and or_telemetry and sa.inspect(connection).has_table(EVENTS.name):
        found |= {
            row[0]
            for row in connection.execute(
                sa.select(EVENTS.c.run_id).where(EVENTS.c.run_id.in_(missing)).distinct()
            )
        }
    unknown = [run_id for run_id in wanted if run_id not in found]
    if not unknown:
        return
    known = list(connection.execute(sa.select(RUNS.c.id)).scalars())
    first = unknown[0]
    raise GuardError(
        f"run {first!r} is not in this database{did_you_mean(first, known)}."
        + (f" Also unknown: {', '.join(unknown[1:4])}." if len(unknown) > 1 else ""),
        hint="check the run id (`autopack db identity` shows what the DB holds)",
    )


def require_known_phase(connection: sa.Connection, run_id: str, phase_id: str) -> None:
    """The run exists and holds this phase."""
    require_known_runs(connection, [run_id])
    exists = connection.execute(
        sa.select(PHASES.c.phase_id).where(PHASES.c.run_id == run_id, PHASES.c.phase_id == phase_id)
    ).first()
    if exists is not None:
        return
    known = list(
        connection.execute(sa.select(PHASES.c.phase_id).where(PHASES.c.run_id == run_id)).scalars()
    )
    raise GuardError(
        f"phase {phase_id!r} is not in run {run_id!r}{did_you_mean(phase_id, known)}.",
        hint="check the phase id (phase ids are unique within their run)",
    )
