"""Unit and property tests of the token estimator package."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autopack.errors import EXIT_REFUSED, ConfigError
from autopack.estimator import (
    COMPLEXITY_LEVELS,
    DELIVERABLE_BUCKETS,
    CoefficientSet,
    CoefficientSetError,
    TokenEstimate,
    builtin_set_names,
    coefficient_set_hash,
    coefficient_set_to_json,
    deliverable_count_bucket,
    derive_set,
    escalation_budget,
    estimate,
    load_builtin_set,
    load_set_from_file,
    normalize_category,
    normalize_complexity,
    normalize_deliverables,
    phase_category,
    provider_max_tokens,
    same_category,
    select_budget,
    should_escalate,
)
from autopack.estimator.deliverables import (
    breakdown_label,
    doc_features,
    extract_path,
    path_flags,
    says_new,
)
from autopack.estimator.marginal import file_complexity_multiplier

DEFAULT = load_builtin_set("default")
HEAD = load_builtin_set("original-head")
SEED = load_builtin_set("original-2025-12-25")
SETS_DIR = Path(__file__).resolve().parents[1] / "autopack/estimator/sets"

complexities = st.sampled_from(["low", "medium", "high", "maintenance", "critical"])
categories = st.sampled_from(
    ["implementation", "tests", "testing", "docs", "documentation", "frontend", "misc", ""]
)
code_paths = st.from_regex(r"src/[a-z]{1,8}/[a-z_]{1,10}\.py", fullmatch=True)


def _est(
    deliverables: object,
    category: str = "implementation",
    complexity: str = "low",
    *,
    coefficients: CoefficientSet = DEFAULT,
    workspace: Path | None = None,
    task_description: str = "",
    scope_paths: list[str] | None = None,
) -> TokenEstimate:
    return estimate(
        deliverables,
        category,
        complexity,
        coefficients=coefficients,
        workspace=workspace,
        task_description=task_description,
        scope_paths=scope_paths,
    )


# --- categories -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("testing", "tests"),
        ("Testing ", "tests"),
        ("tests", "tests"),
        ("documentation", "docs"),
        ("DOC", "docs"),
        ("doc_write", "docs"),
        ("IMPLEMENT_FEATURE", "implementation"),
        ("doc_synthesis", "doc_synthesis"),
        ("doc_sot_update", "doc_sot_update"),
        ("Misc", "misc"),
        (None, ""),
        ("   ", ""),
    ],
)
def test_normalize_category(raw: str | None, key: str) -> None:
    assert normalize_category(raw) == key


def test_same_category_merges_tests_and_docs_only() -> None:
    assert same_category("tests", "Testing")
    assert same_category("docs", "documentation")
    assert not same_category("docs", "doc_synthesis")
    assert not same_category("tests", "implementation")


@given(st.text(max_size=30))
def test_normalize_category_is_idempotent(raw: str) -> None:
    once = normalize_category(raw)
    assert normalize_category(once) == once


@pytest.mark.parametrize(
    ("raw", "level"),
    [
        ("High", "high"),
        ("medium_complexity", "medium"),
        ("LOW-level", "low"),
        ("  low_tier ", "low"),
        ("high_task", "high"),
        ("med", "medium"),
        ("med_level", "medium"),
        ("maint", "maintenance"),
        ("maintain", "maintenance"),
        ("maintenance_mode", "maintenance"),
        ("high_complexity_level", "high"),
        ("critical", "medium"),
        ("", "medium"),
        (None, "medium"),
    ],
)
def test_normalize_complexity(raw: str | None, level: str) -> None:
    assert normalize_complexity(raw) == level


@given(st.one_of(st.none(), st.text(max_size=30)))
def test_normalize_complexity_always_gives_a_known_level(raw: str | None) -> None:
    level = normalize_complexity(raw)
    assert level in COMPLEXITY_LEVELS
    assert normalize_complexity(level) == level


@pytest.mark.parametrize(
    ("count", "bucket"), [(0, "0"), (1, "1"), (2, "2-5"), (5, "2-5"), (6, "6+"), (250, "6+")]
)
def test_deliverable_count_bucket(count: int, bucket: str) -> None:
    assert deliverable_count_bucket(count) == bucket


@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=0, max_value=10_000))
def test_deliverable_buckets_are_ordered_like_counts(a: int, b: int) -> None:
    low, high = sorted((a, b))
    order = DELIVERABLE_BUCKETS.index
    assert order(deliverable_count_bucket(low)) <= order(deliverable_count_bucket(high))


@pytest.mark.parametrize("count", [None, -1, -(2**63)])
def test_an_unknown_deliverable_count_is_its_own_bucket_not_zero(count: int | None) -> None:
    assert deliverable_count_bucket(count) == "unknown"


# --- deliverables ---------------------------------------------------------------------------


def test_normalize_deliverables_flattens_nested_structures() -> None:
    nested = {"tests": ["tests/test_a.py", "  "], "docs": {"x": ("docs/b.md",)}, "n": 3}
    assert normalize_deliverables(nested) == ["tests/test_a.py", "docs/b.md", "3"]
    assert normalize_deliverables({"z.py", "a.py"}) == ["a.py", "z.py"]
    assert normalize_deliverables(None) == []
    assert normalize_deliverables(" src/a.py ") == ["src/a.py"]
    assert normalize_deliverables("   ") == []


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("Create src/foo.py (new file)", "src/foo.py"),
        ("src/foo.py", "src/foo.py"),
        ("Modify web/App.tsx to add a button", "web/App.tsx"),
        ("Update README", "readme"),
        ("Add logging helper (small)", "logging helper"),
    ],
)
def test_extract_path(text: str, path: str) -> None:
    assert extract_path(text) == path


def test_path_flags_follow_naming_conventions() -> None:
    assert path_flags("tests/helpers.py").test
    assert path_flags("pkg/tests/x.py").test
    assert path_flags("web/a.spec.ts").test
    assert not path_flags("src/conftest.py").test
    assert path_flags("alembic/versions/001_init.py").config
    assert path_flags("web/App.svelte").frontend_extension
    assert path_flags("docs\\guide.txt").doc


def test_breakdown_labels_ignore_migrations_and_svelte() -> None:
    assert breakdown_label("alembic/versions/001_init.py", is_new=True) == "backend_new"
    assert breakdown_label("web/App.svelte", is_new=False) == "backend_modify"
    assert breakdown_label("tests/README.md", is_new=True) == "test_new"
    assert breakdown_label("config/app.toml", is_new=True) == "config_new"


def test_new_file_detection_is_a_plain_substring_test() -> None:
    assert says_new("address.py")
    assert says_new("Add a helper")
    assert not says_new("src/service.py")


def test_doc_features_look_for_research_in_the_task_only() -> None:
    in_deliverables = doc_features(["docs/comprehensive.md"], "Write it")
    assert not in_deliverables.research_required
    features = doc_features(["docs/EXAMPLES.md"], "Document the public API comprehensively")
    assert features.examples_required
    assert features.research_required
    assert features.is_synthesis


# --- marginal costs and the workspace -------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_existing_file_is_costed_as_a_modification(tmp_path: Path) -> None:
    _write(tmp_path / "src/small.py", "import os\n\n# comment\ndef f():\n    return os.sep\n")
    result = _est(["src/small.py"], workspace=tmp_path)
    # 3 code lines (0.7) × 1 import (0.9) × indent 4 (0.9) = 0.567 → int(700 × 0.567) = 396
    assert result.breakdown == {"backend_modify": 396}
    assert result.estimated_tokens == int((634 + 396) * 1.3)


def test_create_verb_wins_over_an_existing_file(tmp_path: Path) -> None:
    _write(tmp_path / "src/small.py", "x = 1\n")
    result = _est(["Create src/small.py"], workspace=tmp_path)
    assert result.breakdown == {"backend_new": 2000}


def test_large_complex_file_multiplier_is_clamped(tmp_path: Path) -> None:
    lines = [f"import mod{i}" for i in range(20)] + [" " * 16 + "x = 1"] * 600
    file = _write(tmp_path / "src/big.py", "\n".join(lines))
    assert file_complexity_multiplier(file, DEFAULT.marginal.file_complexity) == 2.0
    assert _est(["src/big.py"], workspace=tmp_path).breakdown == {"backend_modify": 1400}


def test_unreadable_deliverable_gives_multiplier_one(tmp_path: Path) -> None:
    (tmp_path / "src/pkg.py").mkdir(parents=True)
    assert _est(["src/pkg.py"], workspace=tmp_path).breakdown == {"backend_modify": 700}


def test_files_outside_the_workspace_are_never_read(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    outside = _write(tmp_path / "outside.py", "x = 1\n")
    (workspace / "link.py").symlink_to(outside)
    for deliverable in ["../outside.py", str(outside), "link.py"]:
        assert _est([deliverable], workspace=workspace).breakdown == {"backend_new": 2000}


def test_estimates_follow_the_file_system_without_caching(tmp_path: Path) -> None:
    before = _est(["src/mod.py"], workspace=tmp_path)
    _write(tmp_path / "src/mod.py", "x = 1\n")
    small = _est(["src/mod.py"], workspace=tmp_path)
    _write(tmp_path / "src/mod.py", "\n".join(f"x{i} = {i}" for i in range(300)))
    larger = _est(["src/mod.py"], workspace=tmp_path)
    assert before.breakdown == {"backend_new": 2000}
    assert small.breakdown == {"backend_modify": int(700 * 0.7 * 0.9 * 0.9)}
    assert larger.breakdown == {"backend_modify": int(700 * 1.3 * 0.9 * 0.9)}


@pytest.mark.parametrize(
    ("deliverable", "category", "head_cost", "seed_cost"),
    [
        ("tests/README.md", "implementation", 1400, 500),
        ("db/schema.sql", "database", 1500, 2000),
        ("alembic/versions/001_init.py", "database", 1000, 1000),
        ("src/view.py", "frontend", 2800, 2800),
    ],
)
def test_cost_precedence_differs_between_eras(
    deliverable: str, category: str, head_cost: int, seed_cost: int
) -> None:
    head = _est([deliverable], category, coefficients=HEAD)
    seed = _est([deliverable], category, coefficients=SEED)
    assert sum(head.breakdown.values()) == head_cost
    assert sum(seed.breakdown.values()) == seed_cost


# --- routing and telemetry fields -----------------------------------------------------------


def test_sot_update_records_its_telemetry_fields() -> None:
    result = _est(["BUILD_LOG.md"], "docs", scope_paths=None)
    assert result.model == "doc_sot_update"
    assert result.estimated_tokens == 5245
    assert result.telemetry_fields() == {
        "api_reference_required": None,
        "examples_required": None,
        "research_required": None,
        "usage_guide_required": None,
        "context_quality": "none",
        "is_sot_file": True,
        "sot_file_name": "build_log.md",
        "sot_entry_count_hint": 1,
    }


def test_docs_phase_records_doc_features_and_code_phase_does_not() -> None:
    docs = _est(["docs/guide.md"], "docs", task_description="A tutorial", scope_paths=["src/"])
    assert docs.model == "overhead"
    assert docs.usage_guide_required is True
    assert docs.api_reference_required is False
    assert docs.context_quality == "some"
    code = _est(["src/a.py"], "implementation")
    assert set(code.telemetry_fields().values()) == {None, False}
    assert code.is_sot_file is False


def test_context_quality_becomes_strong_above_ten_scope_paths() -> None:
    scope = [f"src/m{i}/" for i in range(11)]
    result = _est(["docs/API_REFERENCE.md"], "documentation", scope_paths=scope)
    assert result.model == "doc_synthesis"
    assert result.context_quality == "strong"
    assert result.breakdown["doc_synthesis_investigate"] == 1500


def test_mixed_doc_and_code_phase_uses_the_overhead_model() -> None:
    result = _est(["docs/API_REFERENCE.md", "src/api.py"], "docs")
    assert result.model == "overhead"
    assert result.breakdown == {"doc_new": 500, "backend_new": 2000}


def test_empty_phase_uses_the_complexity_default() -> None:
    result = _est([], "implementation", "critical")
    assert (result.estimated_tokens, result.confidence, result.model) == (8192, 0.5, "empty")
    assert result.breakdown == {}
    assert result.telemetry_fields()["context_quality"] is None


def test_estimate_names_its_coefficient_set() -> None:
    result = _est(["src/a.py"], coefficients=HEAD)
    assert result.coefficient_set == "original-head"
    assert result.coefficient_set_hash == coefficient_set_hash(HEAD)
    assert result.deliverables == ("src/a.py",)


def test_phase_category_fills_in_a_missing_category() -> None:
    assert phase_category(None, ["docs/a.md", "CHANGELOG.md"]) == "documentation"
    assert phase_category("", ["src/a.py"]) == "implementation"
    assert phase_category("tests", ["docs/a.md"]) == "tests"


def test_original_head_keeps_the_tests_category_defect() -> None:
    tests = _est(["tests/test_a.py"], "tests", coefficients=HEAD)
    testing = _est(["tests/test_a.py"], "testing", coefficients=HEAD)
    assert (tests.phase_overhead, testing.phase_overhead) == (2000, 915)
    fixed = _est(["tests/test_a.py"], "tests")
    assert (fixed.category_key, fixed.phase_overhead) == ("tests", 915)


@given(
    st.lists(st.one_of(code_paths, st.just("tests/test_x.py"), st.just("docs/a.md")), max_size=6),
    complexities,
    st.sampled_from([("tests", "testing"), ("docs", "documentation"), ("doc", "DOCS")]),
)
def test_default_set_estimates_aliases_identically(
    deliverables: list[str], complexity: str, pair: tuple[str, str]
) -> None:
    first, second = (_est(deliverables, category, complexity) for category in pair)
    assert first.estimated_tokens == second.estimated_tokens
    assert first.breakdown == second.breakdown
    assert first.category_key == second.category_key
    assert select_budget(first, complexity, coefficients=DEFAULT) == select_budget(
        second, complexity, coefficients=DEFAULT
    )


@given(st.lists(code_paths, max_size=12), code_paths, categories, complexities)
def test_estimate_grows_with_each_code_deliverable(
    deliverables: list[str], extra: str, category: str, complexity: str
) -> None:
    before = _est(deliverables, category, complexity)
    after = _est([*deliverables, extra], category, complexity)
    assert after.deliverable_count == before.deliverable_count + 1
    assert after.estimated_tokens > before.estimated_tokens or not deliverables


# --- budget selection -----------------------------------------------------------------------


@given(
    st.lists(st.one_of(code_paths, st.just("docs/a.md"), st.just("BUILD_LOG.md")), max_size=60),
    categories,
    complexities,
    st.sampled_from([DEFAULT, HEAD, SEED]),
)
def test_budget_is_between_the_base_and_the_cap(
    deliverables: list[str], category: str, complexity: str, coefficients: CoefficientSet
) -> None:
    result = _est(deliverables, category, complexity, coefficients=coefficients)
    budget = select_budget(result, complexity, coefficients=coefficients)
    assert budget <= 64000
    assert budget >= min(
        coefficients.budget.base_for(normalize_category(result.category), complexity), 64000
    )
    assert budget >= min(result.estimated_tokens, 64000)


def test_budget_is_capped_at_64000() -> None:
    result = _est([f"src/m{i}.py" for i in range(40)], "implementation", "high")
    assert result.estimated_tokens > 64000
    assert select_budget(result, "high", coefficients=DEFAULT) == 64000


def test_low_confidence_raises_the_buffer() -> None:
    result = _est(["refactor the parser", "refactor the lexer", "tidy up"], "refactoring", "high")
    assert result.confidence == 0.5
    assert int(result.estimated_tokens * 1.4) > 16384
    assert select_budget(result, "high", coefficients=DEFAULT) == int(result.estimated_tokens * 1.4)


def test_high_complexity_buffer_compares_the_raw_category() -> None:
    deliverables = ["src/a.py", "src/b.py", "src/c.py", "src/d.py"]
    feature = _est(deliverables, "IMPLEMENT_FEATURE", "high")
    plain = _est(deliverables, "implementation", "high")
    assert select_budget(feature, "high", coefficients=DEFAULT) == int(
        feature.estimated_tokens * 1.6
    )
    assert select_budget(plain, "high", coefficients=DEFAULT) == int(plain.estimated_tokens * 1.2)


# --- coefficient sets -----------------------------------------------------------------------


def test_builtin_sets_are_named_after_their_files_and_stored_canonically() -> None:
    names = builtin_set_names()
    assert names == ["default", "original-2025-12-25", "original-head"]
    for name in names:
        coefficients = load_builtin_set(name)
        assert coefficients.name == name
        text = (SETS_DIR / f"{name}.json").read_text(encoding="utf-8")
        assert text == coefficient_set_to_json(coefficients)


def test_hash_is_short_hex_stable_and_ignores_metadata() -> None:
    digest = coefficient_set_hash(DEFAULT)
    assert re.fullmatch(r"[0-9a-f]{12}", digest)
    assert coefficient_set_hash(load_builtin_set("default")) == digest
    assert coefficient_set_hash(DEFAULT, full=True).startswith(digest)
    assert len({coefficient_set_hash(s) for s in (DEFAULT, HEAD, SEED)}) == 3
    renamed = derive_set(DEFAULT, name="copy", description="same numbers", phase_overhead={})
    assert coefficient_set_hash(renamed) == digest


@given(
    st.sampled_from(sorted(DEFAULT.phase_overhead)),
    st.sampled_from(["low", "medium", "high"]),
    st.integers(min_value=0, max_value=50_000),
)
def test_hash_changes_whenever_an_overhead_changes(
    category: str, complexity: str, tokens: int
) -> None:
    derived = derive_set(
        DEFAULT, name="derived", description="", phase_overhead={(category, complexity): tokens}
    )
    changed = tokens != DEFAULT.phase_overhead[category][complexity]
    assert (coefficient_set_hash(derived) != coefficient_set_hash(DEFAULT)) == changed


def test_derived_set_maps_categories_to_lookup_keys() -> None:
    derived = derive_set(
        DEFAULT,
        name="calibrated-1",
        description="tests/low recalibrated",
        phase_overhead={("testing", "low"): 1220},
        provenance={"proposal": "estimator_calibration_proposal_x.json"},
    )
    assert derived.phase_overhead["tests"]["low"] == 1220
    assert "testing" not in derived.phase_overhead
    assert derived.provenance["proposal"].endswith(".json")
    assert _est(["tests/test_a.py"], "tests", coefficients=derived).phase_overhead == 1220


def test_derived_set_is_validated() -> None:
    with pytest.raises(CoefficientSetError, match="invalid"):
        derive_set(DEFAULT, name="bad", description="", phase_overhead={("tests", "low"): -1})
    with pytest.raises(CoefficientSetError):
        derive_set(DEFAULT, name="no spaces allowed", description="", phase_overhead={})


def test_set_round_trips_through_a_file(tmp_path: Path) -> None:
    file = tmp_path / "mine.json"
    file.write_text(coefficient_set_to_json(HEAD), encoding="utf-8")
    loaded = load_set_from_file(file)
    assert loaded == HEAD
    assert coefficient_set_hash(loaded) == coefficient_set_hash(HEAD)


def _set_data(**changes: object) -> dict[str, object]:
    data = DEFAULT.model_dump(mode="json")
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "invalid"),
        (json.dumps(_set_data(safety_margin=-1)), "safety_margin"),
        (json.dumps(_set_data(surprise=1)), "surprise"),
        (json.dumps(_set_data(phase_overhead={"testing": {"low": 915}})), "never match"),
        (json.dumps({k: v for k, v in _set_data().items() if k != "budget"}), "budget"),
    ],
)
def test_bad_coefficient_file_is_a_config_error(tmp_path: Path, content: str, message: str) -> None:
    file = tmp_path / "set.json"
    file.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as raised:
        load_set_from_file(file)
    assert isinstance(raised.value, CoefficientSetError)
    assert raised.value.exit_code == EXIT_REFUSED
    assert raised.value.hint


def test_budget_base_keys_must_be_normalised(tmp_path: Path) -> None:
    budget = DEFAULT.budget.model_dump(mode="json")
    budget["base"] = {"documentation": {"low": 4096}}
    file = tmp_path / "set.json"
    file.write_text(json.dumps(_set_data(budget=budget)), encoding="utf-8")
    with pytest.raises(CoefficientSetError, match="documentation"):
        load_set_from_file(file)


def test_missing_or_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as raised:
        load_set_from_file(tmp_path / "nope.json")
    assert "default" in (raised.value.hint or "")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_set_from_file(tmp_path)


def test_unknown_builtin_set_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no built-in") as raised:
        load_builtin_set("newest")
    assert "original-head" in (raised.value.hint or "")


# --- provider ceiling and escalation --------------------------------------------------------


def test_docs_budget_survives_the_full_file_floor_only_after_build_142() -> None:
    head = provider_max_tokens(
        4096, "low", coefficients=HEAD, task_category="docs", builder_mode="full_file"
    )
    seed = provider_max_tokens(
        4096, "low", coefficients=SEED, task_category="docs", builder_mode="full_file"
    )
    assert (head.max_tokens, head.floors) == (4096, ())
    assert (seed.max_tokens, seed.floors) == (16384, ("large_change",))


def test_code_phase_in_full_file_mode_gets_the_16384_floor() -> None:
    decision = provider_max_tokens(
        8192, "low", coefficients=DEFAULT, task_category="implementation", builder_mode="full_file"
    )
    assert decision.max_tokens == 16384
    assert decision.request_max_tokens == 16384


@pytest.mark.parametrize(
    ("category", "scope", "change_size", "requested", "expected", "marked"),
    [
        (None, [], None, None, 12288, None),
        (None, ["web/package.json"], None, None, 16384, "large_refactor"),
        (None, ["web/package.json"], "small", None, 12288, "small"),
        ("frontend", [], None, None, 16384, "large_refactor"),
        ("backend", ["a/", "b/", "c/"], None, None, 12288, None),
        ("backend", ["a/", "b/", "c/"], None, 100, 12000, None),
        (None, [], None, 0, 4096, None),
    ],
)
def test_provider_floors_without_an_estimate(
    category: str | None,
    scope: list[str],
    change_size: str | None,
    requested: int | None,
    expected: int,
    marked: str | None,
) -> None:
    decision = provider_max_tokens(
        None,
        "medium",
        coefficients=DEFAULT,
        task_category=category,
        scope_paths=scope,
        change_size=change_size,
        requested=requested,
    )
    assert decision.max_tokens == expected
    assert decision.change_size == marked


def test_selected_budget_is_never_lowered_and_the_request_is_capped() -> None:
    kept = provider_max_tokens(35724, "medium", coefficients=DEFAULT, builder_mode="full_file")
    assert kept.max_tokens == 35724
    capped = provider_max_tokens(64000, "high", coefficients=DEFAULT, requested=70000)
    assert (capped.max_tokens, capped.request_max_tokens) == (70000, 64000)
    raised = provider_max_tokens(20000, "high", coefficients=DEFAULT, requested=16384)
    assert (raised.max_tokens, raised.floors) == (20000, ("selected_budget",))


def test_escalation_uses_the_largest_known_budget() -> None:
    d2 = escalation_budget(
        selected_budget=12288,
        actual_max_tokens=16384,
        actual_output_tokens=16384,
        complexity="medium",
        coefficients=HEAD,
    )
    assert (d2.base, d2.base_source, d2.retry_budget) == (16384, "actual_max_tokens", 20480)
    unknown = escalation_budget(
        selected_budget=None,
        actual_max_tokens=0,
        actual_output_tokens=None,
        complexity="high",
        coefficients=HEAD,
    )
    assert (unknown.base_source, unknown.retry_budget) == ("complexity_default", 20480)
    capped = escalation_budget(
        selected_budget=60000,
        actual_max_tokens=None,
        actual_output_tokens=None,
        complexity="low",
        coefficients=HEAD,
    )
    assert capped.retry_budget == 64000


def _escalates(
    truncated: bool, output: int | None, ceiling: int | None, *, escalated: bool, attempt: int
) -> bool:
    return should_escalate(
        truncated=truncated,
        output_tokens=output,
        max_tokens=ceiling,
        already_escalated=escalated,
        attempt_index=attempt,
        max_attempts=5,
        coefficients=DEFAULT,
    )


def test_escalation_happens_once_on_truncation_or_near_ceiling() -> None:
    assert _escalates(True, None, None, escalated=False, attempt=0)
    assert _escalates(False, 15600, 16384, escalated=False, attempt=0)
    assert not _escalates(False, 9000, 16384, escalated=False, attempt=0)
    assert not _escalates(True, 16384, 16384, escalated=True, attempt=0)
    assert not _escalates(True, 16384, 16384, escalated=False, attempt=4)


def test_estimator_package_never_imports_the_terminal_libraries() -> None:
    code = (
        "import sys, autopack.estimator; "
        "print(sorted(m for m in ('typer', 'rich') if m in sys.modules))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "[]"
