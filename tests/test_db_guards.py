"""The guard matrix: every bad target gets exit 2, one clear line, a hint, and no new file."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import CliRunner

READ_COMMANDS = [["db", "identity"], ["db", "check"]]
WRITE_COMMANDS = [["db", "stamp", "--role", "legacy"], ["db", "upgrade", "--yes"]]
ALL_COMMANDS = READ_COMMANDS + WRITE_COMMANDS


def _files(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_refused(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    error_lines = [line for line in lines if line.startswith("error:")]
    assert len(error_lines) == 1, result.stderr
    assert any(line.startswith("hint:") for line in lines), result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("command", [*ALL_COMMANDS, ["db", "init"]])
def test_no_target_is_refused_and_creates_nothing(cli: CliRunner, workdir: Path, command) -> None:
    result = cli(*command)
    _assert_refused(result, "no database given", "--db")
    assert _files(workdir) == set()


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_typo_path_is_refused_and_no_file_appears(cli: CliRunner, workdir: Path, command) -> None:
    result = cli(*command, "--database-url", "sqlite:///autopak_legacy.db")
    _assert_refused(result, "no database file at", str(workdir / "autopak_legacy.db"))
    assert _files(workdir) == set()


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_builtin_name_without_its_file_is_refused(cli: CliRunner, workdir: Path, command) -> None:
    result = cli(*command, "--db", "legacy")
    _assert_refused(result, "no database file at", "autopack_legacy.db", "db init")
    assert _files(workdir) == set()


@pytest.mark.parametrize("command", [*ALL_COMMANDS, ["db", "init"]])
def test_directory_is_refused(cli: CliRunner, workdir: Path, command) -> None:
    (workdir / "data").mkdir()
    result = cli(*command, "--database-url", "sqlite:///data")
    _assert_refused(result, "is a directory")
    assert _files(workdir / "data") == set()


@pytest.mark.parametrize("command", [*ALL_COMMANDS, ["db", "init"]])
def test_file_that_is_not_sqlite_is_refused_untouched(
    cli: CliRunner, workdir: Path, command
) -> None:
    path = workdir / "notes.db"
    path.write_text("these are my notes, not a database\n" * 10)
    before = _digest(path)
    result = cli(*command, "--database-url", "sqlite:///notes.db")
    _assert_refused(result, "is not a SQLite database")
    assert _digest(path) == before
    assert _files(workdir) == {"notes.db"}


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_corrupt_sqlite_is_refused_untouched(cli: CliRunner, workdir: Path, command) -> None:
    path = workdir / "broken.db"
    path.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    before = _digest(path)
    result = cli(*command, "--database-url", "sqlite:///broken.db")
    if command == ["db", "check"]:
        # Finding damage is db check's job: it lists it and exits 1 (issue 11, defect 14).
        assert result.exit_code == 1, result.stderr
        assert "damaged: PRAGMA quick_check found" in result.stdout
        assert "Traceback" not in result.stderr
    else:
        _assert_refused(result, str(path))
        assert "damaged" in result.stderr or "database error" in result.stderr
    assert _digest(path) == before
    assert _files(workdir) == {"broken.db"}


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_sqlite_without_autopack_schema_is_refused(cli: CliRunner, workdir: Path, command) -> None:
    path = workdir / "other.db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    connection.commit()
    connection.close()
    before = _digest(path)
    result = cli(*command, "--database-url", "sqlite:///other.db")
    _assert_refused(result, "has no Autopack tables")
    assert _digest(path) == before


def test_init_refuses_a_db_that_already_holds_tables(cli: CliRunner, workdir: Path) -> None:
    assert cli("db", "init", "--db", "seed").exit_code == 0
    path = workdir / "autopack_telemetry_seed.db"
    before = _digest(path)
    result = cli("db", "init", "--db", "seed")
    _assert_refused(result, "already holds a database", "never overwrites")
    assert _digest(path) == before


def test_init_refuses_a_missing_directory_and_makes_none(cli: CliRunner, workdir: Path) -> None:
    result = cli("db", "init", "--database-url", "sqlite:///nested/dir/new.db")
    _assert_refused(result, "does not exist", "mkdir")
    assert _files(workdir) == set()


def test_conflicting_db_and_environment_are_refused_naming_both(
    cli: CliRunner, workdir: Path
) -> None:
    assert cli("db", "init", "--db", "seed").exit_code == 0
    result = cli(
        "db", "identity", "--db", "seed", env={"DATABASE_URL": "sqlite:///autopack_legacy.db"}
    )
    _assert_refused(
        result, "--db seed", "DATABASE_URL", "autopack_telemetry_seed.db", "autopack_legacy.db"
    )
    assert "autopack_legacy.db" not in _files(workdir)


def test_conflicting_url_and_name_are_refused(cli: CliRunner, workdir: Path) -> None:
    result = cli("db", "identity", "--db", "legacy", "--database-url", "sqlite:///x.db")
    _assert_refused(result, "--database-url", "--db legacy")
    assert _files(workdir) == set()


def test_same_database_from_two_sources_is_fine(cli: CliRunner, workdir: Path) -> None:
    assert cli("db", "init", "--db", "seed").exit_code == 0
    absolute = workdir / "autopack_telemetry_seed.db"
    result = cli(
        "db", "identity", "--db", "seed", "--json", env={"DATABASE_URL": f"sqlite:///{absolute}"}
    )
    assert result.exit_code == 0, result.stderr


def test_unknown_name_is_refused_listing_known_names(cli: CliRunner, workdir: Path) -> None:
    result = cli("db", "identity", "--db", "seeed")
    _assert_refused(result, "unknown database name 'seeed'", "legacy", "seed")


def test_text_that_is_not_a_url_is_refused(cli: CliRunner, workdir: Path) -> None:
    result = cli("db", "identity", "--database-url", "autopack_legacy.db")
    _assert_refused(result, "is not a database URL", "sqlite:///")


def test_unreachable_postgres_is_refused(cli: CliRunner, workdir: Path) -> None:
    result = cli(
        "db", "identity", "--database-url", "postgresql://autopack:s3cret-pw@127.0.0.1:1/none"
    )
    _assert_refused(result, "cannot reach PostgreSQL", "127.0.0.1:1")
    assert "s3cret-pw" not in result.stderr


@pytest.mark.parametrize("command", WRITE_COMMANDS)
def test_read_only_file_is_refused_for_writing_commands(
    cli: CliRunner, workdir: Path, command
) -> None:
    assert cli("db", "init", "--database-url", "sqlite:///ro.db").exit_code == 0
    path = workdir / "ro.db"
    path.chmod(0o444)
    before = _digest(path)
    try:
        result = cli(*command, "--database-url", "sqlite:///ro.db")
    finally:
        path.chmod(0o644)
    _assert_refused(result, "read-only", "chmod")
    assert _digest(path) == before
    assert not any(name.startswith("ro.db.backup") for name in _files(workdir))


def test_read_only_file_can_still_be_inspected(cli: CliRunner, workdir: Path) -> None:
    assert cli("db", "init", "--database-url", "sqlite:///ro.db").exit_code == 0
    path = workdir / "ro.db"
    path.chmod(0o444)
    try:
        result = cli("db", "identity", "--database-url", "sqlite:///ro.db", "--json")
    finally:
        path.chmod(0o644)
    assert result.exit_code == 0, result.stderr


def test_unknown_option_is_a_usage_error(cli: CliRunner, workdir: Path) -> None:
    result = cli("db", "identity", "--db", "seed", "--bogus")
    assert result.exit_code == 2
    assert "--bogus" in result.stderr
    assert "Traceback" not in result.stderr
