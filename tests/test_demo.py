"""`autopack demo` end to end, and the simulated model against autopack's real client."""

from __future__ import annotations

import ast
import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from autopack.demo.replies import read_prompt
from autopack.demo.simulated_model import SIMULATED_MODEL_NAME, SimulatedModel
from autopack.demo.token_draws import PUBLISHED_GROUPS, distribution_for
from autopack.errors import EXIT_REFUSED
from autopack.executor.output import parse_reply
from autopack.executor.prompts import PhaseSpec, build_prompt
from autopack.llm.base import LlmRequest, LlmResult
from autopack.llm.clients import make_client
from autopack.llm.settings import load_llm_settings
from tests.conftest import CliResult, CliRunner, run_cli_in

SEED_PHASES = 37  # telemetry-balanced (27) + telemetry-collection-v4 (10)


def _phase(category: str, deliverables: list[str]) -> PhaseSpec:
    return PhaseSpec.from_scope(
        run_id="run-sim",
        phase_id=f"p-{category}",
        name="A small module",
        description="Write a small module with one pure function.",
        task_category=category,
        complexity="low",
        scope={"paths": ["pkg/"], "deliverables": deliverables},
    )


@pytest.fixture
def model() -> Iterator[SimulatedModel]:
    """A model that never cuts off on its own: only a budget below the draw truncates."""
    with SimulatedModel(seed=7, truncation_probability=0.0) as running:
        yield running


def _complete(
    model: SimulatedModel, phase: PhaseSpec, tmp_path: Path, max_tokens: int
) -> LlmResult:
    prompt = build_prompt(phase, tmp_path)
    with make_client(load_llm_settings(model.llm_environ())) as client:
        return client.complete(
            LlmRequest(max_tokens=max_tokens, prompt=prompt.user, system=prompt.system)
        )


def test_the_real_client_reads_the_usage_the_server_reported(
    model: SimulatedModel, tmp_path: Path
) -> None:
    phase = _phase("implementation", ["pkg/util.py", "pkg/notes.md"])
    result = _complete(model, phase, tmp_path, max_tokens=64000)

    call = model.calls[-1]
    assert (result.input_tokens, result.output_tokens) == (
        call.input_tokens,
        call.output_tokens,
    )
    assert result.truncated is False
    assert result.stop_reason == "end_turn"
    assert result.response_model == SIMULATED_MODEL_NAME
    change_set = parse_reply(result.text)
    files = {entry.path: entry.content for entry in change_set.files}
    assert sorted(files) == ["pkg/notes.md", "pkg/util.py"]
    ast.parse(files["pkg/util.py"])
    assert files["pkg/notes.md"].startswith("# ")


def test_a_budget_below_the_draw_is_cut_off_at_max_tokens(
    model: SimulatedModel, tmp_path: Path
) -> None:
    result = _complete(model, _phase("implementation", ["pkg/util.py"]), tmp_path, max_tokens=60)

    assert result.truncated is True
    assert result.stop_reason == "max_tokens"
    assert result.output_tokens == 60 == model.calls[-1].output_tokens
    assert not parse_reply(result.text).ok


