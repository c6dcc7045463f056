"""`calibrate propose` and `calibrate backtest`: the reference log, hand checks, degenerate data."""

from __future__ import annotations

import json
import math
import sqlite3
import statistics
from pathlib import Path
from typing import Any

import pytest

from autopack.calibrate.stats import weighted_median
from autopack.estimator import CoefficientSet, estimate, load_builtin_set
from autopack.telemetry.simulated import is_simulated_model
from tests.calibrate_helpers import (
    MODEL,
    SAMPLE_LOG,
    SETS_DIR,
    files_digest,
    init_and_import,
    log_line,
    proposal_file,
    propose_json,
    strict_json,
    write_log,
)
from tests.conftest import CliRunner

DEFAULT = load_builtin_set("default")


@pytest.fixture
def reference(cli: CliRunner, workdir: Path) -> str:
    url = f"sqlite:///{workdir / 'reference.db'}"
    init_and_import(cli, url, SAMPLE_LOG)
    return url


def _group(document: dict[str, Any], category: str, complexity: str) -> dict[str, Any]:
    groups: list[dict[str, Any]] = document["groups"]
    [group] = [g for g in groups if (g["category"], g["complexity"]) == (category, complexity)]
    return group


def _clean_actuals(path: Path, category: str, complexity: str) -> list[int]:
    connection = sqlite3.connect(path)
    try:
        rows = connection.execute(
            "SELECT actual_output_tokens FROM token_estimation_v2_events WHERE success = 1 AND "
            "truncated = 0 AND model = ? AND category = ? AND complexity = ? AND "
            "deliverable_count = 1",
            (MODEL, category, complexity),
        ).fetchall()
    finally:
        connection.close()
    return [int(row[0]) for row in rows]


# --- the reference log ---------------------------------------------------------------------


def test_reference_log_proposal_meets_the_quality_target(
    cli: CliRunner, reference: str, workdir: Path
) -> None:
    document = propose_json(cli, reference, workdir / "out")
    backtest = document["backtest"]
    assert set(backtest) >= {"n", "current", "proposed"}
    for side in ("current", "proposed"):
        assert set(backtest[side]) == {
            "smape_median",
            "smape_mean",
            "underestimation_rate",
            "truncation_rate",
            "waste_median",
        }
    current, proposed = backtest["current"], backtest["proposed"]
    assert current["smape_median"] > 50
    assert proposed["smape_median"] <= 30
    assert proposed["truncation_rate"] <= current["truncation_rate"]
    assert proposed["waste_median"] <= 2.5
    assert document["changed"] is True
    assert backtest["n"] == 33  # 35 clean sonnet rows, 2 of them without deliverables
    assert "5-fold by row" in backtest["split"]  # one imported file is one run
    # The original's own data: implementation over-predicted, docs under-predicted.
    assert _group(document, "implementation", "low")["step"] < 1
    assert _group(document, "implementation", "medium")["step"] < 1
    assert _group(document, "docs", "low")["step"] > 1
    assert document["samples"]["without_paths"] == 33
    assert document["samples"]["excluded_without_deliverables"] == 6


