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

import importlib
from typing import TYPE_CHECKING, Any

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

# Submodules load on first use (PEP 562), so `autopack.estimator.categories` — the one place
# categories and buckets are normalised — stays cheap for the commands' fast path.
_LAZY: dict[str, str] = {
    "COMPLEXITY_LEVELS": "autopack.estimator.categories",
    "CoefficientSet": "autopack.estimator.coefficients",
    "CoefficientSetError": "autopack.estimator.coefficients",
    "DEFAULT_SET_NAME": "autopack.estimator.coefficients",
    "DELIVERABLE_BUCKETS": "autopack.estimator.categories",
    "Escalation": "autopack.estimator.provider",
    "MaxTokensDecision": "autopack.estimator.provider",
    "TokenEstimate": "autopack.estimator.model",
    "builtin_set_names": "autopack.estimator.coefficients",
    "coefficient_set_hash": "autopack.estimator.coefficients",
    "coefficient_set_to_json": "autopack.estimator.coefficients",
    "deliverable_count_bucket": "autopack.estimator.categories",
    "derive_set": "autopack.estimator.coefficients",
    "escalation_budget": "autopack.estimator.provider",
    "estimate": "autopack.estimator.model",
    "is_doc_category": "autopack.estimator.categories",
    "load_builtin_set": "autopack.estimator.coefficients",
    "load_set_from_file": "autopack.estimator.coefficients",
    "load_set_from_json": "autopack.estimator.coefficients",
    "normalize_category": "autopack.estimator.categories",
    "normalize_complexity": "autopack.estimator.categories",
    "normalize_deliverables": "autopack.estimator.deliverables",
    "phase_category": "autopack.estimator.model",
    "provider_max_tokens": "autopack.estimator.provider",
    "same_category": "autopack.estimator.categories",
    "select_budget": "autopack.estimator.model",
    "should_escalate": "autopack.estimator.provider",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'autopack.estimator' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


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
