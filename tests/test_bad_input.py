"""Bad input through the command line ends in exit 2 with a reason, never in a crash (70)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import CliRunner

NOT_UTF8 = b"x\xff".decode("utf-8", "surrogateescape")  # how Python hands over such a name


@pytest.mark.parametrize(
    "args",
    [
        ("db", "init", "--database-url", f"sqlite:///{NOT_UTF8}.db"),
        ("db", "identity", "--database-url", f"sqlite:///{NOT_UTF8}.db"),
        ("seed", "show", "--file", f"{NOT_UTF8}.toml"),
        ("telemetry", "import", "--db", "seed", f"{NOT_UTF8}.log"),
    ],
)
def test_names_that_are_not_utf8_are_refused(
    cli: CliRunner, workdir: Path, args: tuple[str, ...]
) -> None:
    assert cli("db", "init", "--db", "seed").exit_code == 0
    (workdir / f"{NOT_UTF8}.log").write_text("x\n")
    result = cli(*args)
    assert result.exit_code == 2, result.stderr
    assert "is not valid UTF-8" in result.stderr
    assert "hint:" in result.stderr
    assert sorted(p.name for p in workdir.iterdir() if p.suffix == ".db") == [
        "autopack_telemetry_seed.db"
    ]


def test_a_database_url_variable_that_is_not_utf8_is_refused(cli: CliRunner) -> None:
    result = cli("db", "identity", env={"DATABASE_URL": f"sqlite:///{NOT_UTF8}.db"})
    assert result.exit_code == 2
    assert "DATABASE_URL is not valid UTF-8" in result.stderr


@pytest.mark.parametrize(
    "command",
    [("telemetry", "export"), ("telemetry", "analyze")],
)
@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:00:00-05:00"])
def test_a_time_outside_the_calendar_in_utc_is_refused(
    cli: CliRunner, command: tuple[str, ...], when: str
) -> None:
    assert cli("db", "init", "--db", "seed").exit_code == 0
    result = cli(*command, "--db", "seed", "--allow-empty-db", "--since", when)
    assert result.exit_code == 2, result.stderr
    assert f"--since {when!r}" in result.stderr
    assert "hint:" in result.stderr


def test_a_deeply_nested_config_file_is_refused(cli: CliRunner, workdir: Path) -> None:
    (workdir / "autopack.toml").write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    result = cli("db", "identity", "--db", "legacy")
    assert result.exit_code == 2, result.stderr
    assert "autopack.toml" in result.stderr
    assert "nested too deeply" in result.stderr
