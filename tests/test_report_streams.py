"""Where output goes: a command's report on stdout; the panel, progress and warnings on stderr.

Each report is also read at 80 columns (every id whole on one line, no line wider than the
terminal except an unbroken path, nothing cut with "…") and at 120 (every column shown).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from rich.cells import cell_len

from autopack.db.engine import Database
from tests.calibrate_helpers import SAMPLE_LOG
from tests.conftest import CliResult, CliRunner, reference_seed_spec
from tests.fake_llm import FakeLlmServer

RUN = "telemetry-collection-v4"
PHASES = [phase.phase_id for phase in reference_seed_spec(RUN).phases]
PANEL = "target database"
NARROW = {"COLUMNS": "80"}
WIDE = {"COLUMNS": "120"}


def assert_reads(result: CliResult, width: int, ids: list[str], workdir: Path) -> None:
    lines = result.stdout.splitlines()
    for line in lines:
        # A path is printed whole, to copy: the only line allowed past the edge.
        assert cell_len(line) <= width or str(workdir) in line, line
    assert "…" not in result.stdout, result.stdout
    for value in ids:
        assert any(value in line for line in lines), (value, result.stdout)


def assert_panel_only(result: CliResult) -> None:
    """stderr holds the target panel (and nothing of the report)."""
    assert PANEL in result.stderr
    text = result.stderr.rstrip()
    # Boxed; or, when a path is wider than the box allows, unboxed with the row counts last.
    rows_last = text.splitlines()[-1].startswith(("rows ", " ")) and "\nrows " in text
    assert text.endswith("╯") or rows_last, result.stderr


def header_line(result: CliResult, first: str) -> str:
    return next(line for line in result.stdout.splitlines() if line.startswith(f"┃ {first} "))


# db identity -----------------------------------------------------------------------------------


def test_db_identity_is_a_report_on_stdout(cli: CliRunner, seed_db: Database) -> None:
    result = cli("db", "identity", "--db", "seed", env=NARROW)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    roles = [line for line in result.stdout.splitlines() if "role" in line]  # `| grep role`
    assert roles
    assert "seed" in roles[0]
    assert "QUEUED" in result.stdout


def test_db_identity_piped_to_grep_finds_the_role(workdir: Path, seed_db: Database) -> None:
    command = f"{sys.executable} -m autopack db identity --db seed | grep role"
    done = subprocess.run(
        command, shell=True, cwd=workdir, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "seed" in done.stdout
    assert done.stderr == ""


def test_db_identity_of_a_missing_db_prints_no_report(cli: CliRunner, workdir: Path) -> None:
    result = cli("db", "identity", "--database-url", "sqlite:///missing.db")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error:")


# drain, drain sessions, telemetry explain ------------------------------------------------------


def _drain(cli: CliRunner, llm: FakeLlmServer, *extra: str) -> CliResult:
    return cli(
        "drain",
        "batch",
        "--db",
        "seed",
        "--workspace",
        "ws",
        "--ignore-order",
        *extra,
        env={**llm.env("anthropic"), **NARROW},
    )


@pytest.fixture
def drained(cli: CliRunner, workdir: Path, seed_db: Database, llm: FakeLlmServer) -> CliResult:
    """Three phases drained (the fake reply writes outside their scope: three failures with a
    long reason), then two without telemetry (zero-yield)."""
    (workdir / "ws").mkdir()
    first = _drain(cli, llm, "--batch-size", "3")
    assert first.exit_code == 1, first.stderr
    second = _drain(cli, llm, "--batch-size", "2", "--no-telemetry", "--quiet")
    assert second.exit_code == 1, second.stderr
    return first


def test_the_drain_report_is_on_stdout_its_progress_on_stderr(
    drained: CliResult, workdir: Path
) -> None:
    assert "drain batch session" in drained.stdout
    assert "drain batch session" not in drained.stderr
    assert "processed 3:" in drained.stdout
    assert "/min" not in drained.stdout
    assert PANEL in drained.stderr
    assert f"failed: {RUN} / {PHASES[0]}" in drained.stderr  # a progress line
    assert_reads(drained, 80, [RUN, *PHASES[:3]], workdir)
    assert "refused to write" in drained.stdout  # the reason is kept: rows became records


def test_drain_json_gives_rates_per_hour(
    cli: CliRunner, workdir: Path, seed_db: Database, llm: FakeLlmServer
) -> None:
    (workdir / "ws").mkdir()
    result = _drain(cli, llm, "--batch-size", "1", "--json")
    document = json.loads(result.stdout)
    totals = document["totals"]
    assert totals["phases_per_hour"] > 0
    assert totals["telemetry_per_hour"] == pytest.approx(totals["telemetry_per_minute"] * 60, 0.01)
    assert "telemetry_per_hour" in document["results"][0]


def test_drain_sessions_on_stdout_at_80_and_120(
    cli: CliRunner, drained: CliResult, workdir: Path
) -> None:
    narrow = cli("drain", "sessions", "--db", "seed", env=NARROW)
    assert narrow.exit_code == 0, narrow.stderr
    assert_panel_only(narrow)
    sessions = [
        s["id"]
        for s in json.loads(cli("drain", "sessions", "--db", "seed", "--json").stdout)["sessions"]
    ]
    assert len(sessions) == 2
    assert_reads(narrow, 80, [*sessions, "completed"], workdir)
    wide = cli("drain", "sessions", "--db", "seed", env=WIDE)
    assert_reads(wide, 120, sessions, workdir)
    header = header_line(wide, "session")
    for column in ("kind", "status", "started", "done", "telemetry", "stop reason"):
        assert column in header
    one = cli("drain", "sessions", sessions[-1], "--db", "seed", env=NARROW)
    assert_panel_only(one)
    assert_reads(one, 80, [sessions[-1], RUN, *PHASES[:3]], workdir)


def test_telemetry_explain_on_stdout(cli: CliRunner, drained: CliResult, workdir: Path) -> None:
    result = cli("telemetry", "explain", "--db", "seed", env=NARROW)
    assert result.exit_code == 0, result.stderr
    assert_panel_only(result)
    assert "telemetry_disabled" in result.stdout
    assert_reads(result, 80, [RUN, *PHASES[3:5]], workdir)


# triage stale ----------------------------------------------------------------------------------


def _age_queued(workdir: Path) -> None:
    with sqlite3.connect(workdir / "autopack_telemetry_seed.db") as connection:
        connection.execute(
            "UPDATE phases SET updated_at = '2020-01-01 00:00:00', "
            "created_at = '2020-01-01 00:00:00' WHERE state = 'QUEUED'"
        )


def test_triage_report_and_marking_on_stdout(
    cli: CliRunner, seed_db: Database, workdir: Path
) -> None:
    _age_queued(workdir)
    report = cli("triage", "stale", "--db", "seed", "--report-only", env=NARROW)
    assert report.exit_code == 1, report.stderr
    assert_panel_only(report)
    assert "10 stale phases in 1 run" in report.stdout
    assert_reads(report, 80, [RUN, *PHASES], workdir)
    wide = cli("triage", "stale", "--db", "seed", "--report-only", "-q", env=WIDE)
    header = header_line(wide, "run")
    for column in ("phase", "state", "idle for", "last activity (UTC)"):
        assert column in header
    marked = cli("triage", "stale", "--db", "seed", "--mark-failed", "--yes", "-q", env=NARROW)
    assert marked.exit_code == 1, marked.stderr  # stale phases were found
    assert "marked 10 phases FAILED" in marked.stdout
    assert marked.stderr == ""


# telemetry import and analyze ------------------------------------------------------------------


@pytest.fixture
def reference(cli: CliRunner, workdir: Path) -> str:
    url = f"sqlite:///{workdir / 'reference.db'}"
    assert cli("db", "init", "--database-url", url, "-q").exit_code == 0
    return url


def test_telemetry_import_reports_on_stdout(cli: CliRunner, reference: str) -> None:
    result = cli("telemetry", "import", "--database-url", reference, str(SAMPLE_LOG))
    assert result.exit_code == 0, result.stderr
    assert_panel_only(result)
    assert "imported 60 of 60 samples" in result.stdout


def test_telemetry_analyze_stratified_reads_at_80_and_120(
    cli: CliRunner, reference: str, workdir: Path
) -> None:
    assert (
        cli("telemetry", "import", "--database-url", reference, str(SAMPLE_LOG), "-q").exit_code
        == 0
    )
    narrow = cli("telemetry", "analyze", "--database-url", reference, "--stratify", env=NARROW)
    assert narrow.exit_code == 0, narrow.stderr
    categories = ["implementation", "configuration", "integration", "refactoring"]
    assert_reads(narrow, 80, categories, workdir)
    assert "stratified by category" in narrow.stdout
    # stderr: the panel, then warnings only.
    after_panel = narrow.stderr.split("╯", 1)[1] if "╯" in narrow.stderr else narrow.stderr
    assert "\nwarning:" in "\n" + after_panel, narrow.stderr
    for report_text in ("telemetry analysis", "Tier 1", "stratified", "coverage", "median ="):
        assert report_text not in narrow.stderr
    wide = cli("telemetry", "analyze", "--database-url", reference, "--stratify", "-q", env=WIDE)
    header = header_line(wide, "category")
    for column in ("rows", "success", "truncated", "underestimated", "SMAPE mean", "waste mean"):
        assert column in header


# calibrate -------------------------------------------------------------------------------------


def test_calibrate_reports_and_written_paths_on_stdout(
    cli: CliRunner, reference: str, workdir: Path
) -> None:
    assert (
        cli("telemetry", "import", "--database-url", reference, str(SAMPLE_LOG), "-q").exit_code
        == 0
    )
    (workdir / "out").mkdir()
    propose = cli(
        "calibrate",
        "propose",
        "--database-url",
        reference,
        "--output-dir",
        "out",
        "--no-charts",
        env=NARROW,
    )
    assert propose.exit_code == 0, propose.stderr
    assert_reads(propose, 80, ["implementation/low", "configuration/low"], workdir)
    [written] = sorted((workdir / "out").glob("*.json"))
    assert f"wrote {written}" in propose.stdout
    assert "calibration proposal" not in propose.stderr
    assert "warning: samples not representative" in propose.stderr  # a warning: stderr
    backtest = cli(
        "calibrate", "backtest", str(written), "--database-url", reference, "-q", env=NARROW
    )
    assert backtest.stderr == ""
    assert_reads(backtest, 80, ["median SMAPE"], workdir)
    apply = cli(
        "calibrate",
        "apply",
        str(written),
        "--database-url",
        reference,
        "-q",
        "--approve",
        env=NARROW,
    )
    assert apply.exit_code == 0, apply.stderr
    assert apply.stderr == ""
    assert "applied:" in apply.stdout
    sets = cli("calibrate", "sets", "--database-url", reference, env=NARROW)
    assert_panel_only(sets)
    name = json.loads(written.read_text())["coefficients"]["name"]
    assert_reads(sets, 80, [name, "claude-sonnet-4-5"], workdir)


# seed ------------------------------------------------------------------------------------------


def test_seed_show_reads_at_80(cli: CliRunner, workdir: Path) -> None:
    result = cli("seed", "show", RUN, env=NARROW)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    assert_reads(result, 80, [RUN, *PHASES, "implementation"], workdir)


# runs and phases -------------------------------------------------------------------------------


def test_runs_and_phases_reports_read_at_80(
    cli: CliRunner, drained: CliResult, workdir: Path
) -> None:
    listing = cli("runs", "list", "--db", "seed", env=NARROW)
    assert listing.exit_code == 0, listing.stderr
    assert_panel_only(listing)
    assert_reads(listing, 80, [RUN, "PHASE_EXECUTION"], workdir)
    run = cli("runs", "show", RUN, "--db", "seed", "-q", env=NARROW)
    assert run.exit_code == 0, run.stderr
    assert run.stderr == ""
    assert_reads(run, 80, [RUN, *PHASES, "implementation", "FAILED"], workdir)
    phase = cli("phases", "show", RUN, PHASES[0], "--db", "seed", "-q", env=NARROW)
    assert phase.exit_code == 0, phase.stderr
    assert_reads(phase, 80, [RUN, PHASES[0]], workdir)