def test_two_groups_recomputed_by_hand(cli: CliRunner, reference: str, workdir: Path) -> None:
    document = propose_json(cli, reference, workdir / "out")
    damping = document["method"]["damping"]
    min_group = document["method"]["min_group_samples"]
    path = Path(reference.removeprefix("sqlite:///"))

    # implementation/low: 8 one-file rows, each predicted (634 + 2000) x 1.3 = 3424 today.
    predicted = estimate(
        ["src/generic_1.py"], "implementation", "low", coefficients=DEFAULT, workspace=None
    ).estimated_tokens
    assert predicted == int((634 + 2000) * 1.3)
    actuals = _clean_actuals(path, "implementation", "low")
    assert len(actuals) == 8
    ratios = [a / predicted for a in actuals]
    group = _group(document, "implementation", "low")
    assert group["n"] == 8
    assert group["rule"] == "own"
    assert group["ratio_median"] == pytest.approx(statistics.median(ratios), abs=1e-4)
    # Its category's pooled step: every clean implementation row, shrunk toward no change.
    import numpy as np

    medium_one = estimate(
        ["src/generic_1.py"], "implementation", "medium", coefficients=DEFAULT, workspace=None
    ).estimated_tokens
    medium_two = estimate(
        ["src/generic_1.py", "src/generic_2.py"],
        "implementation",
        "medium",
        coefficients=DEFAULT,
        workspace=None,
    ).estimated_tokens
    connection = sqlite3.connect(path)
    rows = connection.execute(
        "SELECT complexity, deliverable_count, actual_output_tokens FROM "
        "token_estimation_v2_events WHERE success = 1 AND truncated = 0 AND model = ? AND "
        "category = 'implementation'",
        (MODEL,),
    ).fetchall()
    connection.close()
    logs = [
        math.log(a / (predicted if c == "low" else medium_one if d == 1 else medium_two))
        for c, d, a in rows
    ]
    n_category = len(logs)
    pooled = statistics.median(logs) * n_category / (n_category + min_group)
    own = math.log(statistics.median(ratios))
    weight = 8 / (8 + min_group)
    expected_step = math.exp(damping * (weight * own + (1 - weight) * pooled))
    assert group["step"] == pytest.approx(expected_step, abs=1e-3)
    assert group["category_ratio_median"] == pytest.approx(math.exp(pooled), abs=1e-3)
    assert weighted_median(np.array(ratios), np.ones(8)) == pytest.approx(statistics.median(ratios))

    # tests/low: 4 rows, fewer than --min-group-samples: it takes the category's pooled step.
    tests_low = _group(document, "tests", "low")
    assert tests_low["n"] == 4
    assert tests_low["rule"] == "pooled"
    predicted_tests = estimate(
        ["tests/test_generic_1.py"], "tests", "low", coefficients=DEFAULT, workspace=None
    ).estimated_tokens
    assert predicted_tests == int((915 + 1400) * 1.3)
    tests_ratios = [a / predicted_tests for a in _clean_actuals(path, "tests", "low")]
    assert tests_low["ratio_median"] == pytest.approx(statistics.median(tests_ratios), abs=1e-4)
    assert tests_low["step"] == _group(document, "tests", "medium")["step"]


def test_the_proposed_set_is_what_the_estimator_loads(
    cli: CliRunner, reference: str, workdir: Path
) -> None:
    document = propose_json(cli, reference, workdir / "out")
    proposed = CoefficientSet.model_validate(document["coefficients"])
    assert proposed.schema_version == 2
    group = _group(document, "implementation", "low")
    one_file = estimate(
        ["src/a.py"], "implementation", "low", coefficients=proposed, workspace=None
    )
    assert one_file.estimated_tokens == int(int((634 + 2000) * 1.3) * group["proposed_scale"])
    # Beyond the evidence (1 deliverable), the group keeps today's numbers.
    three = ["src/a.py", "src/b.py", "src/c.py"]
    assert (
        estimate(
            three, "implementation", "low", coefficients=proposed, workspace=None
        ).estimated_tokens
        == estimate(
            three, "implementation", "low", coefficients=DEFAULT, workspace=None
        ).estimated_tokens
    )
    # Groups without evidence keep their coefficients (implementation/high was never measured).
    assert "high" not in proposed.calibration.get("implementation", {})
    # The written files: JSON (same document), Markdown linking the three charts.
    out = workdir / "out"
    assert strict_json(proposal_file(out).read_text()) == document
    [markdown] = out.glob("estimator_calibration_proposal_*.md")
    text = markdown.read_text()
    for chart in document["charts"]:
        assert (out / chart).stat().st_size > 1000
        assert f"]({chart})" in text
    assert len(document["charts"]) == 3
    assert "SMAPE = 200" in text  # every score it shows is defined


def test_propose_changes_neither_the_builtin_sets_nor_the_db(
    cli: CliRunner, reference: str, workdir: Path
) -> None:
    database = Path(reference.removeprefix("sqlite:///"))
    before_sets = files_digest(SETS_DIR.glob("*.json"))
    before_db = files_digest([database])
    propose_json(cli, reference, workdir / "out")
    assert files_digest(SETS_DIR.glob("*.json")) == before_sets
    assert files_digest([database]) == before_db


def test_no_charts_and_the_summary(cli: CliRunner, reference: str, workdir: Path) -> None:
    out = workdir / "out"
    out.mkdir()
    result = cli(
        "calibrate",
        "propose",
        "--database-url",
        reference,
        "--output-dir",
        str(out),
        "--no-charts",
    )
    assert result.exit_code == 0, result.stderr
    assert not list(out.glob("*.png"))
    assert "median SMAPE" in result.stdout
    assert "implementation/low" in result.stdout
    assert "wrote" in result.stdout
    assert "not representative" in result.stderr  # no high-complexity sample: coverage warns


