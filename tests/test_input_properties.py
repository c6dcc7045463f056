"""Hostile input, held by hypothesis (issue 11, "The standing suite"): no crash, invariants hold.

- log importer line parser: any line is a sample, a legacy line, not a sample, or a
  LogLineError; never another exception; a sample's counts are integers;
- seed-file reader: any TOML/JSON text is a SeedRunSpec or a SeedFileError/ConfigError;
- fingerprinter: deterministic, `STATE|kind|…`, bounded, insensitive to volatile numbers;
- estimator: any deliverables, category and complexity give a positive estimate, and the
  selected budget lies between the category's base and the cap.
"""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from autopack.drain.fingerprint import MAX_MESSAGE_CHARS, failure_fingerprint
from autopack.errors import ConfigError
from autopack.estimator import estimate, load_builtin_set, select_budget
from autopack.seed.files import parse_seed_text
from autopack.seed.model import SeedRunSpec
from autopack.telemetry.logline import LegacyV1Line, LogLineError, LogSample, parse_log_line

TEXT = st.text(alphabet=st.characters(exclude_categories=()), max_size=200)
KEYS = st.sampled_from(
    [
        "predicted_output",
        "actual_output",
        "actual_total",
        "smape",
        "selected_budget",
        "category",
        "complexity",
        "deliverables",
        "success",
        "stop_reason",
        "truncated",
        "model",
    ]
)
VALUES = st.one_of(
    st.integers(min_value=-(2**40), max_value=2**40).map(str),
    st.floats(allow_nan=True).map(str),
    st.sampled_from(["true", "False", "", "none", "1e400", "-0", "0x10", "12abc"]),
    st.text(alphabet="abc =,.:-_0123456789", max_size=12),
)
PREFIXES = st.sampled_from(
    ["", "2025-12-28 10:00:01,123 INFO ", "2025-12-28T10:00:01+00:00 ", "garbage ", "9999-99-99 "]
)


@settings(max_examples=150, deadline=None)
@given(PREFIXES, st.lists(st.tuples(KEYS, VALUES), max_size=10), TEXT)
def test_log_line_parser(prefix: str, pairs: list[tuple[str, str]], tail: str) -> None:
    payload = " ".join(f"{key}={value}" for key, value in pairs)
    for line in (f"{prefix}[TokenEstimationV2] {payload}", f"{prefix}[TokenEstimationV2] {tail}"):
        try:
            parsed = parse_log_line(line)
        except LogLineError as exc:
            message = str(exc)
            assert message  # a reason, not a bare exception
            continue
        assert parsed is None or isinstance(parsed, LogSample | LegacyV1Line)
        if isinstance(parsed, LogSample):
            assert isinstance(parsed.predicted_output, int)
            assert isinstance(parsed.actual, int)


@settings(max_examples=100, deadline=None)
@given(TEXT)
def test_log_line_parser_on_any_text(line: str) -> None:
    with contextlib.suppress(LogLineError):
        parse_log_line(line)


SEED_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**62), max_value=2**62) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=15,
)
PHASE = st.fixed_dictionaries(
    {"phase_id": TEXT, "name": TEXT},
    optional={
        "description": TEXT,
        "task_category": st.sampled_from(["tests", "docs", "implementation"]) | TEXT,
        "complexity": st.sampled_from(["low", "medium", "high"]) | TEXT,
        "deliverables": st.lists(TEXT, max_size=3),
        "paths": st.lists(TEXT, max_size=3),
        "extra": SEED_VALUES,
    },
)
SEED_DOCS = st.fixed_dictionaries(
    {"run_id": TEXT, "phases": st.lists(PHASE, max_size=3)},
    optional={"paths": st.lists(TEXT, max_size=2), "goal": SEED_VALUES},
)


@settings(max_examples=150, deadline=None)
@given(SEED_DOCS | SEED_VALUES)
def test_seed_reader(document: object) -> None:
    text = json.dumps(document)
    try:
        spec = parse_seed_text(text, fmt="json", source="hypothesis.json")
    except ConfigError as exc:  # SeedFileError is one
        reason = exc.message
        assert reason
        return
    assert isinstance(spec, SeedRunSpec)
    assert spec.phases
    assert len({phase.phase_id for phase in spec.phases}) == len(spec.phases)


@settings(max_examples=100, deadline=None)
@given(TEXT)
def test_seed_reader_on_any_toml_text(text: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_seed_text(text, fmt="toml", source="hypothesis.toml")


STATES = st.sampled_from(["FAILED", "COMPLETE", "QUEUED"])


@settings(max_examples=200, deadline=None)
@given(STATES, st.none() | TEXT, st.none() | TEXT)
def test_fingerprint(state: str, kind: str | None, message: str | None) -> None:
    assume(kind is None or "|" not in kind)
    first = failure_fingerprint(state, kind, message)
    assert first == failure_fingerprint(state, kind, message)
    assert first.startswith(f"{state}|{kind or 'none'}")
    assert len(first) <= len(state) + len(kind or "none") + 2 + MAX_MESSAGE_CHARS


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=0, max_value=10**9))
def test_fingerprint_ignores_volatile_numbers(a: int, b: int) -> None:
    message = "pytest: {} failed, {} passed in shared/test_x.py"
    assert failure_fingerprint("FAILED", "verification", message.format(a, b)) == (
        failure_fingerprint("FAILED", "verification", message.format(b, a))
    )


DELIVERABLES = st.one_of(
    TEXT,
    st.lists(TEXT, max_size=8),
    st.dictionaries(TEXT, st.lists(TEXT, max_size=3) | TEXT, max_size=3),
    st.none(),
    st.integers(),
)


@pytest.fixture(scope="module")
def coefficients():
    return load_builtin_set("default")


@settings(max_examples=150, deadline=None)
@given(
    DELIVERABLES,
    st.none() | st.sampled_from(["tests", "docs", "implementation", "refactor"]) | TEXT,
    st.sampled_from(["low", "medium", "high"]) | TEXT,
    TEXT,
)
def test_estimator(coefficients, deliverables, category, complexity, description) -> None:
    result = estimate(
        deliverables,
        category,
        complexity,
        coefficients=coefficients,
        workspace=None,
        task_description=description,
    )
    assert result.estimated_tokens > 0
    assert 0.0 <= result.confidence <= 1.0
    assert result.deliverable_count >= 0
    budget = select_budget(result, complexity, coefficients=coefficients)
    assert 0 < budget <= coefficients.budget.cap
