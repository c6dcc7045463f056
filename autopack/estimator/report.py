"""`autopack estimate`: one phase's prediction, its budget and the ceiling that would be sent."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from autopack.estimator.active import resolve_coefficients
from autopack.estimator.categories import require_known_category, require_known_complexity
from autopack.estimator.coefficients import CoefficientSet
from autopack.estimator.model import TokenEstimate, estimate, select_budget
from autopack.estimator.provider import provider_max_tokens


class EstimateReport(BaseModel):
    estimate: TokenEstimate
    selected_budget: int
    max_tokens: int
    floors: tuple[str, ...]


def choose_coefficients(name: str | None, file: Path | None) -> CoefficientSet:
    """A set from a file if given, else a built-in set by name (default: `default`), without
    a database (`resolve_coefficients` decides with one)."""
    return resolve_coefficients(None, model=None, name=name, file=file)


def estimate_phase(
    deliverables: list[str],
    *,
    category: str,
    complexity: str,
    coefficients: CoefficientSet,
    workspace: Path,
    description: str = "",
    scope_paths: list[str] | None = None,
) -> EstimateReport:
    # A typo would otherwise be estimated silently as medium / the fallback category.
    require_known_complexity(complexity)
    require_known_category(category, coefficients.known_categories())
    predicted = estimate(
        deliverables,
        category,
        complexity,
        coefficients=coefficients,
        workspace=workspace,
        task_description=description,
        scope_paths=scope_paths,
    )
    budget = select_budget(predicted, complexity, coefficients=coefficients)
    decision = provider_max_tokens(
        budget,
        complexity,
        coefficients=coefficients,
        task_category=category,
        scope_paths=scope_paths or (),
    )
    return EstimateReport(
        estimate=predicted,
        selected_budget=budget,
        max_tokens=decision.max_tokens,
        floors=decision.floors,
    )
