"""Estimate a phase's output tokens, and select the budget the builder asks for.

Routing (§8.3 of the original spec):

1. no deliverables → the complexity default;
2. a pure documentation phase keeps a doc category, or becomes `documentation`;
3. a pure doc phase that touches a source-of-truth ledger → the SOT-update model;
4. a pure `docs`/`documentation` phase that needs investigation → the doc-synthesis model;
5. anything else → fixed phase overhead + the marginal cost of each deliverable.

All numbers come from the `CoefficientSet` passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict

from autopack.estimator.categories import (
    DOC_SOT_UPDATE,
    DOC_SYNTHESIS,
    normalize_category,
)
from autopack.estimator.coefficients import CoefficientSet, coefficient_set_hash
from autopack.estimator.deliverables import (
    ContextQuality,
    DocFeatures,
    context_quality,
    doc_features,
    first_sot_file,
    is_pure_doc_phase,
    names_action,
    names_file,
    normalize_deliverables,
)
from autopack.estimator.marginal import cost_deliverable

EstimationModel = Literal["empty", "overhead", "doc_synthesis", "doc_sot_update"]

DOCUMENTATION: Final = "documentation"
IMPLEMENTATION: Final = "implementation"
_DOC_PHASE_CATEGORIES: Final = ("documentation", "docs", DOC_SYNTHESIS, DOC_SOT_UPDATE)
_SYNTHESIS_CANDIDATES: Final = ("documentation", "docs")
_FEATURE_CATEGORIES: Final = frozenset({"docs", DOC_SYNTHESIS})


class TokenEstimate(BaseModel):
    """A phase's predicted output tokens, how they were reached, and what telemetry records."""

    model_config = ConfigDict(frozen=True)

    estimated_tokens: int
    deliverable_count: int
    deliverables: tuple[str, ...]
    category: str
    """The effective category: the input, `documentation` for an uncategorised pure-doc phase,
    or `doc_synthesis` / `doc_sot_update` when those models were used."""
    complexity: str
    breakdown: dict[str, int]
    confidence: float
    model: EstimationModel
    category_key: str | None
    """The key the phase overhead was looked up under (overhead model only)."""
    phase_overhead: int | None
    coefficient_set: str
    coefficient_set_hash: str
    api_reference_required: bool | None = None
    examples_required: bool | None = None
    research_required: bool | None = None
    usage_guide_required: bool | None = None
    context_quality: ContextQuality | None = None
    is_sot_file: bool = False
    sot_file_name: str | None = None
    sot_entry_count_hint: int | None = None

    def telemetry_fields(self) -> dict[str, bool | int | str | None]:
        """The doc-feature and SOT columns of `token_estimation_v2_events`."""
        return {
            "api_reference_required": self.api_reference_required,
            "examples_required": self.examples_required,
            "research_required": self.research_required,
            "usage_guide_required": self.usage_guide_required,
            "context_quality": self.context_quality,
            "is_sot_file": self.is_sot_file,
            "sot_file_name": self.sot_file_name,
            "sot_entry_count_hint": self.sot_entry_count_hint,
        }


def phase_category(task_category: str | None, deliverables: object) -> str:
    """The category to estimate a phase under when it may have none.

    A phase's own category wins; without one, a pure documentation phase is `documentation`
    and anything else `implementation` (as the original builder decided).
    """
    if task_category:
        return task_category
    if is_pure_doc_phase(normalize_deliverables(deliverables)):
        return DOCUMENTATION
    return IMPLEMENTATION


def _is_one_of(coefficients: CoefficientSet, category: str, names: Sequence[str]) -> bool:
    key = coefficients.category_key(category)
    return key in {coefficients.category_key(name) for name in names}


def _confidence(deliverables: Sequence[str], coefficients: CoefficientSet) -> float:
    model = coefficients.confidence
    count = len(deliverables)
    with_file = sum(1 for item in deliverables if names_file(item)) / count
    with_action = sum(1 for item in deliverables if names_action(item)) / count
    confidence = model.base
    confidence += with_file * model.file_weight
    confidence += with_action * model.action_weight
    return min(model.cap, confidence)


