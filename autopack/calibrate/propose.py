"""`calibrate propose`: read the samples once, fit, backtest, and assemble the proposal.

Never writes the DB or any coefficient file: the DB is opened read-only by the command and
only the proposal files (written by the caller) leave this module.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np

from autopack.calibrate.backtest import CrossValidation, cross_validate, feature_budget_terms
from autopack.calibrate.charts import CategoryPoints, ChartData, GroupRatios, TradeOff
from autopack.calibrate.fit import (
    BASE_FRACTIONS,
    CENSORED_NEED,
    DAMPING_CANDIDATES,
    HEADROOM,
    STEP_MAX,
    STEP_MIN,
    TRUNCATION_TARGET,
    BudgetFit,
    Group,
    Layout,
    ScaleFit,
    factor,
    fit_budgets,
    fit_scales,
    proposed_estimates,
)
from autopack.calibrate.input_sizes import InputSizes, read_input_sizes
from autopack.calibrate.predict import predict_features
from autopack.calibrate.report import (
    BudgetParams,
    GroupEvidence,
    Method,
    Proposal,
    SampleSummary,
)
from autopack.calibrate.samples import SampleFilters, SampleSet, read_samples, read_snapshot
from autopack.calibrate.size_term import backtest_size_term
from autopack.calibrate.stats import weighted_quantile
from autopack.db.clock import utc_text
from autopack.db.engine import Database, translated_errors
from autopack.estimator import CoefficientSet, coefficient_set_hash
from autopack.estimator.active import resolve_coefficients
from autopack.estimator.coefficients import (
    ESTIMATOR_VERSION,
    LATEST_FORMAT_VERSION,
    GroupCalibration,
)

DEFAULT_MIN_SAMPLES: Final = 20
DEFAULT_MIN_GROUP_SAMPLES: Final = 5
BOOTSTRAP_ROUNDS: Final = 400
BOOTSTRAP_ROUNDS_LARGE: Final = 200
"""Resamples for groups of more than `LARGE_GROUP` rows (their interval is narrow anyway)."""
LARGE_GROUP: Final = 10_000
BOOTSTRAP_SEED: Final = 20251229
LOG_BIN: Final = 0.01
"""Log-ratios are binned this finely for the bootstrap (1 %), so it costs the same at scale."""

SHRINKAGE_RULE: Final = (
    "Each (category, complexity) group's step is the median of log(actual / current "
    "prediction) over its clean rows. A category's pooled step is the median over all its "
    "clean rows, shrunk toward no change with weight n / (n + min-group-samples). A group with "
    "at least --min-group-samples rows uses its own median, shrunk toward its category's pooled "
    "step with weight n / (n + min-group-samples); a group with fewer takes its category's "
    "pooled step; a group or "
    "category without rows keeps its current coefficient. The step is multiplied by the "
    "damping (chosen by the backtest among {damping}) and bounded to x{low:g} ... x{high:g}. "
    "It applies to the group's phases with up to the largest deliverable count in its evidence."
)
BUDGET_RULE: Final = (
    "For each group with at least --min-group-samples clean rows, the budget base (tried at "
    "{fractions} of the current base) and buffer (steps of 0.05) with the lowest median waste "
    "such that the rows the budget would not cover stay at or under {target:.0%} and never "
    "above the current set's share. A truncated row is censored: it counts as covered only by "
    "a budget of at least {censored:g} x its output. Every covered row needs {headroom:g} x "
    "headroom in the fit."
)


@dataclass(frozen=True)
class ProposeOptions:
    filters: SampleFilters
    min_samples: int = DEFAULT_MIN_SAMPLES
    min_group_samples: int = DEFAULT_MIN_GROUP_SAMPLES
    coefficients: str | None = None
    """The set to measure against (default: the DB's active set for the model)."""


def utc_stamp(moment: datetime) -> str:
    return moment.strftime("%Y%m%d_%H%M%S")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:60] or "model"


def propose(db: Database, options: ProposeOptions, *, now: datetime | None = None) -> Proposal:
    """Fit a proposal from the DB's telemetry (one read transaction)."""
    moment = now or datetime.now(UTC)
    with (
        translated_errors(db),
        db.engine.connect() as connection,
        read_snapshot(connection) as snapshot,
    ):
        samples = read_samples(snapshot, options.filters, min_samples=options.min_samples)
        sizes = read_input_sizes(snapshot, options.filters, samples)
        current = resolve_coefficients(snapshot, model=samples.model, name=options.coefficients)
    return build_proposal(samples, current, options, moment, target=_target(db), sizes=sizes)


