"""A term for the prompt's size, scored on the proposal's own folds (report only).

Input tokens are known before a call, so an estimate could grow with the prompt. On the rows
that carry them (drained rows, `input_sizes`), the term is a multiplicative factor on top of the
proposed estimate:

    estimate × exp(level) × (input_tokens / reference) ** exponent

fitted by least squares on log(actual / proposed estimate) against log(input_tokens /
reference), where the reference is the median input size of the rows fitted; the exponent is
bounded to `EXPONENT_BOUNDS` and the whole factor to the steps' bounds (×0.25 … ×4). The level
centres the term: the median residual once the size is accounted for, minus the median residual
without it, so the term only tilts the estimate with size and leaves the proposal's own level
(its damped steps) alone.

The backtest uses the proposal's folds: in each fold, the term is fitted on the other folds'
clean rows against that fold's proposed estimates, and scored on the fold's rows with input
tokens, next to the current set and the proposal without the term, with the same metrics. The
budget with the term is the proposal's budget rule (its base and buffer for the fold) applied
to the larger or smaller estimate. Rows without input tokens would keep the proposal's estimate;
the term is not written into the proposed set (docs/calibration.md says why).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
from pydantic import BaseModel

from autopack.calibrate.backtest import CrossValidation, SetScore, score
from autopack.calibrate.fit import CENSORED_NEED, STEP_MAX, STEP_MIN, Layout
from autopack.calibrate.input_sizes import InputSizes
from autopack.calibrate.samples import FloatArray, IntArray
from autopack.calibrate.stats import weighted_median

EXPONENT_BOUNDS: Final = (-1.0, 1.0)
"""At most proportional to the prompt's size, either way: a steeper fit is noise."""
MIN_SMAPE_GAIN: Final = 1.0
"""Percentage points of held-out median SMAPE the term must gain to be said to help: a few
tenths on a few dozen rows is noise, not a reason to change the estimator."""


@dataclass(frozen=True)
class SizeTerm:
    level: float
    """log of the factor at the reference size."""
    exponent: float
    reference: float
    """Input tokens where the factor is exp(level)."""

    def apply(self, estimates: IntArray, input_tokens: FloatArray) -> IntArray:
        """The estimates with the term (as the estimator would round them)."""
        log_factor = self.level + self.exponent * np.log(
            np.maximum(input_tokens, 1.0) / self.reference
        )
        multiplier = np.exp(np.clip(log_factor, math.log(STEP_MIN), math.log(STEP_MAX)))
        scaled: IntArray = np.maximum(1, np.floor(estimates * multiplier)).astype(np.int64)
        return scaled


def fit_size_term(
    actual: FloatArray, estimates: IntArray, input_tokens: FloatArray, weight: FloatArray
) -> SizeTerm | None:
    """The term for these clean rows (None without rows to fit)."""
    total = float(weight.sum())
    if total <= 0:
        return None
    reference = weighted_median(input_tokens, weight)
    x = np.log(np.maximum(input_tokens, 1.0) / reference)
    residual = np.log(np.maximum(actual, 1.0) / np.maximum(estimates, 1))
    x_mean = float((x * weight).sum() / total)
    spread = float((weight * (x - x_mean) ** 2).sum())
    exponent = 0.0
    if spread > 1e-12:
        r_mean = float((residual * weight).sum() / total)
        slope = float((weight * (x - x_mean) * (residual - r_mean)).sum()) / spread
        exponent = min(EXPONENT_BOUNDS[1], max(EXPONENT_BOUNDS[0], slope))
    # Centred so the term tilts the estimate with size and never shifts the proposal's own
    # level: a "help" from re-levelling (undoing the damping) would not be the size's.
    level = weighted_median(residual - exponent * x, weight) - weighted_median(residual, weight)
    return SizeTerm(level=level, exponent=exponent, reference=reference)


class SizeTermBacktest(BaseModel):
    """A proposal's `backtest_size_term` key (docs/json.md)."""

    status: Literal["fitted", "not_enough_rows"]
    verdict: str
    helps: bool
    """Held-out median SMAPE at least `MIN_SMAPE_GAIN` points lower than the proposal alone,
    mean SMAPE not higher, and no more truncation."""
    in_proposed_set: bool = False
    """Always false in this release: the term is reported, never proposed."""
    n: int
    """Clean rows with input tokens (scored for SMAPE, underestimation, waste)."""
    censored: int
    """Truncated rows with input tokens (also in the truncation rate)."""
    rows_with_input_tokens: int
    qualifying_rows: int
    """Every row the proposal read (clean and truncated), with or without input tokens."""
    min_rows: int
    split: str
    exponent: float | None
    """Fitted on every clean row with input tokens, on top of the proposed set."""
    level: float | None
    """The factor at the reference size."""
    reference_input_tokens: float | None
    exponent_bounds: tuple[float, float] = EXPONENT_BOUNDS
    exponent_by_fold: dict[str, float] | None = None
    current: SetScore | None = None
    proposed: SetScore | None = None
    proposed_with_size_term: SetScore | None = None