# --- refusals ------------------------------------------------------------------------------


def test_too_few_samples_stops_and_writes_nothing(
    cli: CliRunner, reference: str, workdir: Path
) -> None:
    out = workdir / "out"
    out.mkdir()
    result = cli(
        "calibrate",
        "propose",
        "--database-url",
        reference,
        "--output-dir",
        str(out),
        "--min-samples",
        "100",
    )
    assert result.exit_code == 1
    assert "[STOP]" in result.stderr
    assert "33 clean samples" in result.stderr
    assert list(out.iterdir()) == []


def test_a_missing_output_dir_is_refused_before_reading(cli: CliRunner, reference: str) -> None:
    result = cli("calibrate", "propose", "--database-url", reference, "--output-dir", "nope")
    assert result.exit_code == 2
    assert "error:" in result.stderr
    assert "hint:" in result.stderr


def test_backtest_refuses_what_is_not_a_proposal(
    cli: CliRunner, reference: str, workdir: Path
) -> None:
    missing = cli("calibrate", "backtest", "nope.json", "--database-url", reference)
    assert missing.exit_code == 2
    assert "does not exist" in missing.stderr
    other = workdir / "other.json"
    other.write_text(json.dumps({"n": 1}))
    wrong = cli("calibrate", "backtest", str(other), "--database-url", reference)
    assert wrong.exit_code == 2
    assert "not an estimator calibration proposal" in wrong.stderr


# --- backtest of a saved proposal ----------------------------------------------------------


