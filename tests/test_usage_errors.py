"""Usage errors: one `error:` line and one `hint:` line (docs/exit-codes.md), exit 2, with a
did-you-mean for commands, options and --db names; never Click's usage box."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import CliResult, CliRunner


def _refused(result: CliResult) -> tuple[str, str]:
    """The error and hint lines of a usage refusal (and nothing of Click's own box)."""
    assert result.exit_code == 2, result.stderr
    assert "Usage:" not in result.stderr
    assert "Try '" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    assert lines[1].startswith("hint: "), result.stderr
    return lines[0], lines[1]


@pytest.fixture
def seeded(cli: CliRunner) -> CliRunner:
    assert cli("db", "init", "--db", "seed").exit_code == 0
    return cli


def test_a_misspelt_command_gets_a_did_you_mean(seeded: CliRunner) -> None:
    error, hint = _refused(seeded("db", "identitty", "--db", "seed"))
    assert "no command 'identitty'" in error
    assert hint.startswith("hint: did you mean 'identity'?")


def test_a_misspelt_top_level_command_gets_a_did_you_mean(cli: CliRunner) -> None:
    error, hint = _refused(cli("estimat", "--category", "tests"))
    assert "no command 'estimat' in 'autopack'" in error
    assert "did you mean 'estimate'?" in hint


def test_a_command_nothing_resembles_lists_the_commands(cli: CliRunner) -> None:
    error, hint = _refused(cli("db", "zzzzzz"))
    assert "no command 'zzzzzz'" in error
    assert "did you mean" not in hint
    assert "identity" in hint
    assert "upgrade" in hint


def test_a_misspelt_option_gets_a_did_you_mean(seeded: CliRunner) -> None:
    error, hint = _refused(seeded("db", "identity", "--db", "seed", "--jsn"))
    assert "no option '--jsn' for 'autopack db identity'" in error
    assert hint == "hint: did you mean '--json'?"


def test_an_option_nothing_resembles_points_at_help(seeded: CliRunner) -> None:
    _, hint = _refused(seeded("db", "identity", "--db", "seed", "--qqqqqqq"))
    assert "autopack db identity --help" in hint


def test_a_misspelt_db_name_gets_a_did_you_mean(seeded: CliRunner) -> None:
    error, hint = _refused(seeded("db", "identity", "--db", "seeed"))
    assert "unknown database name 'seeed'" in error
    assert hint.startswith("hint: did you mean 'seed'?")
    assert "legacy, seed" in hint


def test_a_db_name_nothing_resembles_lists_the_names(seeded: CliRunner) -> None:
    _, hint = _refused(seeded("db", "identity", "--db", "qqqq"))
    assert "did you mean" not in hint
    assert "legacy, seed" in hint


@pytest.mark.parametrize(
    ("args", "fixed"),
    [
        (("--db", "seed", "db", "identity"), "autopack db identity --db seed"),
        (("db", "--db", "seed", "identity", "--json"), "autopack db identity --json --db seed"),
        (("--json", "--db=seed", "db", "identity"), "autopack db identity --json --db=seed"),
    ],
)
def test_options_before_the_command_are_shown_after_it(
    seeded: CliRunner, args: tuple[str, ...], fixed: str
) -> None:
    error, hint = _refused(seeded(*args))
    assert "given before the command's name" in error
    assert hint == f"hint: options go after the command: {fixed}"


def test_an_option_missing_its_value_names_the_command(seeded: CliRunner) -> None:
    error, hint = _refused(seeded("db", "identity", "--db"))
    assert "'--db' requires an argument" in error
    assert "autopack db identity --help" in hint


def test_a_group_without_a_command_still_shows_its_help(
    cli: CliRunner, capsys: pytest.CaptureFixture[str]
) -> None:
    result = cli("db")
    # Typer's help goes to the process's stdout, not the Environment's.
    assert "identity" in capsys.readouterr().out + result.stdout
    assert "error:" not in result.stderr


def test_a_relative_sqlite_url_meant_absolute_gets_the_four_slashes(
    cli: CliRunner, workdir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = tmp_path_factory.mktemp("abs") / "x.db"
    assert cli("db", "init", "--database-url", f"sqlite:///{elsewhere}").exit_code == 0
    written = elsewhere.as_posix().lstrip("/")
    error, hint = _refused(cli("db", "identity", "--database-url", f"sqlite:///{written}"))
    assert f"no database file at {workdir / written}" in error
    assert f"sqlite:////{written}" in hint
    assert "four" in hint


def test_a_relative_url_under_tmp_gets_the_four_slashes_even_when_missing(
    cli: CliRunner,
) -> None:
    name = f"tmp/autopack-{uuid.uuid4().hex}.db"
    _, hint = _refused(cli("db", "init", "--database-url", f"sqlite:///{name}"))
    assert f"sqlite:////{name}" in hint


def test_a_relative_url_that_looks_relative_gets_no_slash_hint(cli: CliRunner) -> None:
    _, hint = _refused(cli("db", "identity", "--database-url", "sqlite:///data_dir_x/x.db"))
    assert "four" not in hint
    assert "only `autopack db init` creates a database" in hint


def _postgres_base() -> str:
    base = os.environ.get("AUTOPACK_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("AUTOPACK_TEST_POSTGRES_URL is not set (CI sets it)")
    return base


def test_a_missing_postgres_database_is_not_an_unreachable_server(cli: CliRunner) -> None:
    url = sa.engine.make_url(_postgres_base())
    name = f"autopack_missing_{uuid.uuid4().hex[:8]}"
    missing = url.set(database=name).render_as_string(hide_password=False)
    error, hint = _refused(cli("db", "identity", "--database-url", missing))
    where = f"{url.host or 'localhost'}:{url.port or 5432}"
    assert f"database '{name}' does not exist on {where}" in error
    assert "cannot reach" not in error
    assert "createdb" in hint
    assert name in hint


def test_an_unreachable_postgres_port_says_cannot_reach(cli: CliRunner) -> None:
    url = sa.engine.make_url(_postgres_base())
    closed = url.set(host="127.0.0.1", port=1).render_as_string(hide_password=False)
    error, hint = _refused(cli("db", "identity", "--database-url", closed))
    assert "cannot reach PostgreSQL" in error
    assert "server is running" in hint
