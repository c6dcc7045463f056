"""Coefficient-set format 2: per-group calibration, applied only where its evidence reached."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from autopack.estimator import (
    CoefficientSetError,
    coefficient_set_hash,
    estimate,
    load_builtin_set,
    load_set_from_json,
    select_budget,
)

DEFAULT = load_builtin_set("default")


def _calibrated(**group: Any) -> str:
    data = DEFAULT.model_dump(mode="json")
    data.update(
        schema_version=2,
        name="calibrated-test",
        calibration={"implementation": {"low": {"max_deliverables": 2, **group}}},
    )
    return json.dumps(data)


def test_a_version_1_set_hashes_as_before_format_2_existed() -> None:
    content = DEFAULT.model_dump(
        mode="json", exclude={"name", "description", "provenance", "calibration"}
    )
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert coefficient_set_hash(DEFAULT) == hashlib.sha256(canonical.encode()).hexdigest()[:12]


def test_calibration_needs_format_2_and_normalised_keys() -> None:
    data = json.loads(_calibrated(scale=0.5))
    data["schema_version"] = 1
    with pytest.raises(CoefficientSetError, match="calibration needs schema_version 2"):
        load_set_from_json(json.dumps(data), source="test")
    data["schema_version"] = 2
    data["calibration"] = {"testing": {"low": {"scale": 0.5, "max_deliverables": 1}}}
    with pytest.raises(CoefficientSetError, match="never match: testing"):
        load_set_from_json(json.dumps(data), source="test")


def test_scale_and_buffer_apply_within_the_evidence_only() -> None:
    calibrated = load_set_from_json(_calibrated(scale=0.5, buffer=2.0), source="test")
    one, three = ["src/a.py"], ["src/a.py", "src/b.py", "src/c.py"]
    base = estimate(one, "implementation", "low", coefficients=DEFAULT, workspace=None)
    scaled = estimate(one, "implementation", "low", coefficients=calibrated, workspace=None)
    assert scaled.estimated_tokens == int(base.estimated_tokens * 0.5)
    assert select_budget(scaled, "low", coefficients=calibrated) == max(
        8192, int(scaled.estimated_tokens * 2.0)
    )
    beyond = estimate(three, "implementation", "low", coefficients=calibrated, workspace=None)
    assert (
        beyond.estimated_tokens
        == estimate(
            three, "implementation", "low", coefficients=DEFAULT, workspace=None
        ).estimated_tokens
    )
    other = estimate(one, "implementation", "medium", coefficients=calibrated, workspace=None)
    assert (
        other.estimated_tokens
        == estimate(
            one, "implementation", "medium", coefficients=DEFAULT, workspace=None
        ).estimated_tokens
    )
    assert coefficient_set_hash(calibrated) != coefficient_set_hash(DEFAULT)
