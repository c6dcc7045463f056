"""A DB made by the original Autopack (all 36 tables, with rows): readable as is, upgradable
without losing a row, treated as legacy until stamped, and stamped legacy by `db upgrade`."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from autopack.db.models import AUTOPACK_TABLES
from tests.conftest import CliRunner, build_original_db


def _table_rows(path: Path) -> dict[str, list[tuple[object, ...]]]:
    connection = sqlite3.connect(path)
    try:
        names = [
            r[0]
            for r in connection.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {
            n: sorted(connection.execute(f'SELECT * FROM "{n}"').fetchall(), key=repr)
            for n in names
        }
    finally:
        connection.close()


def test_original_schema_has_36_tables(original_db) -> None:
    _path, counts = original_db
    assert len(counts) == 36
    assert all(n >= 1 for n in counts.values())


def test_identity_reads_the_original_db_as_it_is(cli: CliRunner, original_db) -> None:
    path, _counts = original_db
    before = path.read_bytes()
    result = cli("db", "identity", "--db", "legacy", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["counts"]["runs"] == 2
    assert doc["counts"]["phases"] == 7
    assert doc["counts"]["token_estimation_v2_events"] == 4
    assert doc["counts"]["token_budget_escalation_events"] == 1
    assert doc["counts"]["llm_usage_events"] == 3
    assert "autopack_meta" not in doc["counts"]
    # Only autopack's own additive tables are missing from an original DB.
    assert doc["missing_tables"] == list(AUTOPACK_TABLES)
    assert doc["phase_states"]["QUEUED"] == 2
    assert doc["phase_states"]["FAILED"] == 3
    assert doc["phase_states"]["GATE"] == 1
    assert doc["target"]["role"] == "legacy"
    assert doc["target"]["role_stamped"] is False
    assert doc["target"]["schema_revision"] is None
    assert any("unstamped" in w for w in doc["warnings"])
    assert doc["telemetry"]["clean_samples"] == 2
    assert path.read_bytes() == before


def test_unstamped_panel_warns_but_does_not_refuse(cli: CliRunner, original_db) -> None:
    result = cli("db", "identity", "--db", "legacy")
    assert result.exit_code == 0
    assert "unstamped" in result.stderr
    assert "treated as legacy" in result.stderr


def test_upgrade_keeps_every_row_of_every_table_and_backs_up_first(
    cli: CliRunner, original_db, workdir: Path
) -> None:
    path, counts = original_db
    rows_before = _table_rows(path)
    result = cli("db", "upgrade", "--db", "legacy", "--yes", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["changed"] is True
    assert doc["created_tables"] == list(AUTOPACK_TABLES)
    backup = Path(doc["backup_path"])
    assert backup.parent == workdir
    assert backup.name.startswith("autopack_legacy.db.backup-")
    # The backup is a complete, consistent copy of the DB as it was.
    assert _table_rows(backup) == rows_before
    rows_after = _table_rows(path)
    for table, rows in rows_before.items():
        assert rows_after[table] == rows, table
    added = set(rows_after) - set(rows_before)
    assert added == {"autopack_alembic_version", *doc["created_tables"]}
    assert doc["rows_after"]["phases"] == counts["phases"]
    identity = json.loads(cli("db", "identity", "--db", "legacy", "--json").stdout)
    assert identity["target"]["schema_revision"] == identity["target"]["head_revision"]
    # Its own `alembic_version` table is left alone.
    assert identity["counts"]["runs"] == 2


def test_upgrade_stamps_the_unstamped_original_legacy(cli: CliRunner, original_db) -> None:
    result = cli("db", "upgrade", "--db", "legacy", "--yes")
    assert result.exit_code == 0, result.stderr
    assert (
        "stamp role=legacy (the DB has no role stamp; it was made by the original Autopack)"
        in result.stderr
    )
    identity = json.loads(cli("db", "identity", "--db", "legacy", "--json").stdout)
    assert identity["target"]["role"] == "legacy"
    assert identity["target"]["role_stamped"] is True
    assert identity["target"]["db_id"]
    assert not any("unstamped" in w for w in identity["warnings"])
    # A second stamp is not needed, and still works (it keeps the DB id).
    stamp = json.loads(cli("db", "stamp", "--db", "legacy", "--role", "legacy", "--json").stdout)
    assert stamp["previous_role"] == "legacy"
    assert stamp["db_id"] == identity["target"]["db_id"]


def test_upgrade_json_names_the_legacy_stamp(cli: CliRunner, original_db) -> None:
    result = cli("db", "upgrade", "--db", "legacy", "--yes", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["stamped_role"] == "legacy"


def test_upgrade_keeps_an_existing_stamp(cli: CliRunner, original_db) -> None:
    assert cli("db", "stamp", "--db", "legacy", "--role", "general").exit_code == 0
    result = cli("db", "upgrade", "--db", "legacy", "--yes", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["stamped_role"] is None
    assert "stamp role=" not in result.stderr
    identity = json.loads(cli("db", "identity", "--db", "legacy", "--json").stdout)
    assert identity["target"]["role"] == "general"


def test_an_unstamped_db_at_head_is_only_stamped(cli: CliRunner, original_db) -> None:
    path, _counts = original_db
    assert cli("db", "upgrade", "--db", "legacy", "--yes").exit_code == 0
    connection = sqlite3.connect(path)
    with connection:
        connection.execute("DELETE FROM autopack_meta")  # as an older autopack left it
    connection.close()
    result = cli("db", "upgrade", "--db", "legacy", "--yes", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["changed"] is True
    assert doc["stamped_role"] == "legacy"
    assert doc["created_tables"] == []
    assert doc["target"]["role_stamped"] is True
    again = json.loads(cli("db", "upgrade", "--db", "legacy", "--yes", "--json").stdout)
    assert again["changed"] is False


def test_a_db_made_by_init_is_not_restamped_by_upgrade(cli: CliRunner) -> None:
    assert cli("db", "init", "--db", "seed").exit_code == 0
    doc = json.loads(cli("db", "upgrade", "--db", "seed", "--yes", "--json").stdout)
    assert doc["changed"] is False
    identity = json.loads(cli("db", "identity", "--db", "seed", "--json").stdout)
    assert identity["target"]["role"] == "seed"


def test_stamp_before_upgrade_adds_only_the_stamp(cli: CliRunner, original_db) -> None:
    path, _counts = original_db
    rows_before = _table_rows(path)
    assert cli("db", "stamp", "--db", "legacy", "--role", "legacy").exit_code == 0
    rows_after = _table_rows(path)
    assert set(rows_after) - set(rows_before) == {"autopack_meta"}
    assert all(rows_after[t] == r for t, r in rows_before.items())
    identity = json.loads(cli("db", "identity", "--db", "legacy", "--json").stdout)
    assert identity["target"]["role_stamped"] is True
    # The schema is still not at our head until `db upgrade` runs.
    assert cli("db", "check", "--db", "legacy").exit_code == 1


def test_alembic_made_original_db_gains_telemetry_tables_and_columns(
    cli: CliRunner, workdir: Path
) -> None:
    path = workdir / "autopack_legacy.db"
    build_original_db(path, with_telemetry_tables=False)
    identity = json.loads(cli("db", "identity", "--db", "legacy", "--json").stdout)
    assert identity["telemetry"]["available"] is False
    assert "token_estimation_v2_events" in identity["missing_tables"]
    check = json.loads(cli("db", "check", "--db", "legacy", "--json").stdout)
    assert check["missing_columns"] == {"phases": ["phase_type", "deployment_config"]}

    rows_before = _table_rows(path)
    result = cli("db", "upgrade", "--db", "legacy", "--yes", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert {"token_estimation_v2_events", "token_budget_escalation_events", "autopack_meta"} <= set(
        doc["created_tables"]
    )
    assert doc["added_columns"] == {"phases": ["phase_type", "deployment_config"]}
    after = _table_rows(path)
    assert len(after["phases"]) == len(rows_before["phases"])
    assert cli("db", "check", "--db", "legacy").exit_code == 0
