"""One text cell that is not UTF-8 (issue 11, defect 14) no longer blocks the reports: the cell
is read with U+FFFD for its bad bytes, and a warning names where it is."""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from autopack.db.engine import Database
from tests.conftest import CliRunner
from tests.telemetry_io_helpers import add_bare_row, add_drained_rows

BAD_CATEGORY = b"impl\xffementation"
SHOWN = "impl\ufffdementation"


@pytest.fixture
def damaged_text(seed_db: Database, workdir: Path) -> int:
    """The seed DB with telemetry, one event's category holding a byte that is not UTF-8."""
    add_drained_rows(seed_db)
    event_id = add_bare_row(seed_db, category="implementation")
    seed_db.close()
    connection = sqlite3.connect(workdir / "autopack_telemetry_seed.db")
    with connection:
        connection.execute(
            "UPDATE token_estimation_v2_events SET category = CAST(? AS TEXT) WHERE rowid = ?",
            (BAD_CATEGORY, event_id),
        )
    connection.close()
    return event_id


def _warned(caplog: pytest.LogCaptureFixture, event_id: int) -> bool:
    where = f"token_estimation_v2_events.category (rowid {event_id})"
    return any(where in record.getMessage() for record in caplog.records)


def test_identity_reads_on_and_names_the_cell(
    cli: CliRunner, damaged_text: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="autopack.db")
    result = cli("db", "identity", "--db", "seed", "--json")
    assert result.exit_code == 0, result.stderr
    assert SHOWN in json.loads(result.stdout)["telemetry"]["by_category"]
    assert _warned(caplog, damaged_text)
    assert "restore" not in result.stderr


def test_analyze_reads_on_and_names_the_cell(
    cli: CliRunner, damaged_text: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="autopack.db")
    result = cli("telemetry", "analyze", "--db", "seed", "--json", "--stratify")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["rows"] == 4  # the row with the bad byte is counted
    assert _warned(caplog, damaged_text)


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
def test_export_reads_on_and_names_the_cell(
    cli: CliRunner, damaged_text: int, caplog: pytest.LogCaptureFixture, fmt: str
) -> None:
    caplog.set_level(logging.WARNING, logger="autopack.db")
    result = cli("telemetry", "export", "--db", "seed", "--format", fmt)
    assert result.exit_code == 0, result.stderr
    assert SHOWN in result.stdout
    assert _warned(caplog, damaged_text)


def test_the_warning_reaches_stderr_of_the_real_command(damaged_text: int, workdir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "autopack", "db", "identity", "--db", "seed", "--json"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "warning: text that is not UTF-8 in token_estimation_v2_events.category" in done.stderr
    assert f"(rowid {damaged_text})" in done.stderr
    assert SHOWN in json.loads(done.stdout)["telemetry"]["by_category"]