def backtest_size_term(
    layout: Layout,
    validation: CrossValidation,
    sizes: InputSizes,
    proposed: IntArray,
    min_rows: int,
) -> SizeTermBacktest:
    """Score current, proposed and proposed + size term on the held-out rows with input
    tokens; `proposed` is the proposal's estimate per feature tuple (for the reported term)."""
    samples, predictions = layout.samples, layout.predictions
    common = {
        "n": sizes.clean_rows,
        "censored": sizes.censored_rows,
        "rows_with_input_tokens": sizes.rows,
        "qualifying_rows": samples.clean_rows + samples.censored_rows,
        "min_rows": min_rows,
        "split": samples.split,
    }
    if sizes.clean_rows < min_rows:
        return SizeTermBacktest(
            status="not_enough_rows",
            verdict=(
                f"not enough rows with input tokens: {sizes.clean_rows} clean rows carry them, "
                f"{min_rows} needed (--min-samples); drained rows carry them, imported history "
                "does not"
            ),
            helps=False,
            exponent=None,
            level=None,
            reference_input_tokens=None,
            **common,
        )
    clean = ~sizes.censored
    size = sizes.actual.size
    held_out = np.zeros(size, dtype=np.int64)
    held_out_budget = np.zeros(size, dtype=np.int64)
    with_term = np.zeros(size, dtype=np.int64)
    with_term_budget = np.zeros(size, dtype=np.int64)
    by_fold: dict[str, float] = {}
    for fold, fitted in sorted(validation.by_fold.items()):
        rows = sizes.fold == fold
        if not rows.any():
            continue
        train = (sizes.fold != fold) & clean
        term = fit_size_term(
            sizes.actual[train],
            fitted.estimates[sizes.feature[train]],
            sizes.input_tokens[train],
            sizes.weight[train],
        )
        feature = sizes.feature[rows]
        estimates = fitted.estimates[feature]
        termed = estimates if term is None else term.apply(estimates, sizes.input_tokens[rows])
        if term is not None:
            by_fold[str(fold)] = round(term.exponent, 4)
        held_out[rows] = estimates
        held_out_budget[rows] = predictions.budgets(fitted.estimates, fitted.base, fitted.start)[
            feature
        ]
        with_term[rows] = termed
        with_term_budget[rows] = predictions.entry_budgets(
            feature, termed, fitted.base, fitted.start
        )
    need = np.where(sizes.censored, sizes.actual * CENSORED_NEED, sizes.actual)

    def scored(estimates: IntArray, budgets: IntArray) -> SetScore:
        return score(
            sizes.actual,
            need,
            sizes.censored,
            sizes.weight,
            estimates.astype(np.float64),
            budgets.astype(np.float64),
        )

    current = scored(predictions.current[sizes.feature], predictions.current_budget[sizes.feature])
    without = scored(held_out, held_out_budget)
    including = scored(with_term, with_term_budget)
    term = fit_size_term(
        sizes.actual[clean],
        proposed[sizes.feature[clean]],
        sizes.input_tokens[clean],
        sizes.weight[clean],
    )
    assert term is not None  # at least min_rows clean rows
    helps = (
        including.smape_median <= without.smape_median - MIN_SMAPE_GAIN
        and including.smape_mean <= without.smape_mean
        and including.truncation_rate <= without.truncation_rate
    )
    return SizeTermBacktest(
        status="fitted",
        verdict=_verdict(helps, sizes.clean_rows, term, without, including),
        helps=helps,
        exponent=round(term.exponent, 4),
        level=round(math.exp(term.level), 4),
        reference_input_tokens=round(term.reference, 1),
        exponent_by_fold=by_fold,
        current=current,
        proposed=without,
        proposed_with_size_term=including,
        **common,
    )


def _verdict(helps: bool, n: int, term: SizeTerm, without: SetScore, including: SetScore) -> str:
    figures = (
        f"median SMAPE {without.smape_median:.1f}% -> {including.smape_median:.1f}%, "
        f"truncation {without.truncation_rate:.1%} -> {including.truncation_rate:.1%}, "
        f"median waste {without.waste_median:.2f}x -> {including.waste_median:.2f}x; "
        f"output scales as input^{term.exponent:.2f}"
    )
    if helps:
        return f"the size term helps on {n} held-out rows with input tokens ({figures})"
    return (
        f"the size term does not help on {n} held-out rows with input tokens ({figures}); "
        f"it needs a median SMAPE at least {MIN_SMAPE_GAIN:g} point lower, no higher mean "
        "SMAPE and no more truncation"
    )
