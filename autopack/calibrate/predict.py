"""What a coefficient set predicts for each distinct feature tuple (the estimator, called once
per tuple, never per row).

Ratios are taken against what the *current* set predicts from the stored features, not against
the prediction logged at the time (which may come from an older set). A row without stored
deliverable paths (imported history) is costed as that many generic *new* files of its
category's usual kind: `.md` for documentation, a test module for tests, a `.py` module
otherwise. A row recorded under a doc model (`doc_synthesis`, `doc_sot_update`) is re-estimated
by it: its recorded doc flags stand in for the task text the telemetry does not keep.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from autopack.calibrate.samples import Features, FloatArray, IntArray
from autopack.estimator import CoefficientSet, estimate, is_doc_category, normalize_category
from autopack.estimator.categories import DOC_SOT_UPDATE, DOC_SYNTHESIS
from autopack.estimator.model import budget_terms

# One trigger word per recorded doc flag (autopack.estimator.deliverables' word lists).
_FLAG_WORDS: Final = (
    ("api_reference_required", "api reference"),
    ("examples_required", "example"),
    ("research_required", "comprehensive"),
    ("usage_guide_required", "tutorial"),
)


def generic_deliverables(category: str, count: int) -> list[str]:
    """`count` generic new files of the category's usual kind (rows without paths)."""
    key = normalize_category(category)
    if is_doc_category(key):
        return [f"docs/generic_{i}.md" for i in range(1, count + 1)]
    if key == "tests":
        return [f"tests/test_generic_{i}.py" for i in range(1, count + 1)]
    return [f"src/generic_{i}.py" for i in range(1, count + 1)]


def _scope_paths(features: Features, strong_above: int) -> list[str] | None:
    if features.context_quality == "strong":
        return [f"scope_{i}" for i in range(strong_above + 1)]
    if features.context_quality == "some":
        return ["scope_1"]
    return None


def _estimation_inputs(features: Features, strong_above: int) -> tuple[list[str], str, str]:
    deliverables = features.deliverables or generic_deliverables(
        features.category, features.deliverable_count
    )
    category = features.category
    if normalize_category(category) in (DOC_SYNTHESIS, DOC_SOT_UPDATE):
        category = "documentation"  # the doc models are reached through a docs category
    words = [word for flag, word in _FLAG_WORDS if getattr(features, flag)]
    return deliverables, category, " ".join(words)


@dataclass(frozen=True)
class FeaturePredictions:
    """Per distinct feature tuple: the uncalibrated estimate and the budget's terms."""

    raw: IntArray
    """The estimate before any group calibration (int(base tokens × safety margin))."""
    current: IntArray
    """What the current set predicts (its calibration, if any, applied)."""
    current_scale: FloatArray
    deliverables: IntArray
    group: list[tuple[str, str]]
    """(normalised effective category, complexity): where calibration and budget look up."""
    base: IntArray
    start: FloatArray
    """The buffer's starting value under the current set (its group buffer, if any)."""
    raised_to: FloatArray
    override: FloatArray
    """The doc models' fixed buffer, NaN where none applies."""
    cap: IntArray
    current_budget: IntArray

    def budgets(self, estimates: IntArray, base: IntArray, start: FloatArray) -> IntArray:
        """`select_budget`'s arithmetic over arrays (per feature tuple)."""
        buffer = np.where(np.isnan(self.override), np.maximum(start, self.raised_to), self.override)
        scaled = np.floor(estimates * buffer).astype(np.int64)
        return np.minimum(np.maximum(base, scaled), self.cap)

    def entry_budgets(
        self, feature: IntArray, estimates: IntArray, base: IntArray, start: FloatArray
    ) -> IntArray:
        """`budgets` for entries whose estimate is their own (not their feature tuple's):
        `estimates` per entry, `base` and `start` per feature tuple."""
        override = self.override[feature]
        buffer = np.where(
            np.isnan(override), np.maximum(start[feature], self.raised_to[feature]), override
        )
        scaled = np.floor(estimates * buffer).astype(np.int64)
        return np.minimum(np.maximum(base[feature], scaled), self.cap[feature])


def predict_features(features: Sequence[Features], current: CoefficientSet) -> FeaturePredictions:
    """Run the estimator once per feature tuple with the current set (and without its
    calibration, the base every proposed scale multiplies)."""
    uncalibrated = current.model_copy(update={"calibration": {}})
    count = len(features)
    raw = np.zeros(count, dtype=np.int64)
    now = np.zeros(count, dtype=np.int64)
    scale = np.ones(count, dtype=np.float64)
    deliverables = np.zeros(count, dtype=np.int64)
    base = np.zeros(count, dtype=np.int64)
    start = np.zeros(count, dtype=np.float64)
    raised = np.zeros(count, dtype=np.float64)
    override = np.full(count, np.nan, dtype=np.float64)
    cap = np.zeros(count, dtype=np.int64)
    budget = np.zeros(count, dtype=np.int64)
    groups: list[tuple[str, str]] = []
    strong_above = current.context_strong_above
    for index, item in enumerate(features):
        items, category, description = _estimation_inputs(item, strong_above)
        scope = _scope_paths(item, strong_above)
        plain = estimate(
            items,
            category,
            item.complexity,
            coefficients=uncalibrated,
            workspace=None,
            task_description=description,
            scope_paths=scope,
        )
        calibrated = estimate(
            items,
            category,
            item.complexity,
            coefficients=current,
            workspace=None,
            task_description=description,
            scope_paths=scope,
        )
        group = current.group_calibration(plain.category, item.complexity, len(items))
        terms = budget_terms(plain, item.complexity, coefficients=uncalibrated)
        raw[index] = plain.estimated_tokens
        now[index] = calibrated.estimated_tokens
        scale[index] = group.scale if group is not None else 1.0
        deliverables[index] = len(items)
        base[index] = terms.base
        raised[index] = terms.raised_to
        override[index] = terms.override if terms.override is not None else np.nan
        cap[index] = terms.cap
        current_terms = budget_terms(calibrated, item.complexity, coefficients=current)
        start[index] = current_terms.start
        budget[index] = current_terms.budget(calibrated.estimated_tokens)
        groups.append((normalize_category(plain.category), item.complexity))
    return FeaturePredictions(
        raw=raw,
        current=now,
        current_scale=scale,
        deliverables=deliverables,
        group=groups,
        base=base,
        start=start,
        raised_to=raised,
        override=override,
        cap=cap,
        current_budget=budget,
    )
