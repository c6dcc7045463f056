"""The same identity/init/upgrade behaviour on PostgreSQL (AUTOPACK_TEST_POSTGRES_URL; CI sets it)."""

from __future__ import annotations

import json

import sqlalchemy as sa
from sqlmodel import Session

from autopack.db.engine import OpenMode, open_database
from autopack.db.models import Phase, Run, Tier
from autopack.settings import build_target, mask_url
from tests.conftest import CliRunner


def test_plain_postgresql_url_uses_psycopg(postgres_url: str, workdir) -> None:
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    target = build_target(plain, source="--database-url", cwd=workdir)
    assert target.url.startswith("postgresql+psycopg://")
    with open_database(target, OpenMode.READ_ONLY) as db:
        assert db.engine.dialect.driver == "psycopg"


def test_init_identity_stamp_check_on_postgres(cli: CliRunner, postgres_url: str, workdir) -> None:
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    init = cli("db", "init", "--database-url", plain, "--role", "seed", "--json")
    assert init.exit_code == 0, init.stderr
    assert json.loads(init.stdout)["role"] == "seed"

    target = build_target(plain, source="test", cwd=workdir)
    with open_database(target, OpenMode.READ_WRITE) as db, Session(db.engine) as session:
        session.add(Run(id="pg-run", state="PHASE_EXECUTION"))
        tier = Tier(tier_id="T1", run_id="pg-run", tier_index=0, name="T")
        session.add(tier)
        session.flush()
        assert tier.id is not None
        for index, state in enumerate(["QUEUED", "FAILED", "FAILED"]):
            session.add(
                Phase(
                    phase_id=f"p{index}",
                    run_id="pg-run",
                    tier_id=tier.id,
                    phase_index=index,
                    name="p",
                    state=state,
                )
            )
        session.commit()

    identity = cli("db", "identity", "--database-url", plain, "--json")
    assert identity.exit_code == 0, identity.stderr
    doc = json.loads(identity.stdout)
    assert doc["target"]["backend"] == "postgresql"
    assert doc["target"]["role"] == "seed"
    assert isinstance(doc["target"]["size_bytes"], int)
    assert doc["counts"]["runs"] == 1
    assert doc["counts"]["phases"] == 3
    assert doc["phase_states"]["FAILED"] == 2
    assert doc["run_states"]["PHASE_EXECUTION"] == 1

    assert cli("db", "check", "--database-url", plain).exit_code == 0
    stamp = cli("db", "stamp", "--database-url", plain, "--role", "legacy", "--json")
    assert json.loads(stamp.stdout)["role"] == "legacy"
    again = cli("db", "init", "--database-url", plain)
    assert again.exit_code == 2
    assert "already holds a database" in again.stderr


def test_identity_is_read_only_on_postgres(cli: CliRunner, postgres_url: str, workdir) -> None:
    assert cli("db", "init", "--database-url", postgres_url).exit_code == 0
    target = build_target(postgres_url, source="test", cwd=workdir)
    with open_database(target, OpenMode.READ_ONLY) as db, db.engine.connect() as connection:
        read_only = connection.execute(sa.text("SHOW transaction_read_only")).scalar()
    assert read_only == "on"


def test_upgrade_adopts_an_original_style_postgres_db(
    cli: CliRunner, postgres_url: str, workdir
) -> None:
    """Original tables made without autopack (no stamp, no version table) keep every row."""
    target = build_target(postgres_url, source="test", cwd=workdir)
    with open_database(target, OpenMode.READ_WRITE) as db, db.engine.begin() as connection:
        connection.exec_driver_sql(
            "CREATE TABLE runs (id VARCHAR PRIMARY KEY, state VARCHAR(33) NOT NULL, "
            "created_at TIMESTAMP NOT NULL, updated_at TIMESTAMP NOT NULL, "
            "safety_profile VARCHAR NOT NULL, run_scope VARCHAR NOT NULL, token_cap INTEGER NOT NULL,"
            " max_phases INTEGER NOT NULL, max_duration_minutes INTEGER NOT NULL, "
            "max_minor_issues_total INTEGER, tokens_used INTEGER NOT NULL, "
            "ci_runs_used INTEGER NOT NULL, minor_issues_count INTEGER NOT NULL, "
            "major_issues_count INTEGER NOT NULL, promotion_eligible_to_main VARCHAR NOT NULL, "
            "debt_status VARCHAR, failure_reason TEXT)"
        )
        connection.exec_driver_sql(
            "INSERT INTO runs VALUES ('old', 'DONE_SUCCESS', now(), now(), 'normal', 'multi_tier',"
            " 1, 1, 1, NULL, 0, 0, 0, 0, 'false', NULL, NULL)"
        )
        connection.exec_driver_sql("CREATE TABLE alembic_version (version_num VARCHAR(32))")
        connection.exec_driver_sql("INSERT INTO alembic_version VALUES ('001_initial_schema')")
    identity = json.loads(cli("db", "identity", "--database-url", postgres_url, "--json").stdout)
    assert identity["target"]["role_stamped"] is False
    assert cli("db", "check", "--database-url", postgres_url).exit_code == 1

    result = cli("db", "upgrade", "--database-url", postgres_url, "--yes", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["backup_path"] is None
    assert doc["added_columns"] == {"runs": ["started_at", "completed_at", "goal_anchor"]}
    assert doc["rows_after"]["runs"] == 1
    assert doc["rows_after"]["alembic_version"] == 1
    assert cli("db", "check", "--database-url", postgres_url).exit_code == 0


def test_password_is_masked_in_every_output(cli: CliRunner, postgres_url: str) -> None:
    secret_url = postgres_url.replace("postgres@", "postgres:hunter2-secret@")
    assert mask_url(secret_url).count("***") == 1
    result = cli("db", "identity", "--database-url", secret_url, "--json")
    # trust auth ignores the password, so the command succeeds and must not show it.
    assert "hunter2-secret" not in result.stdout + result.stderr
