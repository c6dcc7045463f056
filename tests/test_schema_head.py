"""The schema head constant (used on the fast path) matches the migrations Alembic runs, and
the index migrations go up and down."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory
from sqlmodel import SQLModel

from autopack.db.engine import Database, OpenMode, open_database
from autopack.db.lifecycle import alembic_config
from autopack.db.names import ALL_TABLES, HEAD_REVISION
from autopack.settings import build_target
from tests.conftest import CliRunner

STALE_INDEX = "ix_phases_state_run_updated"
OLD_STALE_INDEX = "ix_phases_state_updated"


def test_head_revision_constant_is_alembics_head() -> None:
    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD_REVISION


def test_every_model_table_is_named() -> None:
    import autopack.db.models  # noqa: F401  (registers the tables)

    assert set(SQLModel.metadata.tables) == set(ALL_TABLES)


def test_the_models_declare_the_stale_index_the_migrations_make() -> None:
    import autopack.db.models  # noqa: F401

    indexes = {str(index.name): index for index in SQLModel.metadata.tables["phases"].indexes}
    assert OLD_STALE_INDEX not in indexes
    assert [c.name for c in indexes[STALE_INDEX].columns] == [
        "state",
        "run_id",
        "updated_at",
        "phase_id",
    ]


def _migrate(url: str, workdir: Path, revision: str, *, down: bool = False) -> None:
    """Run Alembic on the DB at `url` as autopack does (on a connection it hands over)."""
    target = build_target(url, source="test", cwd=workdir)
    with open_database(target, OpenMode.READ_WRITE) as db, db.engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)


def _phase_indexes(url: str, workdir: Path) -> dict[str, list[str]]:
    target = build_target(url, source="test", cwd=workdir)
    with open_database(target, OpenMode.READ_ONLY) as db, db.engine.connect() as connection:
        return {
            str(index["name"]): [str(c) for c in index["column_names"]]
            for index in sa.inspect(connection).get_indexes("phases")
        }


def _revision(url: str, workdir: Path) -> str:
    target = build_target(url, source="test", cwd=workdir)
    with open_database(target, OpenMode.READ_ONLY) as db, db.engine.connect() as connection:
        return str(
            connection.exec_driver_sql("SELECT version_num FROM autopack_alembic_version").scalar()
        )


def _check_0006_up_and_down(cli: CliRunner, url: str, workdir: Path, *args: str) -> None:
    assert cli("db", "init", *args, "--role", "legacy").exit_code == 0
    indexes = _phase_indexes(url, workdir)
    assert indexes[STALE_INDEX] == ["state", "run_id", "updated_at", "phase_id"]
    assert OLD_STALE_INDEX not in indexes

    _migrate(url, workdir, "0005", down=True)
    indexes = _phase_indexes(url, workdir)
    assert indexes[OLD_STALE_INDEX] == ["state", "updated_at"]
    assert STALE_INDEX not in indexes
    assert _revision(url, workdir) == "0005"
    check = cli("db", "check", *args, "--json")
    assert check.exit_code == 1  # behind this autopack's head

    upgraded = cli("db", "upgrade", *args, "--yes", "--json")
    assert upgraded.exit_code == 0, upgraded.stderr
    assert json.loads(upgraded.stdout)["revision"] == HEAD_REVISION
    indexes = _phase_indexes(url, workdir)
    assert indexes[STALE_INDEX] == ["state", "run_id", "updated_at", "phase_id"]
    assert OLD_STALE_INDEX not in indexes
    assert cli("db", "check", *args).exit_code == 0


def test_0006_replaces_the_stale_index_and_downgrades_back(cli: CliRunner, workdir: Path) -> None:
    path = workdir / "autopack_legacy.db"
    _check_0006_up_and_down(cli, f"sqlite:///{path}", workdir, "--db", "legacy")


def test_0006_on_postgres(cli: CliRunner, postgres_url: str, workdir: Path) -> None:
    _check_0006_up_and_down(cli, postgres_url, workdir, "--database-url", postgres_url)


def _stats(path: Path) -> dict[str, str] | None:
    """sqlite_stat1's rows for phases (index → stat), or None where the DB keeps none."""
    connection = sqlite3.connect(path)
    try:
        if not connection.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'"
        ).fetchone():
            return None
        return dict(connection.execute("SELECT idx, stat FROM sqlite_stat1 WHERE tbl = 'phases'"))
    finally:
        connection.close()


def test_0006_analyzes_its_index_only_where_the_db_keeps_statistics(
    cli: CliRunner, seed_db: Database, workdir: Path
) -> None:
    path = workdir / "autopack_telemetry_seed.db"
    url = f"sqlite:///{path}"
    _migrate(url, workdir, "0005", down=True)
    assert _stats(path) is None
    _migrate(url, workdir, "head")
    assert _stats(path) is None  # no statistics made where SQLite had none

    _migrate(url, workdir, "0005", down=True)
    connection = sqlite3.connect(path)
    connection.execute("ANALYZE")
    connection.close()
    before = _stats(path)
    assert before is not None
    assert OLD_STALE_INDEX in before
    assert STALE_INDEX not in before
    _migrate(url, workdir, "head")
    after = _stats(path)
    assert after is not None
    # The new index has its own statistics (10 phases; 1 per state prefix and so on), and
    # the dropped index's row is gone with it.
    assert after[STALE_INDEX].split()[0] == "10"
    assert OLD_STALE_INDEX not in after
    _migrate(url, workdir, "0005", down=True)
    restored = _stats(path)
    assert restored is not None
    assert restored[OLD_STALE_INDEX].split()[0] == "10"
    assert STALE_INDEX not in restored
