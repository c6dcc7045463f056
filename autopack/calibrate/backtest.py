"""Scoring a set on samples, and the cross-validated backtest inside every proposal.

Metrics (DESIGN §6): SMAPE (percent, 0–200) median and mean, underestimation rate (actual >
estimate), truncation rate at the budget the set selects (a truncated row counts as needing
`CENSORED_NEED` × its output), and median waste (budget / actual). SMAPE, underestimation and
waste are over clean rows; truncation over clean and truncated rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel

from autopack.calibrate.fit import (
    DAMPING_CANDIDATES,
    BudgetFit,
    Group,
    Layout,
    ScaleFit,
    fit_budgets,
    fit_scales,
    proposed_estimates,
)
from autopack.calibrate.samples import BoolArray, FloatArray, IntArray
from autopack.calibrate.stats import weighted_mean, weighted_median, weighted_share


class SetScore(BaseModel):
    """One set's scores on a backtest's samples (DESIGN §6)."""

    smape_median: float
    smape_mean: float
    underestimation_rate: float
    truncation_rate: float
    waste_median: float


class BacktestResult(BaseModel):
    """`calibrate backtest` and a proposal's `backtest` key: current vs proposed, same rows."""

    n: int
    """Clean rows scored (SMAPE, underestimation, waste)."""
    censored: int
    """Truncated rows that also count towards the truncation rate."""
    split: str
    current: SetScore
    proposed: SetScore
    model: str | None = None
    current_set: str | None = None
    """The set `current` scores (the base set, or the DB's active set for the model)."""
    proposed_set: str | None = None


def score(
    actual: FloatArray,
    need: FloatArray,
    censored: BoolArray,
    weights: FloatArray,
    estimates: FloatArray,
    budgets: FloatArray,
) -> SetScore:
    """A set's scores from per-entry estimates and budgets."""
    clean = ~censored
    a, e, w = actual[clean], estimates[clean], weights[clean]
    smape = 200.0 * np.abs(a - e) / np.maximum(a + e, 1.0)
    return SetScore(
        smape_median=round(weighted_median(smape, w), 2),
        smape_mean=round(weighted_mean(smape, w), 2),
        underestimation_rate=round(weighted_share(a > e, w), 4),
        truncation_rate=round(weighted_share(budgets < need, weights), 4),
        waste_median=round(weighted_median(budgets[clean] / np.maximum(a, 1.0), w), 3),
    )


def feature_budget_terms(
    layout: Layout, reach: IntArray, budgets: dict[Group, BudgetFit]
) -> tuple[IntArray, FloatArray]:
    """Per feature: the budget base and the buffer's starting value under the proposal."""
    predictions = layout.predictions
    base = predictions.base.copy()
    start = predictions.start.copy()
    for group_id, group in enumerate(layout.groups):
        fit = budgets.get(group)
        if fit is None or fit.how == "unchanged":
            continue
        of_group = layout.group_of_feature == group_id
        if fit.how == "fitted":
            base = np.where(of_group, fit.base, base)
        in_reach = of_group & (predictions.deliverables >= 1) & (predictions.deliverables <= reach)
        start = np.where(in_reach, fit.buffer, start)
    return base, start


@dataclass(frozen=True)
class FoldPrediction:
    """What one fold's fit (at the chosen damping) predicts, per feature tuple: the held-out
    estimate and the budget's base and buffer start (for scoring other rows of that fold)."""

    estimates: IntArray
    base: IntArray
    start: FloatArray


@dataclass
class CrossValidation:
    """The proposal's own backtest: every score is on rows its fit did not see."""

    damping: float
    smape_by_damping: dict[float, float]
    result: BacktestResult
    improves: bool
    folds_fitted: list[dict[Group, ScaleFit]] = field(default_factory=list)
    by_fold: dict[int, FoldPrediction] = field(default_factory=dict)


def cross_validate(layout: Layout, min_group_samples: int) -> CrossValidation:
    """Held-out scores per fold; the damping is the candidate with the lowest median SMAPE."""
    samples = layout.samples
    folds = sorted({int(f) for f in np.unique(samples.fold)})
    clean = ~samples.censored
    held_out_estimates = {d: np.zeros(samples.actual.size) for d in DAMPING_CANDIDATES}
    scales_by_fold: dict[int, dict[Group, ScaleFit]] = {}
    for fold in folds:
        train = samples.fold != fold
        scales = fit_scales(layout, train, min_group_samples)
        scales_by_fold[fold] = scales
        held_out = ~train
        for damping in DAMPING_CANDIDATES:
            estimates, _, _ = proposed_estimates(layout, scales, damping)
            held_out_estimates[damping][held_out] = estimates[samples.feature[held_out]]
    smape: dict[float, float] = {}
    for damping, held_out_values in held_out_estimates.items():
        a, e = samples.actual[clean], held_out_values[clean]
        values = 200.0 * np.abs(a - e) / np.maximum(a + e, 1.0)
        smape[damping] = round(weighted_median(values, samples.weight[clean]), 2)
    damping = min(DAMPING_CANDIDATES, key=lambda d: (smape[d], d))
    held_out_budgets = np.zeros(samples.actual.size)
    by_fold: dict[int, FoldPrediction] = {}
    for fold in folds:
        train = samples.fold != fold
        estimates, _, reach = proposed_estimates(layout, scales_by_fold[fold], damping)
        budgets = fit_budgets(
            layout, train, estimates, scales_by_fold[fold], damping, min_group_samples
        )
        base, start = feature_budget_terms(layout, reach, budgets)
        by_fold[fold] = FoldPrediction(estimates, base, start)
        per_feature = layout.predictions.budgets(estimates, base, start)
        held_out_budgets[~train] = per_feature[samples.feature[~train]]
    current = _current_score(layout)
    proposed = score(
        samples.actual,
        layout.need,
        samples.censored,
        samples.weight,
        held_out_estimates[damping],
        held_out_budgets,
    )
    result = BacktestResult(
        model=samples.model,
        n=samples.clean_rows,
        censored=samples.censored_rows,
        split=samples.split,
        current=current,
        proposed=proposed,
    )
    improves = (
        proposed.smape_median < current.smape_median
        and proposed.truncation_rate <= current.truncation_rate
    )
    return CrossValidation(damping, smape, result, improves, list(scales_by_fold.values()), by_fold)


def _current_score(layout: Layout) -> SetScore:
    samples, predictions = layout.samples, layout.predictions
    return score(
        samples.actual,
        layout.need,
        samples.censored,
        samples.weight,
        predictions.current[samples.feature].astype(np.float64),
        predictions.current_budget[samples.feature].astype(np.float64),
    )
