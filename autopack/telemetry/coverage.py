"""Is there enough clean telemetry to calibrate? The runbook's seeding goal, judged per cell.

A *clean* sample is a `success = true`, non-truncated telemetry row: the only kind calibration
may learn from (a truncated row's actual is a lower bound; a failed parse is not representative).
The goal comes from the seeding runbook: at least 20 clean samples in all, and every category,
complexity and deliverable-count bucket represented by at least one. The categories,
complexities and buckets are the seed run's targets (autopack.seed.coverage), so a drained
balanced seed run is what makes this say "ready".

Plain Python: `assess_coverage` takes the clean-sample count of every (category, complexity,
deliverable bucket) cell, already normalised, and returns a `CoverageReport`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final, Literal

from pydantic import BaseModel

from autopack.estimator import COMPLEXITY_LEVELS, DELIVERABLE_BUCKETS
from autopack.seed.coverage import (
    TARGET_BUCKETS,
    TARGET_CATEGORIES,
    TARGET_COMPLEXITIES,
    CoverageCell,
)
from autopack.telemetry.choices import DEFAULT_MIN_TOTAL

REQUIRED_CATEGORIES: Final[tuple[str, ...]] = TARGET_CATEGORIES
"""implementation, tests, docs (normalised: `testing` counts as `tests`)."""
REQUIRED_COMPLEXITIES: Final[tuple[str, ...]] = TARGET_COMPLEXITIES
"""low, medium, high."""
REQUIRED_BUCKETS: Final[tuple[str, ...]] = TARGET_BUCKETS
"""1 and 2-5 deliverables; `6+` and `0` (the original's deliverables=0 logging bug) are
reported when present but are not part of the goal."""

CLEAN_POPULATION: Final = "success = true and not truncated (after the filters)"

Dimension = Literal["category", "complexity", "deliverable_bucket"]
Cell = tuple[str, str, str]
"""(normalised category, normalised complexity, deliverable bucket)."""


class SampleCell(CoverageCell):
    """A grid cell of the telemetry: its clean samples."""

    samples: int


class CoverageGap(BaseModel):
    """A required category, complexity or bucket with no clean sample at all."""

    dimension: Dimension
    value: str


class CoverageReport(BaseModel):
    population: str
    min_total: int
    total: int
    required_categories: list[str]
    required_complexities: list[str]
    required_buckets: list[str]
    by_category: dict[str, int]
    by_complexity: dict[str, int]
    by_deliverable_bucket: dict[str, int]
    cells: list[SampleCell]
    """Every cell of the required grid (zeros included), then any other cell that has samples."""
    gaps: list[CoverageGap]
    seed_cells: list[str]
    """Cells to seed so that every gap is covered, as `category/complexity/bucket`."""
    more_samples_needed: int
    """How many more clean samples the total goal needs (0 when met)."""
    ready: bool
    verdict: str


def _ordered(values: Sequence[str], preferred: Sequence[str]) -> list[str]:
    rank = {value: index for index, value in enumerate(preferred)}
    return sorted(values, key=lambda value: (rank.get(value, len(rank)), value))


def _totals(counts: Mapping[Cell, int], axis: int) -> dict[str, int]:
    totals: dict[str, int] = {}
    for cell, samples in counts.items():
        totals[cell[axis]] = totals.get(cell[axis], 0) + samples
    return totals


def _best(required: Sequence[str], totals: Mapping[str, int]) -> str:
    """The required value with the most samples (the first one on a tie)."""
    return max(required, key=lambda value: (totals.get(value, 0), -required.index(value)))


def assess_coverage(
    counts: Mapping[Cell, int],
    *,
    min_total: int = DEFAULT_MIN_TOTAL,
    categories: Sequence[str] = REQUIRED_CATEGORIES,
    complexities: Sequence[str] = REQUIRED_COMPLEXITIES,
    buckets: Sequence[str] = REQUIRED_BUCKETS,
) -> CoverageReport:
    """Judge clean-sample counts against the seeding goal and name the cells still to seed.

    `counts` maps normalised (category, complexity, bucket) cells to clean samples; cells with 0
    may be left out. The verdict is "ready" when the total reaches `min_total` and every required
    category, complexity and bucket has a sample. Otherwise `seed_cells` pairs the missing values
    into as few cells as possible, filling a dimension that has no gap with its best-covered
    value, so seeding those cells closes every gap.
    """
    present = {cell: n for cell, n in counts.items() if n > 0}
    total = sum(present.values())
    by_category = _totals(present, 0)
    by_complexity = _totals(present, 1)
    by_bucket = _totals(present, 2)
    axes: list[tuple[Dimension, Sequence[str], dict[str, int]]] = [
        ("category", categories, by_category),
        ("complexity", complexities, by_complexity),
        ("deliverable_bucket", buckets, by_bucket),
    ]
    gaps = [
        CoverageGap(dimension=dimension, value=value)
        for dimension, required, totals in axes
        for value in required
        if totals.get(value, 0) == 0
    ]
    missing = [[g.value for g in gaps if g.dimension == dimension] for dimension, _, _ in axes]
    seed_cells: list[str] = []
    for index in range(max((len(values) for values in missing), default=0)):
        parts = [
            values[index] if index < len(values) else _best(required, totals)
            for values, (_, required, totals) in zip(missing, axes, strict=True)
        ]
        seed_cells.append("/".join(parts))
    more = max(0, min_total - total)
    ready = not gaps and more == 0
    grid = {
        (c, x, b): SampleCell(
            category=c,
            complexity=x,
            deliverable_bucket=b,
            required=True,
            samples=present.get((c, x, b), 0),
        )
        for c in categories
        for x in complexities
        for b in buckets
    }
    for cell, samples in present.items():
        if cell not in grid:
            grid[cell] = SampleCell(
                category=cell[0],
                complexity=cell[1],
                deliverable_bucket=cell[2],
                required=False,
                samples=samples,
            )
    category_order = _ordered(list({c for c, _, _ in grid}), categories)
    complexity_order = _ordered(list({x for _, x, _ in grid}), COMPLEXITY_LEVELS)
    bucket_order = _ordered(list({b for _, _, b in grid}), DELIVERABLE_BUCKETS)
    cells = sorted(
        grid.values(),
        key=lambda cell: (
            category_order.index(cell.category),
            complexity_order.index(cell.complexity),
            bucket_order.index(cell.deliverable_bucket),
        ),
    )
    return CoverageReport(
        population=CLEAN_POPULATION,
        min_total=min_total,
        total=total,
        required_categories=list(categories),
        required_complexities=list(complexities),
        required_buckets=list(buckets),
        by_category={k: by_category[k] for k in _ordered(list(by_category), categories)},
        by_complexity={k: by_complexity[k] for k in _ordered(list(by_complexity), complexities)},
        by_deliverable_bucket={k: by_bucket[k] for k in _ordered(list(by_bucket), buckets)},
        cells=cells,
        gaps=gaps,
        seed_cells=seed_cells,
        more_samples_needed=more,
        ready=ready,
        verdict=_verdict(total, min_total, gaps, seed_cells, more),
    )


def _verdict(
    total: int, min_total: int, gaps: list[CoverageGap], seed_cells: list[str], more: int
) -> str:
    if not gaps and more == 0:
        return (
            f"ready to calibrate: {total} clean samples (goal ≥ {min_total}); every required "
            "category, complexity and deliverable bucket is represented"
        )
    parts: list[str] = []
    if seed_cells:
        names = ", ".join(f"{g.dimension.replace('_', ' ')} {g.value}" for g in gaps)
        parts.append(f"seed these cells: {', '.join(seed_cells)} (no sample yet for {names})")
    if more:
        parts.append(
            f"{more} more clean sample{'s' if more != 1 else ''} "
            f"({total} of the goal's {min_total})"
        )
    return "not yet: " + "; ".join(parts)
