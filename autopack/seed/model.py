"""What a seed run is (validated), and how it is written into a database in one transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.engine import Engine

from autopack.db.models import Phase, PhaseState, Run, Tier, table_of, utc_now
from autopack.errors import GuardError

SEED_TIER_ID = "T1"
"""The one tier every seed run gets (index 0), as the original seeding scripts made it."""


class SeedScope(BaseModel):
    model_config = ConfigDict(extra="forbid")

    paths: list[str] = Field(min_length=1)
    read_only_context: list[str] = Field(default_factory=list)
    deliverables: list[str] = Field(min_length=1)


class SeedPhase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phase_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    description: str = Field(min_length=1)
    task_category: str = Field(min_length=1)
    complexity: str
    scope: SeedScope
    phase_index: int | None = None

    @field_validator("complexity")
    @classmethod
    def _known_complexity(cls, value: str) -> str:
        if value not in ("low", "medium", "high"):
            raise ValueError("complexity must be low, medium or high")
        return value


class SeedRunSpec(BaseModel):
    """A run, its one tier, and its phases, with the budgets the seeding sets."""

    model_config = ConfigDict(extra="forbid")

    run_id: str = Field(min_length=1)
    description: str = ""
    token_cap: int = 500_000
    max_phases: int = 50
    max_duration_minutes: int = 240
    tier_name: str = "Telemetry Collection Tier"
    tier_description: str | None = None
    tier_token_cap: int | None = None
    ci_run_cap: int = 20
    max_builder_attempts: int = 3
    max_auditor_attempts: int = 2
    incident_token_cap: int = 50_000
    phases: list[SeedPhase] = Field(min_length=1)

    @field_validator("phases")
    @classmethod
    def _unique_ids(cls, phases: list[SeedPhase]) -> list[SeedPhase]:
        seen: set[str] = set()
        for phase in phases:
            if phase.phase_id in seen:
                raise ValueError(f"phase_id {phase.phase_id!r} appears twice")
            seen.add(phase.phase_id)
        return phases


@dataclass(frozen=True)
class SeedResult:
    run_id: str
    phases: int
    tier_pk: int


def create_seed_run(engine: Engine, spec: SeedRunSpec) -> SeedResult:
    """Insert the run, its tier and its QUEUED phases; refuse if the run already exists."""
    try:
        return _insert_seed_run(engine, spec)
    except sa.exc.IntegrityError:
        # Another process created the same run between our check and our insert.
        if _run_exists(engine, spec.run_id):
            raise _run_exists_error(spec.run_id) from None
        raise


def _run_exists(engine: Engine, run_id: str) -> bool:
    runs = table_of(Run)
    with engine.connect() as connection:
        found = connection.execute(sa.select(runs.c.id).where(runs.c.id == run_id)).first()
    return found is not None


def _run_exists_error(run_id: str) -> GuardError:
    return GuardError(
        f"run {run_id!r} already exists; seeding never overwrites.",
        hint="seed into another DB, or give the run another id (autopack seed run --run-id)",
    )


def _insert_seed_run(engine: Engine, spec: SeedRunSpec) -> SeedResult:
    runs, tiers, phases = table_of(Run), table_of(Tier), table_of(Phase)
    now = utc_now()
    with engine.begin() as connection:
        exists = connection.execute(
            sa.select(runs.c.id).where(runs.c.id == spec.run_id)
        ).scalar_one_or_none()
        if exists is not None:
            raise _run_exists_error(spec.run_id)
        connection.execute(
            sa.insert(runs).values(
                _defaults(
                    Run,
                    id=spec.run_id,
                    state="RUN_CREATED",
                    token_cap=spec.token_cap,
                    max_phases=spec.max_phases,
                    max_duration_minutes=spec.max_duration_minutes,
                    created_at=now,
                    updated_at=now,
                )
            )
        )
        key = connection.execute(
            sa.insert(tiers).values(
                _defaults(
                    Tier,
                    tier_id=SEED_TIER_ID,
                    run_id=spec.run_id,
                    tier_index=0,
                    name=spec.tier_name,
                    description=spec.tier_description,
                    token_cap=spec.tier_token_cap or spec.token_cap,
                    ci_run_cap=spec.ci_run_cap,
                    created_at=now,
                    updated_at=now,
                )
            )
        ).inserted_primary_key
        assert key is not None
        tier_pk = int(key[0])
        for index, phase in enumerate(spec.phases):
            connection.execute(
                sa.insert(phases).values(
                    _defaults(
                        Phase,
                        phase_id=phase.phase_id,
                        run_id=spec.run_id,
                        tier_id=tier_pk,
                        phase_index=index if phase.phase_index is None else phase.phase_index,
                        name=phase.name,
                        description=phase.description,
                        state=PhaseState.QUEUED.value,
                        task_category=phase.task_category,
                        complexity=phase.complexity,
                        scope=phase.scope.model_dump(),
                        max_builder_attempts=spec.max_builder_attempts,
                        max_auditor_attempts=spec.max_auditor_attempts,
                        incident_token_cap=spec.incident_token_cap,
                        created_at=now,
                        updated_at=now,
                    )
                )
            )
    return SeedResult(spec.run_id, len(spec.phases), tier_pk)


def _defaults(model: type[Run] | type[Tier] | type[Phase], **values: Any) -> dict[str, Any]:
    """The model's own defaults for every column not given (Core inserts skip them otherwise)."""
    instance = model(**values)
    return {
        c.name: getattr(instance, c.name)
        for c in table_of(model).columns
        if c.name in values or getattr(instance, c.name) is not None
    }
