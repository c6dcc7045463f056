"""`autopack db init|identity|stamp|upgrade|check` on SQLite: results, JSON contract, no surprises."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from sqlmodel import Session

from autopack.db.engine import OpenMode, open_database
from autopack.db.identity import inspect_database
from autopack.db.models import Phase, Run, Tier, TokenEstimationV2Event
from autopack.settings import resolve_target
from tests.conftest import CliRunner


def _journal_mode(path: Path) -> str:
    connection = sqlite3.connect(path)
    try:
        return str(connection.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        connection.close()


def test_init_seed_creates_stamped_wal_db(cli: CliRunner, workdir: Path) -> None:
    result = cli("db", "init", "--db", "seed", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    path = workdir / "autopack_telemetry_seed.db"
    assert document["target"]["path"] == str(path)
    assert document["role"] == "seed"
    assert document["created_file"] is True
    assert document["revision"] == document["target"]["schema_revision"]
    assert _journal_mode(path) == "wal"


def test_init_roles(cli: CliRunner, workdir: Path) -> None:
    assert json.loads(cli("db", "init", "--db", "legacy", "--json").stdout)["role"] == "legacy"
    general = cli("db", "init", "--database-url", "sqlite:///g.db", "--json")
    assert json.loads(general.stdout)["role"] == "general"
    custom = cli("db", "init", "--database-url", "sqlite:///c.db", "--role", "seed", "--json")
    assert json.loads(custom.stdout)["role"] == "seed"


def test_init_refuses_a_role_that_contradicts_the_builtin_name(
    cli: CliRunner, workdir: Path
) -> None:
    result = cli("db", "init", "--db", "seed", "--role", "legacy")
    assert result.exit_code == 2
    assert "cannot be stamped 'legacy'" in result.stderr
    assert not (workdir / "autopack_telemetry_seed.db").exists()


def test_identity_json_shape_on_a_db_filled_through_the_models(
    cli: CliRunner, workdir: Path
) -> None:
    assert cli("db", "init", "--db", "seed").exit_code == 0
    target = resolve_target("seed", None)
    with open_database(target, OpenMode.READ_WRITE) as db, Session(db.engine) as session:
        session.add(Run(id="r1", state="RUN_CREATED"))
        session.add(Run(id="r2", state="DONE_SUCCESS"))
        tier = Tier(tier_id="T1", run_id="r1", tier_index=0, name="T")
        session.add(tier)
        session.flush()
        assert tier.id is not None
        states = ["QUEUED", "QUEUED", "COMPLETE", "FAILED", "SKIPPED"]
        for index, state in enumerate(states):
            session.add(
                Phase(
                    phase_id=f"p{index}",
                    run_id="r1",
                    tier_id=tier.id,
                    phase_index=index,
                    name=f"p{index}",
                    state=state,
                )
            )
        session.flush()
        samples = [
            ("p0", "implementation", "low", 1, True, False),
            ("p1", "implementation", "medium", 3, True, False),
            ("p2", "tests", "low", 1, True, True),
            ("p3", "docs", "low", 8, False, False),
        ]
        for phase_id, category, complexity, count, success, truncated in samples:
            session.add(
                TokenEstimationV2Event(
                    run_id="r1",
                    phase_id=phase_id,
                    category=category,
                    complexity=complexity,
                    deliverable_count=count,
                    deliverables_json="[]",
                    predicted_output_tokens=100,
                    actual_output_tokens=80,
                    selected_budget=4096,
                    success=success,
                    truncated=truncated,
                    is_truncated_output=truncated,
                    model="m",
                )
            )
        session.commit()

    result = cli("db", "identity", "--db", "seed", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert set(doc) >= {"target", "counts", "phase_states", "run_states", "telemetry"}
    assert set(doc["target"]) >= {
        "url",
        "path",
        "size_bytes",
        "mtime",
        "role",
        "db_id",
        "schema_revision",
    }
    assert doc["target"]["role"] == "seed"
    assert isinstance(doc["target"]["size_bytes"], int)
    assert doc["target"]["size_bytes"] > 0
    assert doc["counts"]["runs"] == 2
    assert doc["counts"]["phases"] == 5
    assert doc["counts"]["token_estimation_v2_events"] == 4
    assert doc["phase_states"] == {
        "QUEUED": 2,
        "EXECUTING": 0,
        "GATE": 0,
        "CI_RUNNING": 0,
        "COMPLETE": 1,
        "FAILED": 1,
        "SKIPPED": 1,
    }
    assert doc["run_states"]["RUN_CREATED"] == 1
    assert doc["run_states"]["DONE_SUCCESS"] == 1
    telemetry = doc["telemetry"]
    assert telemetry["events"] == 4
    assert telemetry["success"] == 3
    assert telemetry["truncated"] == 1
    assert telemetry["success_rate"] == 0.75
    assert telemetry["truncation_rate"] == 0.25
    # The breakdowns count clean samples only: success and not truncated.
    assert telemetry["clean_samples"] == 2
    assert telemetry["by_category"] == {"implementation": 2}
    assert telemetry["by_complexity"] == {"low": 1, "medium": 1}
    assert telemetry["by_deliverable_bucket"] == {"1": 1, "2-5": 1}


def test_identity_is_read_only_and_leaves_the_file_unchanged(cli: CliRunner, workdir: Path) -> None:
    assert cli("db", "init", "--db", "seed").exit_code == 0
    path = workdir / "autopack_telemetry_seed.db"
    # Checkpoint and leave a rollback-journal DB, so any journal-mode switch would show.
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=DELETE")
    connection.close()
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    for command in (["db", "identity"], ["db", "check"]):
        assert cli(*command, "--db", "seed").exit_code == 0
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    assert _journal_mode(path) == "delete"


def test_identity_of_a_sqlite_file_loads_neither_sqlalchemy_nor_pydantic_settings(
    cli: CliRunner, workdir: Path
) -> None:
    # Their imports cost more than the report's queries on a million phases; pydantic-settings
    # is needed only when the environment sets one of its variables (docs/performance.md).
    assert cli("db", "init", "--db", "seed").exit_code == 0
    probe = (
        "import sys\n"
        "from autopack.cli.app import main\n"
        "code = main(['db', 'identity', '--db', 'seed', '--json'])\n"
        "print(code, 'sqlalchemy' in sys.modules, 'pydantic_settings' in sys.modules)\n"
    )
    environment = {
        key: value
        for key, value in os.environ.items()
        if key.upper() not in ("DATABASE_URL", "TELEMETRY_DB_ENABLED")
    }
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=workdir,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.stdout.splitlines()[-1] == "0 False False", done.stderr


def test_identity_panel_shows_path_size_role_counts(cli: CliRunner, workdir: Path) -> None:
    assert cli("db", "init", "--db", "legacy").exit_code == 0
    result = cli("db", "identity", "--db", "legacy")
    assert result.exit_code == 0
    # The identity panel is this command's report: stdout, nothing on stderr.
    assert str(workdir / "autopack_legacy.db") in result.stdout
    assert "role" in result.stdout
    assert "legacy" in result.stdout
    assert "QUEUED" in result.stdout
    assert "SKIPPED" in result.stdout
    assert "runs 0" in result.stdout
    assert result.stderr == ""


def test_quiet_hides_the_panel(cli: CliRunner, workdir: Path) -> None:
    assert cli("db", "init", "--db", "seed").exit_code == 0
    result = cli("db", "check", "--db", "seed", "--quiet")
    assert result.exit_code == 0
    assert "target database" not in result.stderr


def test_database_url_from_environment(cli: CliRunner, workdir: Path) -> None:
    assert cli("db", "init", "--db", "legacy").exit_code == 0
    result = cli("db", "identity", "--json", env={"DATABASE_URL": "sqlite:///autopack_legacy.db"})
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["target"]["path"] == str(workdir / "autopack_legacy.db")


def test_relative_path_resolves_against_the_current_directory_once(
    cli: CliRunner, workdir: Path
) -> None:
    (workdir / "sub").mkdir()
    result = cli("db", "init", "--database-url", "sqlite:///sub/../sub/x.db", "--json")
    assert json.loads(result.stdout)["target"]["path"] == str(workdir / "sub" / "x.db")


def test_named_targets_from_autopack_toml(cli: CliRunner, workdir: Path) -> None:
    (workdir / "dbs").mkdir()
    (workdir / "autopack.toml").write_text(
        '[databases]\nlegacy = "sqlite:///dbs/old.db"\nscratch = "sqlite:///dbs/scratch.db"\n'
    )
    assert cli("db", "init", "--db", "scratch").exit_code == 0
    assert (workdir / "dbs" / "scratch.db").exists()
    legacy = cli("db", "init", "--db", "legacy", "--json")
    assert json.loads(legacy.stdout)["target"]["path"] == str(workdir / "dbs" / "old.db")
    assert json.loads(legacy.stdout)["role"] == "legacy"


def test_named_targets_from_pyproject(cli: CliRunner, workdir: Path) -> None:
    (workdir / "pyproject.toml").write_text(
        '[tool.autopack.databases]\nwork = "sqlite:///work.db"\n'
    )
    assert cli("db", "init", "--db", "work").exit_code == 0
    assert (workdir / "work.db").exists()


def test_broken_config_file_is_a_clear_error(cli: CliRunner, workdir: Path) -> None:
    (workdir / "autopack.toml").write_text("[databases\nlegacy = ")
    result = cli("db", "identity", "--db", "legacy")
    assert result.exit_code == 2
    assert "cannot read" in result.stderr
    assert "autopack.toml" in result.stderr


def test_in_memory_target_is_shown_as_in_memory(cli: CliRunner, workdir: Path) -> None:
    result = cli("db", "init", "--database-url", "sqlite:///:memory:", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["target"] is None
    assert _no_memory_file(workdir)


def _no_memory_file(workdir: Path) -> bool:
    return not any(":memory:" in p.name for p in workdir.iterdir())


def test_check_exit_codes(cli: CliRunner, original_db) -> None:
    assert cli("db", "check", "--db", "legacy").exit_code == 1
    assert cli("db", "upgrade", "--db", "legacy", "--yes").exit_code == 0
    result = cli("db", "check", "--db", "legacy", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["matches"] is True


def test_stamp_changes_role_keeps_db_id(cli: CliRunner, workdir: Path) -> None:
    first = json.loads(cli("db", "init", "--database-url", "sqlite:///s.db", "--json").stdout)
    result = cli("db", "stamp", "--database-url", "sqlite:///s.db", "--role", "legacy", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["previous_role"] == "general"
    assert doc["role"] == "legacy"
    assert doc["db_id"] == first["db_id"]


def test_stamp_rejects_a_malformed_role(cli: CliRunner, workdir: Path) -> None:
    assert cli("db", "init", "--database-url", "sqlite:///s.db").exit_code == 0
    result = cli("db", "stamp", "--database-url", "sqlite:///s.db", "--role", "Robert'); DROP")
    assert result.exit_code == 2
    assert "invalid role" in result.stderr


def test_upgrade_without_yes_and_without_terminal_is_refused(cli: CliRunner, original_db) -> None:
    path, _counts = original_db
    before = path.read_bytes()
    result = cli("db", "upgrade", "--db", "legacy")
    assert result.exit_code == 2
    assert "--yes" in result.stderr
    assert path.read_bytes() == before


def test_upgrade_on_current_db_does_nothing(cli: CliRunner, workdir: Path) -> None:
    assert cli("db", "init", "--db", "seed").exit_code == 0
    result = cli("db", "upgrade", "--db", "seed", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["changed"] is False
    assert not any("backup" in p.name for p in workdir.iterdir())


def test_python_dash_m_and_installed_entry_point(workdir: Path) -> None:
    """The real console script and `python -m autopack`, in subprocesses."""
    script = Path(sys.executable).with_name("autopack")
    init = subprocess.run(
        [str(script), "db", "init", "--db", "seed", "--json"],
        capture_output=True,
        text=True,
        cwd=workdir,
        timeout=60,
        check=False,
    )
    assert init.returncode == 0, init.stderr
    assert json.loads(init.stdout)["role"] == "seed"
    identity = subprocess.run(
        [sys.executable, "-m", "autopack", "db", "identity", "--db", "seed", "--json"],
        capture_output=True,
        text=True,
        cwd=workdir,
        timeout=60,
        check=False,
    )
    assert identity.returncode == 0, identity.stderr
    assert json.loads(identity.stdout)["counts"]["runs"] == 0
    missing = subprocess.run(
        [str(script), "db", "identity"],
        capture_output=True,
        text=True,
        cwd=workdir,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1"},
    )
    assert missing.returncode == 2
    assert "no database given" in missing.stderr


def test_inspect_database_api_without_a_terminal(cli: CliRunner, workdir: Path) -> None:
    """The core API returns a typed report; the CLI is only a skin over it."""
    assert cli("db", "init", "--db", "seed").exit_code == 0
    with open_database(resolve_target("seed", None), OpenMode.READ_ONLY) as db:
        report = inspect_database(db)
    assert report.target.role == "seed"
    assert report.is_empty
    assert report.missing_tables == []