def test_backtest_scores_a_saved_proposal_on_another_db(
    cli: CliRunner, reference: str, workdir: Path
) -> None:
    propose_json(cli, reference, workdir / "out")
    proposal = proposal_file(workdir / "out")
    other = f"sqlite:///{workdir / 'other.db'}"
    lines = [log_line(i, actual=1500 + 10 * i) for i in range(12)]
    init_and_import(cli, other, write_log(workdir / "newer.log", lines))
    too_few = cli("calibrate", "backtest", str(proposal), "--database-url", other)
    assert too_few.exit_code == 1
    assert "[STOP]" in too_few.stderr
    result = cli(
        "calibrate",
        "backtest",
        str(proposal),
        "--database-url",
        other,
        "--min-samples",
        "10",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    scored = strict_json(result.stdout)
    assert scored["n"] == 12
    assert scored["current_set"] == "default"
    assert scored["proposed"]["smape_median"] < scored["current"]["smape_median"]
    assert scored["proposed"]["truncation_rate"] <= scored["current"]["truncation_rate"]


# --- degenerate data -----------------------------------------------------------------------


def _propose_lines(cli: CliRunner, workdir: Path, *logs: list[str]) -> dict[str, Any]:
    url = f"sqlite:///{workdir / 'degenerate.db'}"
    paths = [write_log(workdir / f"run{i}.log", lines) for i, lines in enumerate(logs)]
    init_and_import(cli, url, *paths)
    return propose_json(cli, url, workdir / "out")


def test_a_single_group(cli: CliRunner, workdir: Path) -> None:
    document = _propose_lines(
        cli, workdir, [log_line(i, actual=1200 + 37 * (i % 9)) for i in range(25)]
    )
    assert [(g["category"], g["complexity"]) for g in document["groups"]] == [
        ("implementation", "low")
    ]
    assert document["groups"][0]["rule"] == "own"


def test_all_truncated_is_too_little_data(cli: CliRunner, workdir: Path) -> None:
    url = f"sqlite:///{workdir / 'truncated.db'}"
    lines = [log_line(i, actual=16384, success=False, truncated=True) for i in range(25)]
    init_and_import(cli, url, write_log(workdir / "t.log", lines))
    (workdir / "out").mkdir()
    result = cli("calibrate", "propose", "--database-url", url, "--output-dir", "out")
    assert result.exit_code == 1
    assert "[STOP] only 0 clean samples" in result.stderr
    assert list((workdir / "out").iterdir()) == []


def test_identical_samples_have_zero_spread(cli: CliRunner, workdir: Path) -> None:
    document = _propose_lines(cli, workdir, [log_line(i, actual=1500) for i in range(25)])
    [group] = document["groups"]
    assert group["ratio_p25"] == group["ratio_median"] == group["ratio_p75"]
    low, high = group["step_interval"]
    assert low == pytest.approx(high, rel=1e-3)


def test_huge_outliers_stay_bounded(cli: CliRunner, workdir: Path) -> None:
    lines = [log_line(i, actual=1500 + 20 * i) for i in range(23)]
    lines += [log_line(23, actual=10_000_000), log_line(24, actual=1)]
    document = _propose_lines(cli, workdir, lines)
    [group] = document["groups"]
    assert 0.25 <= group["step"] <= 4
    assert 0.3 < group["ratio_median"] < 0.7  # the median ignores the two outliers


def test_an_unknown_category_is_calibrated_on_its_own_evidence(
    cli: CliRunner, workdir: Path
) -> None:
    lines = [
        log_line(i, actual=3000 + 50 * i, category="refactoring", complexity="medium")
        for i in range(25)
    ]
    document = _propose_lines(cli, workdir, lines)
    [group] = document["groups"]
    assert (group["category"], group["complexity"]) == ("refactoring", "medium")
    proposed = CoefficientSet.model_validate(document["coefficients"])
    assert proposed.calibration["refactoring"]["medium"].scale == group["proposed_scale"]


def test_three_runs_are_held_out_one_at_a_time(cli: CliRunner, workdir: Path) -> None:
    logs = [[log_line(i, actual=1400 + 30 * i + 100 * run) for i in range(10)] for run in range(3)]
    document = _propose_lines(cli, workdir, *logs)
    assert document["backtest"]["split"] == "leave-one-run-out (3 runs)"
    assert document["samples"]["runs"] == 3


def test_the_split_counts_only_runs_holding_the_fitted_models_rows(
    cli: CliRunner, workdir: Path
) -> None:
    """Runs of other (here simulated) models hold out nothing: one run of the model is k-fold."""
    mine = [log_line(i, actual=1400 + 30 * i) for i in range(25)]
    simulated = [
        [log_line(i, actual=900 + i, model="simulated-claude") for i in range(5)] for _ in range(2)
    ]
    document = _propose_lines(cli, workdir, mine, *simulated)
    assert document["samples"]["model"] == MODEL
    assert document["samples"]["runs"] == 1
    assert document["backtest"]["split"].startswith("5-fold by row (1 run")


def test_simulated_models_count_only_on_request(cli: CliRunner, workdir: Path) -> None:
    assert is_simulated_model("simulated-claude")
    assert is_simulated_model("Simulated-GPT")
    assert not is_simulated_model("claude-sonnet-4-5")
    assert not is_simulated_model(None)
    url = f"sqlite:///{workdir / 'sim.db'}"
    lines = [log_line(i, actual=1500 + i, model="simulated-claude") for i in range(30)]
    lines += [log_line(30 + i, actual=1500 + i) for i in range(5)]
    init_and_import(cli, url, write_log(workdir / "sim.log", lines))
    (workdir / "out").mkdir()
    refused = cli("calibrate", "propose", "--database-url", url, "--output-dir", "out")
    assert refused.exit_code == 1
    assert f"only 5 clean samples for model '{MODEL}' (simulated models excluded)" in (
        " ".join(refused.stderr.split())
    )
    document = propose_json(cli, url, workdir / "out", "--include-simulated")
    assert document["samples"]["model"] == "simulated-claude"
    assert document["samples"]["include_simulated"] is True


def test_require_phase_complete_uses_phase_outcomes(
    cli: CliRunner, reference: str, workdir: Path
) -> None:
    (workdir / "out").mkdir()
    # Imported rows sit on SKIPPED placeholder phases: none is COMPLETE yet.
    refused = cli(
        "calibrate",
        "propose",
        "--database-url",
        reference,
        "--output-dir",
        "out",
        "--require-phase-complete",
    )
    assert refused.exit_code == 1
    assert "[STOP] only 0 clean samples" in refused.stderr
    path = Path(reference.removeprefix("sqlite:///"))
    connection = sqlite3.connect(path)
    with connection:
        connection.execute("UPDATE phases SET state = 'COMPLETE'")
    expected = connection.execute(
        "SELECT count(*) FROM token_estimation_v2_events WHERE truncated = 0 AND model = ? "
        "AND deliverable_count > 0",
        (MODEL,),
    ).fetchone()[0]
    connection.close()
    document = propose_json(cli, reference, workdir / "out", "--require-phase-complete")
    assert document["samples"]["require_phase_complete"] is True
    assert document["samples"]["clean"] == expected > 33  # builder failures now count too