@dataclass(frozen=True, slots=True)
class _Route:
    """What one estimation model produced, before the safety margin."""

    model: EstimationModel
    category: str
    base_tokens: int
    breakdown: dict[str, int]
    confidence: float
    category_key: str | None = None
    phase_overhead: int | None = None
    sot_file_name: str | None = None


def estimate(
    deliverables: object,
    category: str | None,
    complexity: str,
    *,
    coefficients: CoefficientSet,
    workspace: Path | None,
    task_description: str = "",
    scope_paths: Sequence[str] | None = None,
) -> TokenEstimate:
    """Estimate the output tokens of a phase.

    `deliverables` may be a string, a list, or a nested dict/list structure (flattened).
    `workspace` is where existing deliverables are looked up; `None` treats every deliverable
    as a new file. `scope_paths` only measures context quality for the doc models.
    """
    items = normalize_deliverables(deliverables)
    quality = context_quality(scope_paths, strong_above=coefficients.context_strong_above)
    features = doc_features(items, task_description)
    if items:
        route = _route(
            items, category or "", complexity, coefficients, workspace, features, quality
        )
        tokens = int(route.base_tokens * coefficients.safety_margin)
        group = coefficients.group_calibration(route.category, complexity, len(items))
        if group is not None:
            tokens = max(1, int(tokens * group.scale))
    else:
        route = _Route(
            model="empty",
            category=category or "",
            base_tokens=0,
            breakdown={},
            confidence=coefficients.confidence.empty_phase,
        )
        tokens = coefficients.empty_phase_estimate(complexity)
    record_features = bool(items) and normalize_category(route.category) in _FEATURE_CATEGORIES
    is_sot = route.model == "doc_sot_update"
    return TokenEstimate(
        estimated_tokens=tokens,
        deliverable_count=len(items),
        deliverables=tuple(items),
        category=route.category,
        complexity=complexity,
        breakdown=route.breakdown,
        confidence=route.confidence,
        model=route.model,
        category_key=route.category_key,
        phase_overhead=route.phase_overhead,
        coefficient_set=coefficients.name,
        coefficient_set_hash=coefficient_set_hash(coefficients),
        api_reference_required=features.api_reference_required if record_features else None,
        examples_required=features.examples_required if record_features else None,
        research_required=features.research_required if record_features else None,
        usage_guide_required=features.usage_guide_required if record_features else None,
        context_quality=quality if record_features or is_sot else None,
        is_sot_file=is_sot,
        sot_file_name=route.sot_file_name,
        sot_entry_count_hint=len(items) if is_sot else None,
    )


def _route(
    items: list[str],
    category: str,
    complexity: str,
    coefficients: CoefficientSet,
    workspace: Path | None,
    features: DocFeatures,
    quality: ContextQuality,
) -> _Route:
    pure_doc = is_pure_doc_phase(items)
    effective = category
    if pure_doc and not _is_one_of(coefficients, category, _DOC_PHASE_CATEGORIES):
        effective = DOCUMENTATION
    sot_file = first_sot_file(items) if pure_doc else None
    if sot_file is not None:
        return _sot_update(len(items), coefficients, quality, sot_file)
    if (
        pure_doc
        and _is_one_of(coefficients, effective, _SYNTHESIS_CANDIDATES)
        and features.is_synthesis
    ):
        return _doc_synthesis(len(items), coefficients, quality, features)
    return _overhead(items, effective, complexity, coefficients, workspace)


def _overhead(
    items: list[str],
    category: str,
    complexity: str,
    coefficients: CoefficientSet,
    workspace: Path | None,
) -> _Route:
    key = coefficients.category_key(category)
    breakdown: dict[str, int] = {}
    marginal_total = 0
    for item in items:
        cost = cost_deliverable(
            item, category_key=key, marginal=coefficients.marginal, workspace=workspace
        )
        marginal_total += cost.tokens
        breakdown[cost.label] = breakdown.get(cost.label, 0) + cost.tokens
    overhead = coefficients.overhead_for(key, complexity)
    return _Route(
        model="overhead",
        category=category,
        base_tokens=overhead + marginal_total,
        breakdown=breakdown,
        confidence=_confidence(items, coefficients),
        category_key=key,
        phase_overhead=overhead,
    )


