"""The fit: per-group scales with partial pooling, bounded and damped steps, and budgets.

Scales (point estimates), per (category, complexity) group, on the log of actual/predicted
(medians, robust to outliers):
- a category's pooled step is the median over all its clean rows, shrunk toward no change with
  weight n / (n + min_group_samples);
- a group with at least `min_group_samples` clean rows: its own median log-ratio, shrunk
  toward its category's pooled median with weight n / (n + min_group_samples);
- a group with fewer: its category's pooled median;
- a group with none: unchanged (evidence never moves what it did not measure);
- the step is damped (× damping, chosen by the backtest) and bounded to ×0.25 … ×4;
- it applies to phases with up to the largest deliverable count in the group's evidence.

Budgets, per group with at least `min_group_samples` clean rows: the budget base and buffer
that give the lowest median waste while the share of rows the budget would not have covered
stays at or under the runbook's 2 % target and never above the current set's. Truncated rows
are censored (their real need is above what they produced): they count as covered only by a
budget at least `CENSORED_NEED` × their output. In the fit every covered row also needs
`HEADROOM` to spare, so new samples slightly above the old ones are still covered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np

from autopack.calibrate.predict import FeaturePredictions
from autopack.calibrate.samples import BoolArray, FloatArray, IntArray, SampleSet
from autopack.calibrate.stats import weighted_median, weighted_quantile, weighted_share
from autopack.estimator import CoefficientSet

STEP_MIN: Final = 0.25
STEP_MAX: Final = 4.0
DAMPING_CANDIDATES: Final = (0.25, 0.5, 0.75, 1.0)
TRUNCATION_TARGET: Final = 0.02
"""The runbook's target: at most 2 % of calls truncated."""
CENSORED_NEED: Final = 1.25
"""A truncated row is assumed to need its output × the escalation factor (1.25)."""
HEADROOM: Final = 1.1
BASE_FRACTIONS: Final = (1.0, 0.75, 0.5, 0.375, 0.25, 0.125, 0.0)
"""Budget bases tried: these fractions of the current base (rounded to 256 tokens)."""
BUFFER_STEP: Final = 0.05
SCALE_DECIMALS: Final = 4
BUFFER_MAX: Final = 4.0

Group = tuple[str, str]
Rule = Literal["own", "pooled", "unchanged"]


@dataclass(frozen=True)
class ScaleFit:
    """The evidence of one group and the step it supports, before damping."""

    n: float
    own_log_ratio: float | None
    pooled_log_ratio: float | None
    log_step: float
    rule: Rule
    max_deliverables: int
    own_weight: float = 0.0
    """The weight of the group's own median in its step (the rest is its category's)."""
    pooled_weight: float = 0.0
    """The weight of the category's median in its pooled step (the rest is "no change")."""


BudgetHow = Literal["fitted", "compensated", "unchanged"]


@dataclass(frozen=True)
class BudgetFit:
    base: int
    buffer: float
    how: BudgetHow
    """fitted: searched as above. compensated: too little evidence (or no feasible pair) for
    a group whose estimate moves: the buffer is divided by the step, so its budgets stay what
    they are today (a lower estimate never buys more truncation). unchanged: as today."""


@dataclass
class Layout:
    """Entry-level views of the samples that every fit reuses."""

    samples: SampleSet
    predictions: FeaturePredictions
    groups: list[Group]
    group_of_feature: IntArray
    group_of_entry: IntArray
    category_of_group: IntArray
    log_ratio: FloatArray
    """log(actual / current prediction) per entry (meaningful for clean entries)."""
    need: FloatArray
    """What each entry needed: its output, or × CENSORED_NEED when truncated (a lower bound)."""
    default_buffer: float
    current_group_buffer: dict[Group, float | None]
    current_group_reach: dict[Group, int]

    @classmethod
    def build(
        cls, samples: SampleSet, predictions: FeaturePredictions, current: CoefficientSet
    ) -> Layout:
        groups = sorted(set(predictions.group))
        index = {group: i for i, group in enumerate(groups)}
        categories = sorted({category for category, _ in groups})
        category_index = {category: i for i, category in enumerate(categories)}
        group_of_feature = np.array([index[g] for g in predictions.group], dtype=np.int64)
        current_prediction = predictions.current[samples.feature].astype(np.float64)
        buffers: dict[Group, float | None] = {}
        reach: dict[Group, int] = {}
        for category, complexity in groups:
            calibrated = current.calibration.get(category, {}).get(complexity)
            buffers[(category, complexity)] = calibrated.buffer if calibrated else None
            reach[(category, complexity)] = calibrated.max_deliverables if calibrated else 0
        return cls(
            samples=samples,
            predictions=predictions,
            groups=groups,
            group_of_feature=group_of_feature,
            group_of_entry=group_of_feature[samples.feature],
            category_of_group=np.array([category_index[c] for c, _ in groups], dtype=np.int64),
            log_ratio=np.log(np.maximum(samples.actual, 1.0) / np.maximum(current_prediction, 1)),
            need=np.where(samples.censored, samples.actual * CENSORED_NEED, samples.actual),
            default_buffer=current.budget.buffer,
            current_group_buffer=buffers,
            current_group_reach=reach,
        )


