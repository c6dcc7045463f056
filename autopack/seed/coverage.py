"""What a seed run covers: phases per category × complexity × deliverable-count bucket.

The runbook asks for samples that represent implementation / tests / docs, low / medium /
high complexity, and 1 and 2-5 deliverables: 18 target cells. The mix printed after seeding is
computed here from the phases themselves, never typed by hand (the original printed a wrong
one). Categories and buckets go through the estimator's normalisers, so `testing` counts as
`tests`, exactly as telemetry will be grouped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from pydantic import BaseModel

from autopack.estimator import (
    deliverable_count_bucket,
    normalize_category,
    normalize_complexity,
    normalize_deliverables,
)
from autopack.seed.model import SeedPhase

TARGET_CATEGORIES: Final[tuple[str, ...]] = ("implementation", "tests", "docs")
TARGET_COMPLEXITIES: Final[tuple[str, ...]] = ("low", "medium", "high")
TARGET_BUCKETS: Final[tuple[str, ...]] = ("1", "2-5")
_BUCKET_ORDER: Final[tuple[str, ...]] = ("0", "1", "2-5", "6+")


class CoverageCell(BaseModel):
    """One cell of the runbook's grid: category × complexity × deliverable-count bucket.

    The seed run's mix (`SeedCell`: phases) and telemetry's readiness to calibrate
    (`autopack.telemetry.coverage.SampleCell`: clean samples) count over this one grid.
    """

    category: str
    complexity: str
    deliverable_bucket: str
    """`1`, `2-5` (or, outside the targets, `0`, `6+`)."""
    required: bool
    """One of the cells the goal asks samples for (by default the runbook's 18)."""

    @property
    def label(self) -> str:
        return f"{self.category}/{self.complexity}/{self.deliverable_bucket}"


class SeedCell(CoverageCell):
    """A grid cell of a seed run: the phases that fall in it."""

    phases: int
    phase_ids: list[str]


class CategoryMix(BaseModel):
    phases: int
    low: int
    medium: int
    high: int


class Coverage(BaseModel):
    phases: int
    by_category: dict[str, CategoryMix]
    """The three target categories (zeros included), then any other, sorted."""
    by_complexity: dict[str, int]
    by_deliverables: dict[str, int]
    """`1` and `2-5` always, then `0` / `6+` if some phase falls there."""
    cells: list[SeedCell]
    """The 18 target cells in fixed order (zeros included), then any other combination found."""
    target_cells: int
    covered_target_cells: int
    missing_cells: list[str]
    """Labels (`category/complexity/bucket`) of the target cells without a phase."""

    @property
    def complete(self) -> bool:
        return not self.missing_cells


def _key(phase: SeedPhase) -> tuple[str, str, str]:
    count = len(normalize_deliverables(phase.scope.deliverables))
    return (
        normalize_category(phase.task_category),
        normalize_complexity(phase.complexity),
        deliverable_count_bucket(count),
    )


def coverage_of(phases: Sequence[SeedPhase]) -> Coverage:
    """Count the phases in each cell, and say which target cells have none."""
    found: dict[tuple[str, str, str], list[str]] = {}
    for phase in phases:
        found.setdefault(_key(phase), []).append(phase.phase_id)
    targets = [
        (category, complexity, bucket)
        for category in TARGET_CATEGORIES
        for complexity in TARGET_COMPLEXITIES
        for bucket in TARGET_BUCKETS
    ]
    target_set = set(targets)
    others = sorted(
        (key for key in found if key not in target_set),
        key=lambda k: (k[0], k[1], _BUCKET_ORDER.index(k[2])),
    )
    cells = [
        SeedCell(
            category=key[0],
            complexity=key[1],
            deliverable_bucket=key[2],
            required=index < len(targets),
            phases=len(found.get(key, [])),
            phase_ids=list(found.get(key, [])),
        )
        for index, key in enumerate([*targets, *others])
    ]
    categories = [*TARGET_CATEGORIES, *sorted({k[0] for k in found} - set(TARGET_CATEGORIES))]
    by_category: dict[str, CategoryMix] = {}
    for category in categories:
        counts = {
            level: sum(len(ids) for k, ids in found.items() if k[0] == category and k[1] == level)
            for level in TARGET_COMPLEXITIES
        }
        by_category[category] = CategoryMix(phases=sum(counts.values()), **counts)
    by_complexity = {
        level: sum(len(ids) for k, ids in found.items() if k[1] == level)
        for level in TARGET_COMPLEXITIES
    }
    present_buckets = {k[2] for k in found}
    by_deliverables = {
        bucket: sum(len(ids) for k, ids in found.items() if k[2] == bucket)
        for bucket in _BUCKET_ORDER
        if bucket in TARGET_BUCKETS or bucket in present_buckets
    }
    target_cells = [cell for cell in cells if cell.required]
    return Coverage(
        phases=len(phases),
        by_category=by_category,
        by_complexity=by_complexity,
        by_deliverables=by_deliverables,
        cells=cells,
        target_cells=len(target_cells),
        covered_target_cells=sum(1 for cell in target_cells if cell.phases),
        missing_cells=[cell.label for cell in target_cells if not cell.phases],
    )
