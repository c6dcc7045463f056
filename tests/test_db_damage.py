"""A damaged SQLite file (issue 11, defect 14): `db check` finds it and exits 1, and a writer
that meets the damage stops with one line that names `db check`."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import CliRunner

SEED = "autopack_telemetry_seed.db"


@pytest.fixture
def seeded(cli: CliRunner, workdir: Path) -> Path:
    assert cli("db", "init", "--db", "seed").exit_code == 0
    assert cli("seed", "run", "telemetry-collection-v4", "--db", "seed").exit_code == 0
    return workdir / SEED


def corrupt_page_of(path: Path, name: str) -> None:
    """Overwrite the root page of table or index `name` with junk, as a bad disk would."""
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=DELETE")  # everything in the main file, no WAL
    page_size = connection.execute("PRAGMA page_size").fetchone()[0]
    (root,) = connection.execute(
        "SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)
    ).fetchone()
    connection.close()
    with path.open("r+b") as handle:
        handle.seek((root - 1) * page_size)
        handle.write(b"\xa5" * page_size)


def corrupt_schema_page(path: Path) -> None:
    """Junk over page 1 after the file header: SQLite can no longer read its own schema."""
    corrupt_page_of(path, "runs")  # switches the journal off WAL first
    with path.open("r+b") as handle:
        handle.seek(100)
        handle.write(b"\xa5" * 400)


def test_check_finds_no_damage_in_a_whole_file(cli: CliRunner, seeded: Path) -> None:
    result = cli("db", "check", "--db", "seed")
    assert result.exit_code == 0, result.stderr
    assert "quick_check found no damage" in result.stdout  # the check's report
    doc = json.loads(cli("db", "check", "--db", "seed", "--json", "--full").stdout)
    assert doc["integrity"] == {
        "checked": True,
        "mode": "integrity_check",
        "ok": True,
        "problems": [],
    }
    assert doc["matches"] is True


@pytest.mark.parametrize("full", [False, True])
def test_check_exits_1_and_lists_the_damage_of_an_index(
    cli: CliRunner, seeded: Path, full: bool
) -> None:
    # An index the panel's counts never read: the panel shows, the check finds the damage.
    corrupt_page_of(seeded, "ix_llm_usage_events_model")
    flags = ["--full"] if full else []
    human = cli("db", "check", "--db", "seed", *flags)
    assert human.exit_code == 1, human.stderr
    mode = "integrity_check" if full else "quick_check"
    assert f"damaged: PRAGMA {mode} found" in human.stdout
    assert "Page " in human.stdout or "malformed" in human.stdout  # SQLite's own words
    assert "restore it from a backup" in human.stdout

    doc = json.loads(cli("db", "check", "--db", "seed", "--json", *flags).stdout)
    assert doc["integrity"]["checked"] is True
    assert doc["integrity"]["mode"] == mode
    assert doc["integrity"]["ok"] is False
    assert doc["integrity"]["problems"]
    assert doc["matches"] is False
    assert doc["target"]["path"] == str(seeded)


def test_check_reports_a_file_too_damaged_for_the_panel(cli: CliRunner, seeded: Path) -> None:
    corrupt_schema_page(seeded)  # the panel's reads fail
    result = cli("db", "check", "--db", "seed", "--json")
    assert result.exit_code == 1, result.stderr
    doc = json.loads(result.stdout)
    assert doc["target"] is None
    assert doc["integrity"]["ok"] is False
    assert doc["integrity"]["problems"]


def test_a_writer_meeting_damage_stops_and_names_db_check(cli: CliRunner, seeded: Path) -> None:
    corrupt_page_of(seeded, "runs")
    result = cli("seed", "run", "telemetry-balanced", "--db", "seed")
    assert result.exit_code == 2
    assert "is damaged" in result.stderr
    assert "malformed" in result.stderr
    assert "hint: `autopack db check` lists the damage" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_on_postgres_says_there_is_no_file_check(cli: CliRunner, postgres_url: str) -> None:
    assert cli("db", "init", "--database-url", postgres_url).exit_code == 0
    result = cli("db", "check", "--database-url", postgres_url, "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["integrity"] == {"checked": False, "mode": None, "ok": True, "problems": []}
    human = cli("db", "check", "--database-url", postgres_url)
    assert "PostgreSQL checks its own pages" in human.stdout
