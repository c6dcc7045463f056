"""The `telemetry analyze` report: its pydantic models and the fixed definitions it states.

What the renderers and tests read: the report models (`AnalysisReport` and its parts), the
runbook's targets, the populations and definitions printed with the figures, and which
quantiles each metric reports. Nothing here reads a database or computes a figure; the scan
is in autopack.telemetry.analysis_scan and the assembly in autopack.telemetry.analyze.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Final, Literal

from pydantic import BaseModel

from autopack.db.clock import UtcTimestamp
from autopack.telemetry.coverage import CoverageReport

UNDERESTIMATION_TARGET: Final = 0.05
"""The runbook's gate: at most 5 % of calls may need more than predicted × multiplier."""
TRUNCATION_TARGET: Final = 0.02
"""The runbook's gate: at most 2 % of calls may hit max_tokens."""
WASTE_P90_GUIDE: Final = 3.0
"""The original analyzer's secondary (informational) target: p90 of predicted/actual < 3×."""

MEDIAN: Final = Fraction(1, 2)
P90: Final = Fraction(9, 10)

ALL_ROWS: Final = "all analysed rows"
NON_TRUNCATED: Final = "non-truncated analysed rows"
TRUNCATED_ROWS: Final = "truncated analysed rows (actual is a lower bound)"

DEFINITIONS: Final[dict[str, str]] = {
    "median": "true median: the middle value, or the mean of the two middle values when n is even",
    "p90": (
        "the 'exclusive' quantile of Python's statistics.quantiles, as the original analyzer "
        "had it: with the n values sorted as x1..xn and h = 0.9·(n+1) clamped to [1, n], "
        "p90 = x⌊h⌋ + (h − ⌊h⌋)·(x⌊h⌋+1 − x⌊h⌋); with fewer than 10 values it is the maximum"
    ),
    "smape": (
        "200·|actual − predicted| / (actual + predicted), in %, for non-truncated rows with "
        "actual > 0 and predicted > 0"
    ),
    "underestimated": "actual > predicted × under_multiplier",
    "truncated": (
        "truncated or is_truncated_output: the call hit max_tokens, so its actual is only a lower "
        "bound; such rows are left out of SMAPE and waste and reported apart"
    ),
    "success": (
        "builder-level success: the reply parsed into a usable change set — not the phase's "
        "final state"
    ),
    "categories": (
        "categories normalised with autopack.estimator.normalize_category (tests = testing, "
        "docs = documentation, implementation = IMPLEMENT_FEATURE); complexities with "
        "normalize_complexity; deliverable buckets 0, 1, 2-5, 6+"
    ),
}

MetricName = Literal["smape", "waste_predicted", "waste_selected_budget", "waste_max_tokens"]
METRICS: Final[tuple[MetricName, ...]] = (
    "smape",
    "waste_predicted",
    "waste_selected_budget",
    "waste_max_tokens",
)
WASTE_DEFINITIONS: Final[dict[MetricName, str]] = {
    "waste_predicted": "predicted / actual",
    "waste_selected_budget": "selected_budget / actual",
    "waste_max_tokens": "max_tokens sent (actual_max_tokens) / actual",
}
WASTE_POPULATIONS: Final[dict[MetricName, str]] = {
    "waste_predicted": f"{NON_TRUNCATED} with actual > 0 and predicted > 0",
    "waste_selected_budget": f"{NON_TRUNCATED} with actual > 0 and a known selected_budget (> 0)",
    "waste_max_tokens": f"{NON_TRUNCATED} with actual > 0 and a recorded actual_max_tokens",
}
QUANTILES: Final[dict[MetricName, tuple[Fraction, ...]]] = {
    "smape": (MEDIAN,),
    "waste_predicted": (MEDIAN, P90),
    "waste_selected_budget": (MEDIAN, P90),
    "waste_max_tokens": (MEDIAN, P90),
}


# --------------------------------------------------------------------------------------------
# The report's models


class Filters(BaseModel):
    success_only: bool
    run_ids: list[str]
    categories: list[str]
    """As given; matched after normalisation."""
    complexities: list[str]
    since: UtcTimestamp | None
    until: UtcTimestamp | None


class TargetCheck(BaseModel):
    """One Tier-1 rate: count of rows out of rows, against its target (a maximum), if any."""

    count: int
    rows: int
    rate: float | None
    target: float | None
    met: bool | None
    """None when there is no target or no row."""


class Tier1(BaseModel):
    population: str
    rows: int
    under_multiplier: float
    underestimation: TargetCheck
    truncation: TargetCheck
    success: TargetCheck


class WasteStats(BaseModel):
    metric: str
    definition: str
    population: str
    n: int
    mean: float | None
    median: float | None
    p90: float | None
    p90_guide: float | None = None
    """An informational (not gating) ceiling for p90: 3× for predicted / actual."""


class SmapeStats(BaseModel):
    population: str
    n: int
    mean: float | None
    median: float | None
    min: float | None
    max: float | None


class TokenMeans(BaseModel):
    population: str
    rows: int
    predicted_mean: float | None
    actual_mean: float | None
    """For truncated rows, a lower bound."""


class TruncatedStats(TokenMeans):
    underestimated: int
    underestimated_rate: float | None


class Stratum(BaseModel):
    value: str
    rows: int
    success: int
    truncated: int
    underestimated: int
    success_rate: float
    truncation_rate: float
    underestimation_rate: float
    smape_n: int
    smape_mean: float | None
    """Over the stratum's non-truncated rows."""
    waste_mean: float | None
    """predicted / actual, over the stratum's non-truncated rows."""


class Strata(BaseModel):
    population: str
    note: str
    by_category: list[Stratum]
    by_complexity: list[Stratum]
    by_deliverable_bucket: list[Stratum]


VerdictStatus = Literal["within_targets", "tuning_needed", "no_samples"]


class Verdict(BaseModel):
    status: VerdictStatus
    summary: str
    reasons: list[str]
    actions: list[str]


class AnalysisReport(BaseModel):
    generated_at: UtcTimestamp
    filters: Filters
    under_multiplier: float
    table_rows: int
    """Rows in token_estimation_v2_events before any filter."""
    rows: int
    """Rows analysed (after the filters)."""
    first_timestamp: UtcTimestamp | None
    last_timestamp: UtcTimestamp | None
    tier1: Tier1
    waste: list[WasteStats]
    smape: SmapeStats
    non_truncated: TokenMeans
    truncated: TruncatedStats
    strata: Strata | None
    coverage: CoverageReport
    verdict: Verdict
    next_steps: list[str]
    definitions: dict[str, str]
    warnings: list[str]

    @property
    def targets_met(self) -> bool:
        return self.verdict.status == "within_targets"
