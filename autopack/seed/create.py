"""Seed a database: guard its role, create the run in one transaction, report what it covers."""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel

from autopack.db.engine import Database, translated_errors
from autopack.db.guards import require_role
from autopack.db.meta import read_stamp
from autopack.db.models import PhaseState
from autopack.db.schema import require_tables
from autopack.errors import TargetError
from autopack.estimator import deliverable_count_bucket, normalize_deliverables
from autopack.seed.coverage import Coverage, coverage_of
from autopack.seed.model import SEED_TIER_ID, SeedRunSpec, create_seed_run

SEED_ROLES: Final[frozenset[str]] = frozenset({"seed", "general"})
"""Roles a seed run may go into without --force-role (never `legacy`, stamped or assumed)."""

SEED_TABLES: Final[tuple[str, ...]] = ("runs", "tiers", "phases")


class SeededPhase(BaseModel):
    phase_index: int
    phase_id: str
    name: str
    task_category: str
    complexity: str
    deliverables: int
    deliverable_bucket: str
    state: str


class SeedReport(BaseModel):
    """What `seed run` created: the run, its tier, its QUEUED phases, and their coverage."""

    run_id: str
    builtin: str | None
    file: str | None
    tier_id: str
    token_cap: int
    max_phases: int
    max_duration_minutes: int
    phases_created: int
    phases: list[SeededPhase]
    coverage: Coverage


def seed_run(
    db: Database,
    spec: SeedRunSpec,
    *,
    builtin: str | None = None,
    file: str | None = None,
    force_role: bool = False,
) -> SeedReport:
    """Create `spec` in `db`, all or nothing.

    Refuses (exit 2) a database opened read-only, one without the runs/tiers/phases tables, one
    whose role is not seed or general (unless `force_role`), and a run id that already exists
    (seeding never overwrites). The empty-DB guard does not apply: seeding fills empty DBs.
    """
    if not db.writable:
        raise TargetError(
            f"{db.target.display_url} was opened read-only, and seeding writes to it.",
            hint="open it read-write",
        )
    with translated_errors(db):
        require_tables(db, SEED_TABLES)
        with db.engine.connect() as connection:
            stamp = read_stamp(connection)
        require_role(
            stamp,
            SEED_ROLES,
            display_url=db.target.display_url,
            command="autopack seed run",
            force=force_role,
        )
        created = create_seed_run(db.engine, spec)
    phases = [
        SeededPhase(
            phase_index=index if phase.phase_index is None else phase.phase_index,
            phase_id=phase.phase_id,
            name=phase.name,
            task_category=phase.task_category,
            complexity=phase.complexity,
            deliverables=len(normalize_deliverables(phase.scope.deliverables)),
            deliverable_bucket=deliverable_count_bucket(
                len(normalize_deliverables(phase.scope.deliverables))
            ),
            state=PhaseState.QUEUED.value,
        )
        for index, phase in enumerate(spec.phases)
    ]
    return SeedReport(
        run_id=created.run_id,
        builtin=builtin,
        file=file,
        tier_id=SEED_TIER_ID,
        token_cap=spec.token_cap,
        max_phases=spec.max_phases,
        max_duration_minutes=spec.max_duration_minutes,
        phases_created=created.phases,
        phases=phases,
        coverage=coverage_of(spec.phases),
    )