def fit_scales(layout: Layout, train: BoolArray, min_group_samples: int) -> dict[Group, ScaleFit]:
    """Each group's step (log of the factor on the current estimate), before damping."""
    samples = layout.samples
    clean = train & ~samples.censored
    weights = samples.weight
    pooled: dict[int, tuple[float, float]] = {}
    """category → (pooled step, the weight of its own median in it)"""
    for category in np.unique(layout.category_of_group):
        in_category = clean & (layout.category_of_group[layout.group_of_entry] == category)
        n = float(weights[in_category].sum())
        if n > 0:
            # The category's own evidence is itself shrunk toward "no change" (the current
            # coefficients), so one or two rows of a category cannot move it far.
            median = weighted_median(layout.log_ratio[in_category], weights[in_category])
            pooled[int(category)] = (
                median * n / (n + min_group_samples),
                n / (n + min_group_samples),
            )
    fits: dict[Group, ScaleFit] = {}
    for group_id, group in enumerate(layout.groups):
        mask = clean & (layout.group_of_entry == group_id)
        n = float(weights[mask].sum())
        category_median, pooled_weight = pooled.get(
            int(layout.category_of_group[group_id]), (None, 0.0)
        )
        reach = layout.current_group_reach[group]
        if n == 0 or category_median is None:
            fits[group] = ScaleFit(0.0, None, category_median, 0.0, "unchanged", reach)
            continue
        deliverables = layout.predictions.deliverables[samples.feature[mask]]
        reach = max(reach, int(deliverables.max()))
        own = weighted_median(layout.log_ratio[mask], weights[mask])
        if n < min_group_samples:
            fits[group] = ScaleFit(
                n, own, category_median, category_median, "pooled", reach, 0.0, pooled_weight
            )
            continue
        weight = n / (n + min_group_samples)
        step = weight * own + (1 - weight) * category_median
        fits[group] = ScaleFit(n, own, category_median, step, "own", reach, weight, pooled_weight)
    return fits


def factor(scale_fit: ScaleFit, damping: float) -> float:
    """The bounded, damped multiplier on the current estimate."""
    if scale_fit.rule == "unchanged":
        return 1.0
    return float(min(STEP_MAX, max(STEP_MIN, math.exp(damping * scale_fit.log_step))))


def proposed_estimates(
    layout: Layout, scales: dict[Group, ScaleFit], damping: float
) -> tuple[IntArray, FloatArray, IntArray]:
    """Per feature: the proposed estimate, the proposed absolute scale, and the reach."""
    predictions = layout.predictions
    estimates = predictions.current.copy()
    absolute = predictions.current_scale.copy()
    reach = np.zeros(len(layout.groups), dtype=np.int64)
    multipliers = np.ones(len(layout.groups), dtype=np.float64)
    for group_id, group in enumerate(layout.groups):
        fit = scales.get(group)
        if fit is None or fit.rule == "unchanged":
            continue
        reach[group_id] = fit.max_deliverables
        multipliers[group_id] = factor(fit, damping)
    of_feature = layout.group_of_feature
    covered = (predictions.deliverables >= 1) & (predictions.deliverables <= reach[of_feature])
    # Rounded as the proposed set stores it, so these are exactly the estimator's results.
    scale = np.round(predictions.current_scale * multipliers[of_feature], SCALE_DECIMALS)
    absolute = np.where(covered, scale, absolute)
    scaled = np.maximum(1, np.floor(predictions.raw * scale)).astype(np.int64)
    estimates = np.where(covered, scaled, estimates)
    return estimates, absolute, reach[of_feature]