def _doc_synthesis(
    count: int, coefficients: CoefficientSet, quality: ContextQuality, features: DocFeatures
) -> _Route:
    model = coefficients.doc_synthesis
    writing = model.writing_per_deliverable * count
    coordination = (
        int(model.coordination_fraction * writing)
        if count >= model.coordination_min_deliverables
        else 0
    )
    breakdown = {
        "doc_synthesis_investigate": model.investigate.for_quality(quality),
        "doc_synthesis_api_extract": model.api_extract if features.api_reference_required else 0,
        "doc_synthesis_examples": model.examples if features.examples_required else 0,
        "doc_synthesis_writing": writing,
        "doc_synthesis_coordination": coordination,
    }
    return _Route(
        model="doc_synthesis",
        category=DOC_SYNTHESIS,
        base_tokens=sum(breakdown.values()),
        breakdown=breakdown,
        confidence=coefficients.confidence.doc_synthesis,
    )


def _sot_update(
    count: int, coefficients: CoefficientSet, quality: ContextQuality, sot_file: str
) -> _Route:
    model = coefficients.sot_update
    write = model.write_per_entry * max(1, count)
    breakdown = {
        "sot_context_reconstruction": model.context.for_quality(quality),
        "sot_write_entries": write,
        "sot_consistency_overhead": int(write * model.consistency_fraction),
    }
    return _Route(
        model="doc_sot_update",
        category=DOC_SOT_UPDATE,
        base_tokens=sum(breakdown.values()),
        breakdown=breakdown,
        confidence=coefficients.confidence.sot_update,
        sot_file_name=sot_file,
    )


@dataclass(frozen=True, slots=True)
class BudgetTerms:
    """What `select_budget` combines: budget = min(max(base, int(estimate × buffer)), cap).

    The buffer is `override` when set (the doc models), else the larger of `start` (the set's
    buffer, or a calibrated group's) and `raised_to` (the rules that raise it; 0 when none).
    """

    base: int
    start: float
    raised_to: float
    override: float | None
    cap: int

    @property
    def buffer(self) -> float:
        return self.override if self.override is not None else max(self.start, self.raised_to)

    def budget(self, estimated_tokens: int) -> int:
        return min(max(self.base, int(estimated_tokens * self.buffer)), self.cap)


def budget_terms(
    estimate: TokenEstimate, complexity: str, *, coefficients: CoefficientSet
) -> BudgetTerms:
    """The base, buffer and cap `select_budget` uses for an estimate (see there)."""
    budget = coefficients.budget
    key = normalize_category(estimate.category)
    start = budget.buffer
    group = coefficients.group_calibration(
        estimate.category, complexity, estimate.deliverable_count
    )
    if group is not None and group.buffer is not None and estimate.model != "empty":
        start = group.buffer
    raised = 0.0
    if estimate.confidence < budget.low_confidence_below:
        raised = max(raised, budget.low_confidence_buffer)
    if estimate.deliverable_count >= budget.many_deliverables_from:
        raised = max(raised, budget.many_deliverables_buffer)
    if estimate.category in budget.high_complexity_categories and complexity == "high":
        raised = max(raised, budget.high_complexity_buffer)
    override = budget.doc_model_buffer if key in (DOC_SYNTHESIS, DOC_SOT_UPDATE) else None
    return BudgetTerms(
        base=budget.base_for(key, complexity),
        start=start,
        raised_to=raised,
        override=override,
        cap=budget.cap,
    )


def select_budget(estimate: TokenEstimate, complexity: str, *, coefficients: CoefficientSet) -> int:
    """The output budget for an estimate: max(base, estimate × buffer), capped.

    The base comes from the normalised category and the complexity. The buffer starts at the
    set's `buffer` (or a calibrated group's own) and is raised for low confidence, many
    deliverables, and high-complexity integration work; the doc-synthesis and SOT models use
    their own buffer outright.
    """
    terms = budget_terms(estimate, complexity, coefficients=coefficients)
    return terms.budget(estimate.estimated_tokens)
