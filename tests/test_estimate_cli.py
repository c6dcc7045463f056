"""`autopack estimate`: the CLI shows what the estimator API computes."""

from __future__ import annotations

import json
from pathlib import Path

from autopack.estimator import estimate, load_builtin_set, select_budget
from autopack.estimator.provider import provider_max_tokens
from tests.conftest import CliRunner


def test_estimate_json_matches_the_api(cli: CliRunner, workdir: Path) -> None:
    result = cli(
        "estimate",
        "--category",
        "implementation",
        "--complexity",
        "low",
        "examples/telemetry_utils/string_helper.py",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    coefficients = load_builtin_set("default")
    expected = estimate(
        ["examples/telemetry_utils/string_helper.py"],
        "implementation",
        "low",
        coefficients=coefficients,
        workspace=workdir,
    )
    assert doc["estimate"]["estimated_tokens"] == expected.estimated_tokens
    assert doc["selected_budget"] == select_budget(expected, "low", coefficients=coefficients)
    assert doc["estimate"]["coefficient_set"] == "default"
    decision = provider_max_tokens(
        doc["selected_budget"], "low", coefficients=coefficients, task_category="implementation"
    )
    assert doc["max_tokens"] == decision.max_tokens


def test_estimate_sees_an_existing_file_as_a_modification(cli: CliRunner, workdir: Path) -> None:
    target = workdir / "pkg" / "mod.py"
    target.parent.mkdir()
    new = json.loads(
        cli(
            "estimate",
            "--category",
            "implementation",
            "--complexity",
            "low",
            "pkg/mod.py",
            "--json",
        ).stdout
    )
    target.write_text("def f():\n    return 1\n" * 50)
    modified = json.loads(
        cli(
            "estimate",
            "--category",
            "implementation",
            "--complexity",
            "low",
            "pkg/mod.py",
            "--json",
        ).stdout
    )
    assert new["estimate"]["breakdown"] != modified["estimate"]["breakdown"]


def test_estimate_table_and_coefficient_choices(cli: CliRunner, workdir: Path) -> None:
    shown = cli(
        "estimate",
        "--category",
        "docs",
        "--complexity",
        "low",
        "docs/guide.md",
        "--coefficients",
        "original-head",
    )
    assert shown.exit_code == 0
    assert "predicted output tokens" in shown.stdout
    assert "original-head" in shown.stdout
    assert shown.stderr == ""
    unknown = cli(
        "estimate", "--category", "docs", "--complexity", "low", "x.md", "--coefficients", "nope"
    )
    assert unknown.exit_code == 2
    assert "nope" in unknown.stderr
    missing = cli(
        "estimate",
        "--category",
        "docs",
        "--complexity",
        "low",
        "x.md",
        "--coefficients-file",
        "missing.json",
    )
    assert missing.exit_code == 2
    assert "missing.json" in missing.stderr


def _estimate(cli: CliRunner, category: str, complexity: str, *extra: str) -> tuple[int, str]:
    result = cli("estimate", "--category", category, "--complexity", complexity, "src/x.py", *extra)
    return result.exit_code, result.stderr


def test_an_unknown_complexity_is_refused_not_estimated_as_medium(cli: CliRunner) -> None:
    code, stderr = _estimate(cli, "implementation", "extreme", "--json")
    assert code == 2
    assert "error: --complexity 'extreme' is not a complexity." in stderr
    assert "hint: valid values: low, medium, high, maintenance" in stderr


def test_a_misspelt_category_is_refused_with_a_did_you_mean(cli: CliRunner) -> None:
    code, stderr = _estimate(cli, "implementationn", "low")
    assert code == 2
    assert "error: --category 'implementationn' is not a category" in stderr
    assert "hint: did you mean 'implementation'? valid values: backend," in stderr


def test_a_close_complexity_gets_a_did_you_mean(cli: CliRunner) -> None:
    code, stderr = _estimate(cli, "tests", "hihg")
    assert code == 2
    assert "did you mean 'high'?" in stderr


def test_the_estimators_aliases_are_still_accepted(cli: CliRunner) -> None:
    for category, complexity in [
        ("testing", "med"),
        ("IMPLEMENT_FEATURE", "high_complexity"),
        ("Documentation", "Low"),
        ("doc_synthesis", "maintenance"),
    ]:
        code, stderr = _estimate(cli, category, complexity)
        assert code == 0, stderr


def test_a_raw_lookup_set_accepts_its_own_keys(cli: CliRunner) -> None:
    code, stderr = _estimate(cli, "testing", "low", "--coefficients", "original-head")
    assert code == 0, stderr
