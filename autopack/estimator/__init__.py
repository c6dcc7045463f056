"""The token estimator: predict a phase's output tokens and choose the builder's budget.

Plain Python (no CLI or terminal code). Every number comes from a `CoefficientSet`; the
built-in sets are `default`, `original-head` and `original-2025-12-25`.

    from autopack.estimator import estimate, load_builtin_set, select_budget

    coefficients = load_builtin_set("default")
    result = estimate(["src/app.py"], "implementation", "low",
                      coefficients=coefficients, workspace=Path("."))
    budget = select_budget(result, "low", coefficients=coefficients)
"""

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

__all__ = [
    "COMPLEXITY_LEVELS",
    "DEFAULT_SET_NAME",
    "DELIVERABLE_BUCKETS",
    "CoefficientSet",
    "CoefficientSetError",
    "Escalation",
    "MaxTokensDecision",
    "TokenEstimate",
    "builtin_set_names",
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