def test_tests_files_pass_under_pytest(model: SimulatedModel, tmp_path: Path) -> None:
    phase = _phase("tests", ["pkg/test_util.py"])
    result = _complete(model, phase, tmp_path, max_tokens=64000)
    (file,) = parse_reply(result.text).files
    (tmp_path / "pkg").mkdir()
    (tmp_path / file.path).write_text(file.content, encoding="utf-8")

    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    run = subprocess.run(
        ["python", "-m", "pytest", "-q", "-p", "no:cacheprovider", file.path],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout
    assert "2 passed" in run.stdout


def test_the_same_seed_draws_the_same_tokens(tmp_path: Path) -> None:
    phase = _phase("docs", ["pkg/guide.md"])
    drawn = []
    for _ in range(2):
        with SimulatedModel(seed=99) as fresh:
            _complete(fresh, phase, tmp_path, max_tokens=64000)
            drawn.append(fresh.calls[-1].output_tokens)
    assert drawn[0] == drawn[1]


def test_requests_the_real_api_refuses_are_refused(model: SimulatedModel) -> None:
    url = f"{model.base_url}/v1/messages"
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    no_key = httpx.post(url, json=body, headers={"anthropic-version": "2023-06-01"})
    assert no_key.status_code == 401
    assert no_key.json()["type"] == "error"
    no_version = httpx.post(url, json=body, headers={"x-api-key": "k"})
    assert no_version.status_code == 400
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    no_messages = httpx.post(url, json={"model": "m", "max_tokens": 10}, headers=headers)
    assert no_messages.status_code == 400
    assert model.calls == []


def test_the_published_groups_are_section_12_3() -> None:
    assert PUBLISHED_GROUPS[("implementation", "low")].median == 0.313
    assert PUBLISHED_GROUPS[("docs", "low")].high == 6.233
    # A group with no published median falls back on its category's mean waste (tests 2.10x).
    assert distribution_for("tests", "high").median == pytest.approx(1 / 2.10)


def test_the_prompt_is_read_as_the_model_would(tmp_path: Path) -> None:
    many = [f"pkg/m{index}.py" for index in range(6)]
    facts = read_prompt(build_prompt(_phase("implementation", many), tmp_path).user)
    assert facts.deliverables == tuple(many)
    assert facts.ndjson is True
    assert (facts.run_id, facts.phase_id, facts.category) == (
        "run-sim",
        "p-implementation",
        "implementation",
    )


# --- autopack demo, through the CLI ------------------------------------------------------


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[CliResult, Path]:
    """One demo for every check below (it takes a while: it drains 50-odd phases)."""
    workdir = tmp_path_factory.mktemp("demo")
    before = os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    result = run_cli_in(
        workdir,
        "demo",
        env={"DATABASE_URL": "sqlite:///somewhere-else.db", "AUTOPACK_LLM_PROVIDER": "openai"},
    )
    assert os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD") == before
    return result, workdir / "autopack-demo"


def _rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        return connection.execute(sql).fetchall()


def test_demo_runs_and_says_where_everything_is(demo_run: tuple[CliResult, Path]) -> None:
    result, directory = demo_run
    assert result.exit_code == 0, result.stderr
    assert "DATABASE_URL is set and ignored" in result.stderr
    assert "simulated model" in result.stdout
    assert str(directory / "autopack_telemetry_seed.db") in result.stdout
    assert "Next, try:" in result.stdout
    assert "[13/13] sample-first drain batch (legacy DB)" in result.stderr
    assert not (directory.parent / "somewhere-else.db").exists()
    document = json.loads((directory / "reports" / "demo.json").read_text(encoding="utf-8"))
    assert document["simulated"] is True
    assert document["model"] == SIMULATED_MODEL_NAME
    assert document["ignored_database_url"] is True
    for step in document["steps"]:
        assert step["exit_code"] in (0, 1)
        if step["output"]:
            assert (directory / step["output"]).stat().st_size > 0
            assert step["command"].startswith("autopack ")
    assert (directory / "reports" / "telemetry-analysis.md").exists()


def test_demo_seed_db_has_simulated_telemetry_to_calibrate_on(
    demo_run: tuple[CliResult, Path],
) -> None:
    _, directory = demo_run
    seed = directory / "autopack_telemetry_seed.db"
    assert _rows(seed, "SELECT COUNT(*) FROM runs") == [(2,)]
    assert _rows(seed, "SELECT COUNT(*) FROM phases") == [(SEED_PHASES,)]
    models = _rows(seed, "SELECT DISTINCT model FROM token_estimation_v2_events")
    assert models == [(SIMULATED_MODEL_NAME,)]
    assert _rows(seed, "SELECT DISTINCT model FROM llm_usage_events") == [(SIMULATED_MODEL_NAME,)]
    ((clean,),) = _rows(
        seed, "SELECT COUNT(*) FROM token_estimation_v2_events WHERE success AND NOT truncated"
    )
    assert clean >= 20
    ((escalations,),) = _rows(seed, "SELECT COUNT(*) FROM token_budget_escalation_events")
    assert escalations >= 1
    ((truncated,),) = _rows(seed, "SELECT COUNT(*) FROM token_estimation_v2_events WHERE truncated")
    assert truncated >= 1


def test_demo_workspace_is_a_git_repository_with_the_generated_files(
    demo_run: tuple[CliResult, Path],
) -> None:
    _, directory = demo_run
    workspace = directory / "workspace"
    log = subprocess.run(
        ["git", "log", "--format=%an <%ae>|%s"], cwd=workspace, capture_output=True, text=True
    )
    assert "autopack demo: empty workspace" in log.stdout
    # One commit per completed phase, on top of the first one.
    phase_commits = [line for line in log.stdout.splitlines() if "|autopack: " in line]
    seed = directory / "autopack_telemetry_seed.db"
    ((complete,),) = _rows(
        seed, "SELECT COUNT(*) FROM phases WHERE state = 'COMPLETE' AND run_id LIKE 'telemetry-%'"
    )
    assert len(phase_commits) >= complete > 0
    status = subprocess.run(
        ["git", "status", "--porcelain", "--", "examples"],
        cwd=workspace,
        capture_output=True,
        text=True,
    )
    assert status.stdout == ""  # every completed phase's files are committed
    generated = sorted(workspace.glob("examples/**/*.py"))
    assert generated
    for path in generated:
        ast.parse(path.read_text(encoding="utf-8"))
    assert list(workspace.glob("examples/**/*.md"))


def test_demo_proposes_coefficients_with_pictures(demo_run: tuple[CliResult, Path]) -> None:
    _, directory = demo_run
    reports = directory / "reports"
    [proposal] = sorted(reports.glob("estimator_calibration_proposal_*.json"))
    assert proposal.with_suffix(".md").exists()
    document = json.loads(proposal.read_text(encoding="utf-8"))
    assert document["samples"]["include_simulated"] is True
    assert document["samples"]["model"] == SIMULATED_MODEL_NAME
    assert document["backtest"]["n"] >= 20
    pictures = sorted(reports.glob("estimator_calibration_proposal_*.png"))
    assert len(pictures) == 3
    for picture in pictures:
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_legacy_backlog_triage_and_sample_first_drain(
    demo_run: tuple[CliResult, Path],
) -> None:
    _, directory = demo_run
    legacy = directory / "autopack_legacy.db"
    stale_report = (directory / "reports" / "09-triage-stale.txt").read_text(encoding="utf-8")
    assert "legacy-run-02" in stale_report
    outcomes: dict[str, int] = dict(
        _rows(legacy, "SELECT outcome, COUNT(*) FROM autopack_drain_results GROUP BY outcome")
    )
    assert outcomes.get("complete", 0) >= 1
    assert outcomes.get("failed", 0) >= 2
    fingerprints = _rows(
        legacy,
        "SELECT fingerprint, COUNT(DISTINCT phase_id) FROM autopack_drain_results "
        "WHERE outcome = 'failed' GROUP BY fingerprint",
    )
    assert any(count >= 2 for _, count in fingerprints)  # some fail the same way
    # The stale QUEUED phases were left alone: the drain took FAILED ones.
    ((queued,),) = _rows(legacy, "SELECT COUNT(*) FROM phases WHERE state = 'QUEUED'")
    assert queued == 2


def test_demo_refuses_a_non_empty_directory(cli: CliRunner, workdir: Path) -> None:
    (workdir / "full").mkdir()
    (workdir / "full" / "keep.txt").write_text("mine", encoding="utf-8")
    result = cli("demo", "--dir", "full")
    assert result.exit_code == EXIT_REFUSED
    assert "error:" in result.stderr
    assert "not empty" in result.stderr
    assert "hint:" in result.stderr
    assert sorted(p.name for p in (workdir / "full").iterdir()) == ["keep.txt"]


def test_demo_real_needs_a_configured_model(cli: CliRunner, workdir: Path) -> None:
    result = cli("demo", "--real", "--dir", "real")
    assert result.exit_code == EXIT_REFUSED
    assert "AUTOPACK_LLM_PROVIDER" in result.stderr
    assert "hint:" in result.stderr
    assert not (workdir / "real").exists()