def fit_budgets(
    layout: Layout,
    train: BoolArray,
    estimates: IntArray,
    scales: dict[Group, ScaleFit],
    damping: float,
    min_group_samples: int,
) -> dict[Group, BudgetFit]:
    """Each group's budget base and buffer (see the module docstring and `BudgetFit`)."""
    samples, predictions = layout.samples, layout.predictions
    weights = samples.weight
    fits: dict[Group, BudgetFit] = {}
    for group_id, group in enumerate(layout.groups):
        mask = train & (layout.group_of_entry == group_id)
        scale_fit = scales.get(group)
        of_group = np.flatnonzero(layout.group_of_feature == group_id)
        current_base = int(predictions.base[of_group[0]]) if of_group.size else 0
        current_buffer = layout.current_group_buffer[group] or layout.default_buffer
        if scale_fit is None or scale_fit.rule == "unchanged":
            fits[group] = BudgetFit(current_base, current_buffer, "unchanged")
            continue
        clean_n = float(weights[mask & ~samples.censored].sum())
        searched = (
            _search_budget(layout, mask, estimates, current_base)
            if clean_n >= min_group_samples
            else None
        )
        # A raised estimate keeps today's buffer (its budgets rise with it); a lowered one
        # gets a buffer raised by the same step, so its budgets stay as today.
        step = min(1.0, factor(scale_fit, damping))
        compensated = math.ceil(current_buffer / step * 100 - 1e-9) / 100
        fits[group] = searched or BudgetFit(current_base, compensated, "compensated")
    return fits


def _search_budget(
    layout: Layout, mask: BoolArray, estimates: IntArray, current_base: int
) -> BudgetFit | None:
    samples, predictions = layout.samples, layout.predictions
    feature = samples.feature[mask]
    weights = samples.weight[mask]
    need = layout.need[mask]
    actual = samples.actual[mask]
    clean = ~samples.censored[mask]
    total = float(weights.sum())
    current_uncovered = weighted_share(predictions.current_budget[feature] < need, weights)
    allowed = min(TRUNCATION_TARGET, current_uncovered) * total
    estimate = estimates[feature].astype(np.float64)
    raised = predictions.raised_to[feature]
    override = predictions.override[feature]
    cap = predictions.cap[feature]
    wanted = need * HEADROOM
    best: tuple[float, float, int] | None = None
    for fraction in BASE_FRACTIONS:
        base = int(round(current_base * fraction / 256) * 256)
        buffer = _smallest_buffer(base, estimate, raised, override, cap, wanted, weights, allowed)
        if buffer is None:
            continue
        budgets = _budgets(base, buffer, estimate, raised, override, cap)
        waste = weighted_median(budgets[clean] / actual[clean], weights[clean])
        candidate = (waste, -buffer, -base)
        if best is None or candidate < best:
            best = candidate
    if best is None:
        return None
    return BudgetFit(base=-best[2], buffer=-best[1], how="fitted")


def _budgets(
    base: int,
    buffer: float,
    estimate: FloatArray,
    raised: FloatArray,
    override: FloatArray,
    cap: IntArray,
) -> FloatArray:
    effective = np.where(np.isnan(override), np.maximum(buffer, raised), override)
    return np.minimum(np.maximum(base, np.floor(estimate * effective)), cap).astype(np.float64)


def _smallest_buffer(
    base: int,
    estimate: FloatArray,
    raised: FloatArray,
    override: FloatArray,
    cap: IntArray,
    wanted: FloatArray,
    weights: FloatArray,
    allowed: float,
) -> float | None:
    """The smallest buffer on the grid whose budgets leave at most `allowed` rows uncovered."""
    ratio = wanted / np.maximum(estimate, 1.0)
    fixed = (~np.isnan(override)) | (cap < wanted) | (ratio <= raised) | (base >= wanted)
    fixed_budgets = _budgets(base, 0.0, estimate, raised, override, cap)
    uncovered_fixed = float(weights[fixed & (fixed_budgets < wanted)].sum())
    slack = allowed - uncovered_fixed
    if slack < 0:
        return None
    variable = ~fixed
    if not variable.any():
        return 1.0
    # Leaving the rows with the highest ratios uncovered is cheapest; the buffer must reach
    # the ratio of the first row that no longer fits in the slack.
    threshold = weighted_quantile(
        ratio[variable], weights[variable], max(0.0, 1 - slack / float(weights[variable].sum()))
    )
    buffer = max(1.0, math.ceil(threshold / BUFFER_STEP) * BUFFER_STEP)
    while buffer <= BUFFER_MAX:
        budgets = _budgets(base, buffer, estimate, raised, override, cap)
        if float(weights[budgets < wanted].sum()) <= allowed + 1e-9:
            return round(buffer, 2)
        buffer = round(buffer + BUFFER_STEP, 2)
    return None