def _target(db: Database) -> dict[str, Any]:
    return {"url": db.target.display_url, "backend": db.target.backend}


def build_proposal(
    samples: SampleSet,
    current: CoefficientSet,
    options: ProposeOptions,
    moment: datetime,
    *,
    target: dict[str, Any],
    sizes: InputSizes | None = None,
) -> Proposal:
    """The proposal for samples already read (plain computation; no DB). `sizes`: the rows
    with input tokens, for the size-term section (none: the section says so)."""
    predictions = predict_features(samples.features, current)
    layout = Layout.build(samples, predictions, current)
    validation = cross_validate(layout, options.min_group_samples)
    everything = np.ones(samples.actual.size, dtype=bool)
    scales = fit_scales(layout, everything, options.min_group_samples)
    damping = validation.damping if validation.improves else 0.0
    if not validation.improves:
        scales = {group: _unchanged(fit) for group, fit in scales.items()}
    estimates, absolute, reach = proposed_estimates(layout, scales, damping)
    budgets = fit_budgets(layout, everything, estimates, scales, damping, options.min_group_samples)
    proposed_set = _proposed_set(current, layout, scales, budgets, absolute, samples, moment)
    groups = [
        _evidence(layout, group_id, scales[group], budgets[group], damping, current)
        for group_id, group in enumerate(layout.groups)
    ]
    proposal = Proposal(
        estimator_version=ESTIMATOR_VERSION,
        coefficients_format_version=proposed_set.schema_version,
        generated_at=utc_text(moment.replace(microsecond=0)),
        target=target,
        base_set={"name": current.name, "hash": coefficient_set_hash(current)},
        changed=validation.improves,
        verdict=_verdict(validation),
        samples=SampleSummary(
            model=samples.model,
            models=samples.models,
            clean=samples.clean_rows,
            censored=samples.censored_rows,
            runs=samples.runs,
            without_paths=samples.rows_without_paths,
            excluded_without_deliverables=samples.excluded_without_deliverables,
            actual_rounded=samples.actual_rounded,
            include_simulated=options.filters.include_simulated,
            require_phase_complete=options.filters.require_phase_complete,
            run_ids=list(options.filters.run_ids),
        ),
        coverage={
            "ready": samples.coverage.ready,
            "verdict": samples.coverage.verdict,
            "by_category": samples.coverage.by_category,
        },
        method=Method(
            min_samples=options.min_samples,
            min_group_samples=options.min_group_samples,
            damping=damping,
            damping_candidates=list(DAMPING_CANDIDATES),
            smape_by_damping={f"{d:g}": v for d, v in validation.smape_by_damping.items()},
            step_bounds=(STEP_MIN, STEP_MAX),
            truncation_target=TRUNCATION_TARGET,
            censored_need=CENSORED_NEED,
            headroom=HEADROOM,
            split=samples.split,
            folds=samples.folds,
            shrinkage_rule=SHRINKAGE_RULE.format(
                damping=", ".join(f"{d:g}" for d in DAMPING_CANDIDATES),
                low=STEP_MIN,
                high=STEP_MAX,
            ),
            budget_rule=BUDGET_RULE.format(
                fractions=", ".join(f"{f:g}" for f in BASE_FRACTIONS),
                target=TRUNCATION_TARGET,
                censored=CENSORED_NEED,
                headroom=HEADROOM,
            ),
        ),
        groups=groups,
        backtest=validation.result,
        backtest_size_term=backtest_size_term(
            layout, validation, sizes or InputSizes.empty(), estimates, options.min_samples
        ),
        coefficients=proposed_set.model_dump(mode="json"),
    )
    proposal._chart_data = _chart_data(layout, estimates, reach, budgets)
    return proposal


TRADE_OFF_FACTORS: Final = (0.6, 0.8, 1.0, 1.2, 1.5, 2.0)


