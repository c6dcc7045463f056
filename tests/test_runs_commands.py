"""`autopack runs list`, `runs show RUN` and `phases show RUN PHASE` on a drained backlog."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

import autopack.runs.listing as listing_module
from autopack.db.engine import Database
from autopack.runs import RunFilters, list_runs, show_phase, show_run
from tests.backlog_helpers import NEVER, add_run
from tests.conftest import CliRunner, build_original_db
from tests.drain_fixtures import Drain

RUN = "run-a"
OTHER = "run-b"
FAILING = f"{RUN}-p2"


@pytest.fixture
def drained(backlog: Database, drain: Drain) -> Database:
    """run-a: p0 and p1 complete, p2 failed twice (two sessions); run-b: one queued phase."""
    add_run(backlog.engine, RUN, 3, deliverables={2: NEVER})
    code, doc, stderr = drain("--batch-size", "3", "--run-id", RUN)
    assert code == 1, stderr  # p2 fails verification
    assert [r["outcome"] for r in doc["results"]] == ["complete", "complete", "failed"]
    code, doc, stderr = drain("--state", "failed", "--batch-size", "1")
    assert code == 1, stderr
    assert doc["results"][0]["phase_id"] == FAILING
    add_run(backlog.engine, OTHER, 1)  # created last: newest first
    return backlog


def _json(cli: CliRunner, *args: str) -> dict[str, Any]:
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


# runs list -------------------------------------------------------------------------------------


def test_runs_list_counts_phases_by_state_and_telemetry(cli: CliRunner, drained: Database) -> None:
    url = drained.target.url
    doc = _json(cli, "runs", "list", "--database-url", url)
    assert doc["target"]["backend"] == drained.target.backend
    assert doc["matching"] == 2
    assert [run["id"] for run in doc["runs"]] == [OTHER, RUN]
    run_a = doc["runs"][1]
    assert run_a["phases"] == 3
    assert run_a["phase_states"] == {"COMPLETE": 2, "FAILED": 1}
    # Every answered builder call wrote a row: 2 good phases + 2 attempts at the failing one.
    assert run_a["telemetry_events"] == 4
    assert doc["runs"][0]["phase_states"] == {"QUEUED": 1}
    assert doc["runs"][0]["telemetry_events"] == 0
    assert set(run_a) >= {"id", "state", "created_at", "updated_at"}


def test_runs_list_filters_and_limit(cli: CliRunner, drained: Database) -> None:
    url = drained.target.url
    newest = _json(cli, "runs", "list", "--database-url", url, "--limit", "1")
    assert newest["matching"] == 2
    assert [run["id"] for run in newest["runs"]] == [OTHER]
    by_prefix = _json(cli, "runs", "list", "--database-url", url, "--prefix", "run-a")
    assert [run["id"] for run in by_prefix["runs"]] == [RUN]
    # Any case is accepted; the document names the state as stored.
    by_state = _json(cli, "runs", "list", "--database-url", url, "--state", "run_created")
    assert by_state["filters"]["state"] == "RUN_CREATED"
    assert [run["id"] for run in by_state["runs"]] == [OTHER]  # the drain moved run-a on
    none = _json(cli, "runs", "list", "--database-url", url, "--state", "DONE_SUCCESS")
    assert none["runs"] == []
    assert none["matching"] == 0


def test_runs_list_report_is_on_stdout_and_fits_80_columns(
    cli: CliRunner, drained: Database
) -> None:
    result = cli("runs", "list", "--database-url", drained.target.url, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.stderr
    assert "target database" in result.stderr  # the panel
    assert "target database" not in result.stdout
    lines = result.stdout.splitlines()
    assert any(line.startswith(RUN) and "2 complete, 1 failed" in line for line in lines)
    assert max(len(line) for line in lines) <= 80
    limited = cli("runs", "list", "--database-url", drained.target.url, "--limit", "1", "-q")
    assert "1 older runs not shown" in limited.stdout
    assert limited.stderr == ""


def test_runs_list_refuses_bad_options(cli: CliRunner, drained: Database) -> None:
    url = drained.target.url
    bad_state = cli("runs", "list", "--database-url", url, "--state", "DONE_SUCESS")
    assert bad_state.exit_code == 2
    assert "error: 'DONE_SUCESS' is not a run state (did you mean 'DONE_SUCCESS'?)" in (
        bad_state.stderr
    )
    assert "hint: run states:" in bad_state.stderr
    negative = cli("runs", "list", "--database-url", url, "--limit", "-1")
    assert negative.exit_code == 2
    assert "--limit must be 0 (all) or more" in negative.stderr


# runs show -------------------------------------------------------------------------------------


def test_runs_show_lists_phases_attempts_and_telemetry(cli: CliRunner, drained: Database) -> None:
    doc = _json(cli, "runs", "show", RUN, "--database-url", drained.target.url)
    assert doc["run"]["id"] == RUN
    assert [p["phase_id"] for p in doc["phases"]] == [f"{RUN}-p0", f"{RUN}-p1", FAILING]
    assert [p["drain_attempts"] for p in doc["phases"]] == [1, 1, 2]
    assert [p["telemetry_events"] for p in doc["phases"]] == [1, 1, 2]
    assert doc["phases"][2]["state"] == "FAILED"
    assert doc["phases"][2]["last_failure_reason"]
    assert doc["phases"][0]["task_category"] == "implementation"
    assert doc["phase_states"] == {"COMPLETE": 2, "FAILED": 1}
    assert doc["drain_attempts"] == 4
    telemetry = doc["telemetry"]
    assert telemetry["events"] == 4
    assert telemetry["actual_output_tokens"] == 4 * 300  # the fake's default reply
    assert telemetry["predicted_output_tokens"] > 0


def test_runs_show_human_report(cli: CliRunner, drained: Database) -> None:
    result = cli("runs", "show", RUN, "--database-url", drained.target.url, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "phases: 3 (2 complete, 1 failed)" in out
    assert "last failure reasons:" in out
    assert f"  {FAILING} " in out  # the id whole, never wrapped
    assert max(len(line) for line in out.splitlines()) <= 80


def test_unknown_run_is_refused_with_a_guess(cli: CliRunner, drained: Database) -> None:
    url = drained.target.url
    for command in (["runs", "show", "run-aa"], ["phases", "show", "run-aa", FAILING]):
        result = cli(*command, "--database-url", url)
        assert result.exit_code == 2
        assert "error: run 'run-aa' is not in this database (did you mean" in result.stderr
        assert "hint: list the runs with `autopack runs list`" in result.stderr
        assert result.stdout == ""


# phases show -----------------------------------------------------------------------------------


def test_phases_show_every_attempt_across_sessions(
    cli: CliRunner, drained: Database, workdir: Path
) -> None:
    doc = _json(cli, "phases", "show", RUN, FAILING, "--database-url", drained.target.url)
    assert doc["state"] == "FAILED"
    assert doc["deliverables"] == [NEVER]
    assert doc["scope"]["paths"] == ["shared/"]
    attempts = doc["attempts"]
    assert len(attempts) == 2
    assert len({a["session_id"] for a in attempts}) == 2
    assert [a["outcome"] for a in attempts] == ["failed", "failed"]
    assert attempts[0]["fingerprint"] == attempts[1]["fingerprint"] is not None
    assert all(a["failure_reason"] for a in attempts)
    assert attempts[0]["started_at"] <= attempts[1]["started_at"]
    for attempt in attempts:
        directory = Path(attempt["transcript_dir"])
        assert directory.is_dir()
        names = [Path(p).name for p in attempt["transcript_files"]]
        assert "attempt-1-prompt.md" in names
        assert "attempt-1-reply.txt" in names
    rows = doc["telemetry"]
    assert len(rows) == 2
    for row in rows:
        assert row["actual_output_tokens"] == 300
        assert row["predicted_output_tokens"] > 0
        assert row["selected_budget"] >= row["predicted_output_tokens"]
        assert row["truncated"] is False
        assert row["source"] == "drain"
        assert row["coefficient_set"]
    assert doc["telemetry_summary"]["events"] == 2


def test_phases_show_human_report(cli: CliRunner, drained: Database) -> None:
    result = cli(
        "phases", "show", RUN, FAILING, "--database-url", drained.target.url, env={"COLUMNS": "80"}
    )
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert f"phase: {FAILING}" in out
    assert "attempts (2, oldest first)" in out
    assert out.count("outcome failed → FAILED") == 2
    assert out.count("transcripts: ") == 2
    assert "attempt-1-reply.txt" in out
    assert "telemetry: 2 rows" in out


def test_a_never_drained_phase(cli: CliRunner, drained: Database) -> None:
    doc = _json(cli, "phases", "show", OTHER, f"{OTHER}-p0", "--database-url", drained.target.url)
    assert doc["attempts"] == []
    assert doc["telemetry"] == []
    shown = cli("phases", "show", OTHER, f"{OTHER}-p0", "--database-url", drained.target.url)
    assert "never drained by autopack" in shown.stdout


def test_unknown_phase_is_refused_with_a_guess(cli: CliRunner, drained: Database) -> None:
    result = cli("phases", "show", RUN, f"{RUN}-p9", "--database-url", drained.target.url)
    assert result.exit_code == 2
    assert f"error: phase '{RUN}-p9' is not in run '{RUN}' (did you mean" in result.stderr
    assert f"hint: list the run's phases with `autopack runs show {RUN}`" in result.stderr


# the database ----------------------------------------------------------------------------------


def test_reports_leave_the_file_unchanged(cli: CliRunner, drained: Database) -> None:
    path = drained.target.sqlite_path
    if path is None:
        pytest.skip("a file check: SQLite only")
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    url = drained.target.url
    assert cli("runs", "list", "--database-url", url).exit_code == 0
    assert cli("runs", "show", RUN, "--database-url", url).exit_code == 0
    assert cli("phases", "show", RUN, FAILING, "--database-url", url).exit_code == 0
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_empty_db_is_refused_unless_allowed(cli: CliRunner, backlog: Database) -> None:
    url = backlog.target.url
    for command in (["runs", "list"], ["runs", "show", RUN], ["phases", "show", RUN, "p"]):
        refused = cli(*command, "--database-url", url)
        assert refused.exit_code == 2
        assert "is empty (0 runs, 0 phases)" in refused.stderr
        assert "--allow-empty-db" in refused.stderr
    allowed = _json(cli, "runs", "list", "--database-url", url, "--allow-empty-db")
    assert allowed["runs"] == []
    assert allowed["matching"] == 0
    unknown = cli("runs", "show", RUN, "--database-url", url, "--allow-empty-db")
    assert unknown.exit_code == 2
    assert f"run '{RUN}' is not in this database." in unknown.stderr


def test_many_runs_are_counted_in_one_grouped_pass(
    drained: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    by_id = list_runs(drained, RunFilters(limit=0))
    monkeypatch.setattr(listing_module, "MAX_NAMED_RUNS", 1)
    assert list_runs(drained, RunFilters(limit=0)) == by_id


def test_the_python_api_returns_typed_results(drained: Database) -> None:
    listing = list_runs(drained, RunFilters(limit=0))
    assert [run.id for run in listing.runs] == [OTHER, RUN]
    detail = show_run(drained, RUN)
    assert detail.phases[2].drain_attempts == 2
    phase = show_phase(drained, RUN, FAILING)
    assert [a.outcome for a in phase.attempts] == ["failed", "failed"]


# a DB made by the original Autopack -------------------------------------------------------------


def test_an_original_db_is_reported_as_it_is(
    cli: CliRunner, original_db: tuple[Path, dict[str, int]]
) -> None:
    path, _ = original_db
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    listing = _json(cli, "runs", "list", "--db", "legacy")
    assert {run["id"] for run in listing["runs"]} == {"legacy-run-a", "legacy-run-b"}
    detail = _json(cli, "runs", "show", "legacy-run-a", "--db", "legacy")
    assert detail["drain_results_available"] is False
    assert detail["telemetry"]["events"] == 4
    assert detail["telemetry"]["truncated"] == 1
    phase = _json(cli, "phases", "show", "legacy-run-a", "phase-4", "--db", "legacy")
    assert phase["drain_results_available"] is False
    assert phase["attempts"] == []
    (row,) = phase["telemetry"]
    assert row["truncated"] is True
    assert row["coefficient_set"] is None
    assert row["source"] is None
    assert [e["retry_max_tokens"] for e in phase["escalations"]] == [10240]
    shown = cli("phases", "show", "legacy-run-a", "phase-4", "--db", "legacy", "-q")
    assert "≥2,000" in shown.stdout  # a truncated call's actual output is a lower bound
    assert "some calls were truncated" in shown.stdout
    assert "retried with max_tokens 10,240" in shown.stdout
    assert "no autopack_drain_results table" in shown.stdout
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_an_original_db_without_telemetry_tables(cli: CliRunner, workdir: Path) -> None:
    build_original_db(workdir / "autopack_legacy.db", with_telemetry_tables=False)
    listing = _json(cli, "runs", "list", "--db", "legacy")
    assert listing["telemetry_available"] is False
    detail = _json(cli, "runs", "show", "legacy-run-a", "--db", "legacy")
    assert detail["telemetry"] is None
    phase = _json(cli, "phases", "show", "legacy-run-a", "phase-0", "--db", "legacy")
    assert phase["telemetry"] == []
    assert phase["telemetry_summary"] is None
    shown = cli("runs", "show", "legacy-run-a", "--db", "legacy", "-q")
    assert "table token_estimation_v2_events is missing" in shown.stdout
