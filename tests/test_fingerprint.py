"""Failure fingerprints: the original's equivalence classes still group, paths stay readable."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autopack.drain.fingerprint import failure_fingerprint, normalize_error
from tests.conftest import REFERENCE_DATA

GOLDEN = json.loads((REFERENCE_DATA / "batch_drain_golden_cases.json").read_text())


def _pairs(cases: list[dict[str, object]], key: str) -> list[tuple[int, int]]:
    return [
        (i, j)
        for i, j in itertools.combinations(range(len(cases)), 2)
        if cases[i][key] == cases[j][key]
    ]


def test_golden_normaliser_classes_still_group() -> None:
    cases = GOLDEN["normalize_error_text"]
    pairs = _pairs(cases, "normalized")
    assert pairs, "the golden file has at least one equivalence class"
    for i, j in pairs:
        assert normalize_error(cases[i]["input"]) == normalize_error(cases[j]["input"])


def test_golden_fingerprint_classes_still_group() -> None:
    cases = GOLDEN["compute_failure_fingerprint"]
    pairs = _pairs(cases, "fingerprint")
    assert pairs
    for i, j in pairs:
        ours = [
            failure_fingerprint(c["final_state"], "verification", c["error_message"])
            for c in (cases[i], cases[j])
        ]
        assert ours[0] == ours[1]


def test_golden_distinct_classes_stay_distinct() -> None:
    cases = GOLDEN["normalize_error_text"]
    golden_classes = {c["normalized"] for c in cases}
    ours = {normalize_error(c["input"]) for c in cases}
    assert len(ours) == len(golden_classes)


def test_relative_paths_are_not_mangled() -> None:
    text = "DELIVERABLES_VALIDATION_FAILED: missing examples/telemetry_utils/README.md"
    assert normalize_error(text) == (
        "deliverables_validation_failed: missing examples/telemetry_utils/readme.md"
    )
    other = "DELIVERABLES_VALIDATION_FAILED: missing examples/telemetry_utils/string_helper.py"
    assert normalize_error(text) != normalize_error(other)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("claim 3f2b8c1e-9d4a-4b7e-8f00-123456789abc lost", "claim <uuid> lost"),
        ("at 0x7f8a1b2c3d4e", "at <addr>"),
        ("commit 9fceb02d0ae598e95dc970b74767f19372d61af8 bad", "commit <hash> bad"),
        ("at 2025-12-28T16:22:03.123Z done", "at <timestamp> done"),
        ("on 2025-12-28", "on <date>"),
        ("in session-20251228-162203", "in session-<id>"),
        ('File "/opt/app/x.py", line 12', 'file "<path>", line <num>'),
        ("timed out after 900 s", "timed out after <num> s"),
        ("telemetry-p10-file-util failed", "telemetry-p10-file-util failed"),
    ],
)
def test_placeholders(message: str, expected: str) -> None:
    assert normalize_error(message) == expected


def test_fingerprint_shape() -> None:
    assert failure_fingerprint("FAILED", "verification", "pytest failed: 3 tests") == (
        "FAILED|verification|pytest failed: <num> tests"
    )
    assert failure_fingerprint("FAILED", None, None) == "FAILED|none"


@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=0, max_value=10**9))
def test_numbers_never_split_a_group(a: int, b: int) -> None:
    template = "pytest exited {} after {} tests"
    assert normalize_error(template.format(a, b)) == normalize_error(template.format(b, a))