def _chart_data(
    layout: Layout,
    estimates: np.ndarray[Any, np.dtype[np.int64]],
    reach: np.ndarray[Any, np.dtype[np.int64]],
    budgets: dict[Group, BudgetFit],
) -> ChartData:
    samples, predictions = layout.samples, layout.predictions
    clean = ~samples.censored
    data = ChartData()
    category_of_entry = layout.category_of_group[layout.group_of_entry]
    categories = sorted({category for category, _ in layout.groups})
    for code, category in enumerate(categories):
        mask = clean & (category_of_entry == code)
        if not mask.any():
            continue
        feature = samples.feature[mask]
        data.categories[category] = CategoryPoints(
            actual=samples.actual[mask],
            current=predictions.current[feature].astype(np.float64),
            proposed=estimates[feature].astype(np.float64),
            weight=samples.weight[mask],
        )
    for group_id, (category, complexity) in enumerate(layout.groups):
        mask = clean & (layout.group_of_entry == group_id)
        if not mask.any():
            continue
        ratios, weights = np.exp(layout.log_ratio[mask]), samples.weight[mask]
        p5, p25, p50, p75, p95 = (
            weighted_quantile(ratios, weights, q) for q in (0.05, 0.25, 0.5, 0.75, 0.95)
        )
        data.ratios.append(
            GroupRatios(f"{category}/{complexity}", p5, p25, p50, p75, p95, int(weights.sum()))
        )
    base, start = feature_budget_terms(layout, reach, budgets)
    curves: dict[str, list[tuple[float, float]]] = {"current": [], "proposed": []}
    for multiplier in TRADE_OFF_FACTORS:
        for label, estimate, base_of, start_of in (
            ("current", predictions.current, predictions.base, predictions.start),
            ("proposed", estimates, base, start),
        ):
            budget = predictions.budgets(estimate, base_of, start_of * multiplier)
            per_entry = budget[samples.feature].astype(np.float64)
            truncation = float(samples.weight[per_entry < layout.need].sum() / samples.weight.sum())
            waste = weighted_quantile(
                per_entry[clean] / samples.actual[clean], samples.weight[clean], 0.5
            )
            curves[label].append((truncation, waste))
    data.trade_off = TradeOff(list(TRADE_OFF_FACTORS), curves["current"], curves["proposed"])
    return data


def _unchanged(fit: ScaleFit) -> ScaleFit:
    return ScaleFit(
        fit.n, fit.own_log_ratio, fit.pooled_log_ratio, 0.0, "unchanged", fit.max_deliverables
    )


def _verdict(validation: CrossValidation) -> str:
    current, proposed = validation.result.current, validation.result.proposed
    if validation.improves:
        return (
            f"better on held-out rows: median SMAPE {current.smape_median:.1f}% -> "
            f"{proposed.smape_median:.1f}%, truncation {current.truncation_rate:.1%} -> "
            f"{proposed.truncation_rate:.1%}, median waste {current.waste_median:.2f}x -> "
            f"{proposed.waste_median:.2f}x (damping {validation.damping:g})"
        )
    return (
        "no change proposed: the fitted set is not better on held-out rows (median SMAPE "
        f"{current.smape_median:.1f}% now vs {proposed.smape_median:.1f}%, truncation "
        f"{current.truncation_rate:.1%} vs {proposed.truncation_rate:.1%})"
    )


def _proposed_set(
    current: CoefficientSet,
    layout: Layout,
    scales: dict[Group, ScaleFit],
    budgets: dict[Group, BudgetFit],
    absolute: np.ndarray[Any, np.dtype[np.float64]],
    samples: SampleSet,
    moment: datetime,
) -> CoefficientSet:
    calibration = {
        category: {complexity: group.model_dump() for complexity, group in row.items()}
        for category, row in current.calibration.items()
    }
    base_table = {category: dict(row) for category, row in current.budget.base.items()}
    for group_id, group in enumerate(layout.groups):
        category, complexity = group
        fit, budget = scales[group], budgets[group]
        if fit.rule == "unchanged":
            continue
        covered = np.flatnonzero(
            (layout.group_of_feature == group_id) & (layout.predictions.deliverables >= 1)
        )
        scale = float(absolute[covered[0]]) if covered.size else 1.0
        existing = current.calibration.get(category, {}).get(complexity)
        buffer = (
            budget.buffer if budget.how != "unchanged" else (existing.buffer if existing else None)
        )
        calibration.setdefault(category, {})[complexity] = GroupCalibration(
            scale=scale, buffer=buffer, max_deliverables=fit.max_deliverables
        ).model_dump()
        if budget.how == "fitted":
            base_table.setdefault(category, {})[complexity] = max(1, budget.base)
    data = current.model_dump(mode="json")
    budget_data = dict(data["budget"], base=base_table)
    name = f"calibrated-{_slug(samples.model)}-{moment.strftime('%Y%m%d-%H%M%S')}"
    data.update(
        schema_version=LATEST_FORMAT_VERSION,
        name=name,
        description=(
            f"Calibrated from {samples.clean_rows} clean telemetry rows of {samples.model} "
            f"on top of {current.name!r}."
        ),
        provenance={
            "base_set": current.name,
            "base_set_hash": coefficient_set_hash(current),
            "model": samples.model,
            "samples": str(samples.clean_rows),
            "generated_at": utc_text(moment.replace(microsecond=0)),
        },
        calibration=calibration,
        budget=budget_data,
    )
    return CoefficientSet.model_validate(data)


