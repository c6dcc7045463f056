"""A DB from a newer autopack (issue 11, defect 10): writers refuse, readers warn, and a newer
schema declared compatible with this autopack (additive revisions) keeps it working."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from autopack.db.names import COMPATIBLE_WITH, HEAD_REVISION
from tests.conftest import CliRunner, build_original_db
from tests.fake_llm import FakeLlmServer

NEWER_HINT = "this DB was written by a newer autopack"
PHASE = "telemetry-p1-string-util"


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, cli: CliRunner, workdir: Path) -> str:
    """A seed DB holding one seed run (10 QUEUED phases), on SQLite or PostgreSQL."""
    if request.param == "postgres":
        chosen: str = request.getfixturevalue("postgres_url")
    else:
        chosen = f"sqlite:///{workdir / 'fleet.db'}"
    assert cli("db", "init", "--database-url", chosen, "--role", "seed").exit_code == 0
    seeded = cli("seed", "run", "telemetry-collection-v4", "--database-url", chosen)
    assert seeded.exit_code == 0, seeded.stderr
    (workdir / "ws").mkdir()
    return chosen


def _engine(url: str) -> sa.Engine:
    if url.startswith("postgresql://"):
        url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    return sa.create_engine(url)


def make_newer(url: str, revision: str = "0099", compatible_with: str | None = None) -> None:
    """What a newer autopack's `db upgrade` leaves: its revision, and its compatible_with."""
    engine = _engine(url)
    with engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE autopack_alembic_version SET version_num = :r"), {"r": revision}
        )
        connection.execute(
            sa.text("UPDATE autopack_meta SET schema_revision = :r, compatible_with = :c"),
            {"r": revision, "c": compatible_with},
        )
    engine.dispose()


def snapshot(url: str) -> dict[str, object]:
    engine = _engine(url)
    with engine.connect() as connection:
        facts = {
            "revision": connection.exec_driver_sql(
                "SELECT version_num FROM autopack_alembic_version"
            ).scalar(),
            "meta": tuple(connection.exec_driver_sql("SELECT * FROM autopack_meta").one()),
            "states": sorted(
                tuple(row) for row in connection.exec_driver_sql("SELECT state FROM phases").all()
            ),
            "runs": connection.exec_driver_sql("SELECT count(*) FROM runs").scalar(),
        }
    engine.dispose()
    return facts


def _writers(workdir: Path, url: str) -> dict[str, list[str]]:
    empty = workdir / "nothing.ndjson"
    empty.write_text("")
    where = ["--database-url", url]
    return {
        "seed": ["seed", "run", "telemetry-balanced", *where],
        "import": ["telemetry", "import", str(empty), *where],
        "mark-failed": [
            "triage",
            "stale",
            "--mark-failed",
            "--yes",
            "--max-age-minutes",
            "1",
            *where,
        ],
        "stamp": ["db", "stamp", "--role", "general", *where],
        "upgrade": ["db", "upgrade", "--yes", *where],
        "drain": ["drain", "batch", "--workspace", "ws", "--batch-size", "2", *where],
    }


@pytest.mark.parametrize("compatible_with", [None, "0098"])
def test_every_writer_refuses_a_db_from_a_newer_autopack(
    cli: CliRunner,
    workdir: Path,
    url: str,
    fake_llm: FakeLlmServer,
    compatible_with: str | None,
) -> None:
    make_newer(url, compatible_with=compatible_with)  # no compatible_with, or an unknown one
    before = snapshot(url)
    for name, args in _writers(workdir, url).items():
        result = cli(*args, env=fake_llm.env("anthropic"))
        assert result.exit_code == 2, (name, result.stderr)
        assert f"hint: {NEWER_HINT}" in result.stderr, (name, result.stderr)
        assert "0099" in result.stderr
        assert "Traceback" not in result.stderr
        assert snapshot(url) == before, name
    # The upgrade refused before its backup: nothing named like one was left.
    assert not [p for p in workdir.iterdir() if ".backup-" in p.name]


def test_readers_warn_and_go_on(cli: CliRunner, workdir: Path, url: str) -> None:
    make_newer(url)
    human = cli("db", "identity", "--database-url", url)
    assert human.exit_code == 0
    assert NEWER_HINT in human.stderr  # a warning: stderr
    assert "newer than this autopack" in human.stdout  # the identity panel's schema line
    assert "autopack db upgrade" not in human.stdout + human.stderr  # no longer the advice

    as_json = cli("db", "identity", "--database-url", url, "--json")
    assert as_json.exit_code == 0
    doc = json.loads(as_json.stdout)
    assert doc["target"]["schema_revision"] == "0099"
    assert any(NEWER_HINT in warning for warning in doc["warnings"])

    stale = cli("triage", "stale", "--database-url", url, "--json", "--max-age-minutes", "1")
    assert stale.exit_code in (0, 1), stale.stderr
    assert NEWER_HINT in stale.stderr  # --json hides the panel, not this warning
    assert json.loads(stale.stdout)["count"] == 0

    for report in (["runs", "list"], ["phases", "show", "telemetry-collection-v4", PHASE]):
        shown = cli(*report, "--database-url", url, "--json")
        assert shown.exit_code == 0, shown.stderr
        assert NEWER_HINT in shown.stderr

    check = cli("db", "check", "--database-url", url)
    assert check.exit_code == 1
    assert NEWER_HINT in check.stderr
    assert "run `autopack db upgrade`" not in check.stderr


def test_a_newer_schema_declared_compatible_leaves_this_autopack_working(
    cli: CliRunner, workdir: Path, url: str
) -> None:
    make_newer(url, compatible_with=COMPATIBLE_WITH)
    panel = cli("db", "identity", "--database-url", url)
    assert panel.exit_code == 0
    assert f"declared compatible with {COMPATIBLE_WITH}" in panel.stderr

    seeded = cli("seed", "run", "telemetry-balanced", "--database-url", url)
    assert seeded.exit_code == 0, seeded.stderr
    stamped = cli("db", "stamp", "--role", "general", "--database-url", url)
    assert stamped.exit_code == 0, stamped.stderr

    check = cli("db", "check", "--database-url", url)
    assert check.exit_code == 0, check.stderr  # usable as it is
    assert f"declared compatible with {COMPATIBLE_WITH}" in check.stderr

    upgrade = cli("db", "upgrade", "--yes", "--json", "--database-url", url)
    assert upgrade.exit_code == 0, upgrade.stderr
    assert json.loads(upgrade.stdout) == {
        "target": json.loads(upgrade.stdout)["target"],
        "changed": False,
        "revision": "0099",
    }
    facts = snapshot(url)
    assert facts["revision"] == "0099"  # never taken "back" to this autopack's head
    assert not [p for p in workdir.iterdir() if ".backup-" in p.name]


def test_init_and_upgrade_record_what_the_schema_stays_compatible_with(
    cli: CliRunner, workdir: Path
) -> None:
    assert cli("db", "init", "--db", "seed").exit_code == 0
    path = workdir / "autopack_legacy.db"
    build_original_db(path)
    assert cli("db", "upgrade", "--db", "legacy", "--yes").exit_code == 0
    assert cli("db", "stamp", "--db", "legacy", "--role", "legacy").exit_code == 0
    for name in ("autopack_telemetry_seed.db", "autopack_legacy.db"):
        engine = sa.create_engine(f"sqlite:///{workdir / name}")
        with engine.connect() as connection:
            row = connection.exec_driver_sql(
                "SELECT schema_revision, compatible_with FROM autopack_meta"
            ).one()
        engine.dispose()
        assert tuple(row) == (HEAD_REVISION, COMPATIBLE_WITH), name
