"""What a seed run would create, before any database is involved (`seed list`, `seed show`)."""

from __future__ import annotations

from pydantic import BaseModel

from autopack.seed.catalog import builtin_names, load_builtin
from autopack.seed.coverage import Coverage, coverage_of
from autopack.seed.model import SeedRunSpec, SeedScope


class PlannedPhase(BaseModel):
    phase_index: int
    phase_id: str
    name: str
    description: str
    task_category: str
    complexity: str
    scope: SeedScope


class SeedPlan(BaseModel):
    """A seed run as data: its budgets, its phases in order, and its coverage."""

    builtin: str | None
    file: str | None
    run_id: str
    description: str
    token_cap: int
    max_phases: int
    max_duration_minutes: int
    tier_name: str
    tier_description: str | None
    tier_token_cap: int
    ci_run_cap: int
    max_builder_attempts: int
    max_auditor_attempts: int
    incident_token_cap: int
    phases: list[PlannedPhase]
    coverage: Coverage


class BuiltinSummary(BaseModel):
    """One row of `seed list`."""

    name: str
    run_id: str
    description: str
    phases: int
    coverage: Coverage


def plan_of(spec: SeedRunSpec, *, builtin: str | None = None, file: str | None = None) -> SeedPlan:
    return SeedPlan(
        builtin=builtin,
        file=file,
        run_id=spec.run_id,
        description=spec.description,
        token_cap=spec.token_cap,
        max_phases=spec.max_phases,
        max_duration_minutes=spec.max_duration_minutes,
        tier_name=spec.tier_name,
        tier_description=spec.tier_description,
        tier_token_cap=spec.tier_token_cap or spec.token_cap,
        ci_run_cap=spec.ci_run_cap,
        max_builder_attempts=spec.max_builder_attempts,
        max_auditor_attempts=spec.max_auditor_attempts,
        incident_token_cap=spec.incident_token_cap,
        phases=[
            PlannedPhase(
                phase_index=index if phase.phase_index is None else phase.phase_index,
                phase_id=phase.phase_id,
                name=phase.name,
                description=phase.description,
                task_category=phase.task_category,
                complexity=phase.complexity,
                scope=phase.scope,
            )
            for index, phase in enumerate(spec.phases)
        ],
        coverage=coverage_of(spec.phases),
    )


def list_builtins() -> list[BuiltinSummary]:
    """Every built-in seed run with its phase count and coverage (no database needed)."""
    summaries: list[BuiltinSummary] = []
    for name in builtin_names():
        spec = load_builtin(name)
        summaries.append(
            BuiltinSummary(
                name=name,
                run_id=spec.run_id,
                description=spec.description,
                phases=len(spec.phases),
                coverage=coverage_of(spec.phases),
            )
        )
    return summaries
