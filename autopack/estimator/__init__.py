"""The token estimator: predict a phase's output tokens and choose the builder's budget.

Plain Python (no CLI or terminal code). Every number comes from a `CoefficientSet`; the
built-in sets are `default`, `original-head` and `original-2025-12-25`.

    from autopack.estimator import estimate, load_builtin_set, select_budget

    coefficients = load_builtin_set("default")
    result = estimate(["src/app.py"], "implementation", "low",
                      coefficients=coefficients, workspace=Path("."))
    budget = select_budget(result, "low", coefficients=coefficients)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autopack.lazy import lazy_exports

if TYPE_CHECKING:
    from autopack.estimator.categories import (
        COMPLEXITY_LEVELS,
        DELIVERABLE_BUCKETS,
        deliverable_count_bucket,
        is_doc_category,
        normalize_category,
        normalize_complexity,
        same_category,
    )
    from autopack.estimator.coefficients import (
        DEFAULT_SET_NAME,
        CoefficientSet,
        CoefficientSetError,
        builtin_set_names,
        coefficient_set_hash,
        coefficient_set_to_json,
        derive_set,
        load_builtin_set,
        load_set_from_file,
        load_set_from_json,
    )
    from autopack.estimator.deliverables import normalize_deliverables
    from autopack.estimator.model import TokenEstimate, estimate, phase_category, select_budget
    from autopack.estimator.provider import (
        Escalation,
        MaxTokensDecision,
        escalation_budget,
        provider_max_tokens,
        should_escalate,
    )
    from autopack.estimator.report import EstimateReport, choose_coefficients

# Submodules load on first use, so `autopack.estimator.categories` — the one place categories
# and buckets are normalised — stays cheap for the commands' fast path.
__getattr__ = lazy_exports(
    __name__,
    {
        "autopack.estimator.categories": (
            "COMPLEXITY_LEVELS",
            "DELIVERABLE_BUCKETS",
            "deliverable_count_bucket",
            "is_doc_category",
            "normalize_category",
            "normalize_complexity",
            "same_category",
        ),
        "autopack.estimator.coefficients": (
            "builtin_set_names",
            "coefficient_set_hash",
            "coefficient_set_to_json",
            "CoefficientSet",
            "CoefficientSetError",
            "DEFAULT_SET_NAME",
            "derive_set",
            "load_builtin_set",
            "load_set_from_file",
            "load_set_from_json",
        ),
        "autopack.estimator.deliverables": ("normalize_deliverables",),
        "autopack.estimator.model": (
            "estimate",
            "phase_category",
            "select_budget",
            "TokenEstimate",
        ),
        "autopack.estimator.provider": (
            "Escalation",
            "escalation_budget",
            "MaxTokensDecision",
            "provider_max_tokens",
            "should_escalate",
        ),
        "autopack.estimator.report": (
            "choose_coefficients",
            "EstimateReport",
        ),
    },
)

__all__ = [
    "COMPLEXITY_LEVELS",
    "DEFAULT_SET_NAME",
    "DELIVERABLE_BUCKETS",
    "CoefficientSet",
    "CoefficientSetError",
    "Escalation",
    "EstimateReport",
    "MaxTokensDecision",
    "TokenEstimate",
    "builtin_set_names",
    "choose_coefficients",
    "coefficient_set_hash",
    "coefficient_set_to_json",
    "deliverable_count_bucket",
    "derive_set",
    "escalation_budget",
    "estimate",
    "is_doc_category",
    "load_builtin_set",
    "load_set_from_file",
    "load_set_from_json",
    "normalize_category",
    "normalize_complexity",
    "normalize_deliverables",
    "phase_category",
    "provider_max_tokens",
    "same_category",
    "select_budget",
    "should_escalate",
]