def _finite(value: float) -> float | None:
    return round(value, 4) if math.isfinite(value) else None


def _evidence(
    layout: Layout,
    group_id: int,
    fit: ScaleFit,
    budget: BudgetFit,
    damping: float,
    current: CoefficientSet,
) -> GroupEvidence:
    samples = layout.samples
    category, complexity = layout.groups[group_id]
    in_group = layout.group_of_entry == group_id
    clean = in_group & ~samples.censored
    weights = samples.weight[clean]
    ratios = np.exp(layout.log_ratio[clean])
    existing = current.calibration.get(category, {}).get(complexity)
    current_scale = existing.scale if existing else 1.0
    step = factor(fit, damping)
    feature = samples.feature[in_group]
    current_base = int(layout.predictions.base[feature[0]]) if feature.size else 0
    current_buffer = existing.buffer if existing and existing.buffer else layout.default_buffer
    has_rows = ratios.size > 0
    return GroupEvidence(
        category=category,
        complexity=complexity,
        n=int(weights.sum()),
        censored=int(samples.weight[in_group & samples.censored].sum()),
        ratio_median=_finite(weighted_quantile(ratios, weights, 0.5)) if has_rows else None,
        ratio_p25=_finite(weighted_quantile(ratios, weights, 0.25)) if has_rows else None,
        ratio_p75=_finite(weighted_quantile(ratios, weights, 0.75)) if has_rows else None,
        rule=fit.rule,
        category_ratio_median=(
            _finite(math.exp(fit.pooled_log_ratio)) if fit.pooled_log_ratio is not None else None
        ),
        current_scale=current_scale,
        proposed_scale=round(current_scale * step, 4),
        step=round(step, 4),
        step_interval=_bootstrap(layout, group_id, fit, damping) if has_rows else None,
        move_percent=round((step - 1) * 100, 1),
        max_deliverables=fit.max_deliverables,
        current_budget=BudgetParams(base=current_base, buffer=current_buffer),
        proposed_budget=BudgetParams(base=budget.base, buffer=budget.buffer),
        budget_rule=budget.how,
    )


def _bootstrap(
    layout: Layout, group_id: int, fit: ScaleFit, damping: float
) -> tuple[float, float] | None:
    """95 % interval of the step: the evidence it rests on, resampled with replacement."""
    if fit.rule == "unchanged":
        return (1.0, 1.0)
    samples = layout.samples
    clean = ~samples.censored
    if fit.rule == "own":
        mask = clean & (layout.group_of_entry == group_id)
    else:
        category = layout.category_of_group[group_id]
        mask = clean & (layout.category_of_group[layout.group_of_entry] == category)
    bins = np.round(layout.log_ratio[mask] / LOG_BIN).astype(np.int64)
    values, inverse = np.unique(bins, return_inverse=True)
    counts = np.bincount(inverse, weights=samples.weight[mask])
    total = round(float(counts.sum()))
    if total == 0:
        return None
    rng = np.random.default_rng(BOOTSTRAP_SEED + group_id)
    rounds = BOOTSTRAP_ROUNDS if total <= LARGE_GROUP else BOOTSTRAP_ROUNDS_LARGE
    draws = rng.multinomial(total, counts / counts.sum(), size=rounds)
    cumulative = np.cumsum(draws, axis=1)
    middle = np.argmax(cumulative >= total / 2, axis=1)
    medians = values[middle] * LOG_BIN
    if fit.rule == "own":
        pooled = fit.pooled_log_ratio or 0.0
        steps = fit.own_weight * medians + (1 - fit.own_weight) * pooled
    else:
        steps = fit.pooled_weight * medians
    factors = np.clip(np.exp(damping * steps), STEP_MIN, STEP_MAX)
    low, high = np.percentile(factors, [2.5, 97.5])
    return (round(float(low), 4), round(float(high), 4))
