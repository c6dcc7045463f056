"""The built-in original sets reproduce every golden case of the original estimator exactly.

The golden cases are reference facts, copied into tests/data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from autopack.estimator import TokenEstimate, estimate, load_builtin_set, select_budget
from tests.conftest import REFERENCE_DATA

GOLDEN_FILE = REFERENCE_DATA / "token_estimator_golden_cases.json"
LABEL_TO_SET = {
    "head": "original-head",
    "pre_calibration_2025_12_25": "original-2025-12-25",
}

# No skip when the file is missing: it is part of the repository, and a skip would hide a
# regression.
CASES: list[dict[str, Any]] = json.loads(GOLDEN_FILE.read_text(encoding="utf-8"))["cases"]


def _run(
    case: dict[str, Any], set_name: str, workspace: Path | None, category: str | None = None
) -> tuple[TokenEstimate, int]:
    coefficients = load_builtin_set(set_name)
    result = estimate(
        case["deliverables"],
        case["category_in"] if category is None else category,
        case["complexity"],
        coefficients=coefficients,
        workspace=workspace,
        task_description=case["task_description"],
        scope_paths=case["scope_paths"],
    )
    return result, select_budget(result, case["complexity"], coefficients=coefficients)


def _observed(result: TokenEstimate, budget: int) -> dict[str, Any]:
    return {
        "estimated_tokens": result.estimated_tokens,
        "estimate_category": result.category,
        "confidence": result.confidence,
        "breakdown": result.breakdown,
        "selected_budget": budget,
    }


def test_golden_file_has_both_labels_for_every_case() -> None:
    assert len(CASES) >= 18
    for case in CASES:
        assert set(LABEL_TO_SET) <= set(case), case["case"]


@pytest.mark.parametrize("label", sorted(LABEL_TO_SET))
@pytest.mark.parametrize("case", CASES, ids=[case["case"] for case in CASES])
def test_original_sets_reproduce_golden_case(
    case: dict[str, Any], label: str, tmp_path: Path
) -> None:
    set_name = LABEL_TO_SET[label]
    result, budget = _run(case, set_name, tmp_path)
    assert _observed(result, budget) == case[label]
    assert result.deliverable_count == len(case["deliverables"])
    assert result.coefficient_set == set_name
    # No workspace at all behaves like the empty workspace the golden cases were made in.
    assert _run(case, set_name, None) == (result, budget)


@pytest.mark.parametrize("case", CASES, ids=[case["case"] for case in CASES])
def test_default_set_is_original_head_with_tests_routed_to_testing(
    case: dict[str, Any], tmp_path: Path
) -> None:
    default, default_budget = _run(case, "default", tmp_path)
    head_category = {"tests": "testing"}.get(case["category_in"], case["category_in"])
    head, head_budget = _run(case, "original-head", tmp_path, category=head_category)
    assert default.estimated_tokens == head.estimated_tokens
    assert default.breakdown == head.breakdown
    assert default.confidence == head.confidence
    assert default_budget == head_budget
    assert default.category == case["head"]["estimate_category"]
    if case["category_in"] != "tests":
        assert _observed(default, default_budget) == case["head"]
