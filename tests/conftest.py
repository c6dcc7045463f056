"""Shared fixtures for the autopack test suite."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from autopack.cli.app import main
from autopack.db.engine import Database, OpenMode, open_database
from autopack.environment import Environment
from autopack.seed.model import SeedPhase, SeedRunSpec, create_seed_run
from autopack.settings import resolve_target

pytest_plugins = ["tests.fake_llm", "tests.drain_fixtures"]

# Reference facts (seed-run specs, golden cases, sample log and CSV, the original's schema),
# copied into the repository so the suite runs from any clone.
REFERENCE_DATA = Path(__file__).resolve().parent / "data"
ORIGINAL_SCHEMA = REFERENCE_DATA / "original_schema.sql"

# Variables that would point autopack somewhere the test did not choose.
_AMBIENT = ("DATABASE_URL", "TELEMETRY_DB_ENABLED")


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


CliRunner = Callable[..., CliResult]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current directory with no ambient database settings."""
    for name in _AMBIENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_cli_in(
    workdir: Path,
    *args: str,
    env: dict[str, str] | None = None,
    stdin: str = "",
    tty: bool = False,
) -> CliResult:
    """Run `autopack ARGS…` in-process with `workdir` as its cwd, in a fake terminal."""
    environ = {k: v for k, v in os.environ.items() if k not in _AMBIENT}
    environ.update({"NO_COLOR": "1", "COLUMNS": "200"}, **(env or {}))
    fake = Environment(
        stdin=io.StringIO(stdin),
        stdout=io.StringIO(),
        stderr=io.StringIO(),
        stdin_isatty=tty,
        stdout_isatty=False,
        stderr_isatty=False,
        environ=environ,
        cwd=workdir,
    )
    code = main(list(args), fake)
    assert isinstance(fake.stdout, io.StringIO)
    assert isinstance(fake.stderr, io.StringIO)
    return CliResult(code, fake.stdout.getvalue(), fake.stderr.getvalue())


@pytest.fixture
def cli(workdir: Path) -> CliRunner:
    """Run `autopack ARGS…` in-process in `workdir`, in a fake terminal environment.

    `env` adds variables (they reach autopack only through the Environment, never os.environ);
    `stdin` is what the operator types; `tty` says whether stdin and stderr are a terminal.
    Returns the exit code, stdout and stderr.
    """

    def run(
        *args: str, env: dict[str, str] | None = None, stdin: str = "", tty: bool = False
    ) -> CliResult:
        return run_cli_in(workdir, *args, env=env, stdin=stdin, tty=tty)

    return run


def _filler(column_type: str, column: str) -> object:
    kind = column_type.upper()
    if "INT" in kind:
        return 1
    if "BOOL" in kind:
        return 0
    if "FLOAT" in kind or "REAL" in kind or "NUMERIC" in kind:
        return 1.5
    if "DATETIME" in kind or "TIMESTAMP" in kind:
        return "2025-12-28 10:00:00.000000"
    if "DATE" in kind:
        return "2025-12-28"
    if "JSON" in kind:
        return "{}"
    return f"{column}-value"


def fill_every_other_table(connection: sqlite3.Connection, skip: set[str]) -> dict[str, int]:
    """Put one row in every table not in `skip`, with type-appropriate values."""
    counts: dict[str, int] = {}
    tables = [r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    for table in tables:
        if table in skip or table.startswith("sqlite_"):
            continue
        columns = connection.execute(f'PRAGMA table_info("{table}")').fetchall()
        names = [c[1] for c in columns]
        values = [_filler(c[2], c[1]) for c in columns]
        placeholders = ", ".join("?" for _ in names)
        quoted = ", ".join(f'"{n}"' for n in names)
        connection.execute(f'INSERT INTO "{table}" ({quoted}) VALUES ({placeholders})', values)
        counts[table] = 1
    return counts


ORIGINAL_PHASE_STATES = ["QUEUED", "QUEUED", "FAILED", "FAILED", "FAILED", "COMPLETE", "GATE"]


def build_original_db(path: Path, *, with_telemetry_tables: bool = True) -> dict[str, int]:
    """A DB made with the original Autopack's own schema (all 36 tables), with rows in each.

    Returns the row count of every table. With `with_telemetry_tables=False` it mimics the
    original's Alembic-made DB: no telemetry tables and phases without two ORM columns.
    """
    connection = sqlite3.connect(path)
    connection.executescript(ORIGINAL_SCHEMA.read_text())
    runs = [("legacy-run-a", "DONE_FAILED_BUDGET_EXHAUSTED"), ("legacy-run-b", "RUN_CREATED")]
    for run_id, state in runs:
        connection.execute(
            "INSERT INTO runs (id, state, created_at, updated_at, safety_profile, run_scope, "
            "token_cap, max_phases, max_duration_minutes, tokens_used, ci_runs_used, "
            "minor_issues_count, major_issues_count, promotion_eligible_to_main) "
            "VALUES (?, ?, '2025-12-20 09:00:00', '2025-12-20 09:00:00', 'normal', 'multi_tier', "
            "5000000, 25, 120, 0, 0, 0, 0, 'false')",
            (run_id, state),
        )
        connection.execute(
            "INSERT INTO tiers (tier_id, run_id, tier_index, name, state, max_major_issues_tolerated,"
            " tokens_used, ci_runs_used, minor_issues_count, major_issues_count, cleanliness, "
            "created_at, updated_at) VALUES ('T1', ?, 0, 'Tier', 'PENDING', 0, 0, 0, 0, 0, 'clean', "
            "'2025-12-20 09:00:00', '2025-12-20 09:00:00')",
            (run_id,),
        )
    tier_ids = [r[0] for r in connection.execute("SELECT id FROM tiers ORDER BY id")]
    for index, state in enumerate(ORIGINAL_PHASE_STATES):
        run_index = index % 2
        connection.execute(
            "INSERT INTO phases (phase_id, run_id, tier_id, phase_index, name, state, task_category,"
            " complexity, scope, builder_attempts, auditor_attempts, tokens_used, minor_issues_count,"
            " major_issues_count, issue_state, quality_blocked, retry_attempt, revision_epoch, "
            "escalation_level, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'implementation', "
            "'low', '{\"paths\": [\"src/\"]}', 0, 0, 0, 0, 0, 'no_issues', 0, 0, 0, 0, "
            "'2025-12-20 09:00:00', '2025-12-20 09:00:00')",
            (
                f"phase-{index}",
                runs[run_index][0],
                tier_ids[run_index],
                index,
                f"Phase {index}",
                state,
            ),
        )
    events = [
        ("phase-0", "implementation", "low", 1, True, False),
        ("phase-2", "implementation", "low", 1, True, False),
        ("phase-4", "tests", "medium", 2, True, True),
        ("phase-6", "docs", "low", 7, False, False),
    ]
    for phase_id, category, complexity, deliverables, success, truncated in events:
        connection.execute(
            "INSERT INTO token_estimation_v2_events (run_id, phase_id, timestamp, category, "
            "complexity, deliverable_count, deliverables_json, predicted_output_tokens, "
            "actual_output_tokens, selected_budget, success, truncated, model, is_truncated_output,"
            " created_at) VALUES ('legacy-run-a', ?, '2025-12-21 10:00:00', ?, ?, ?, '[]', 5000, "
            "2000, 8192, ?, ?, 'claude-sonnet-4-5', ?, '2025-12-21 10:00:00')",
            (phase_id, category, complexity, deliverables, success, truncated, truncated),
        )
    connection.execute(
        "INSERT INTO token_budget_escalation_events (run_id, phase_id, timestamp, attempt_index, "
        "reason, was_truncated, escalation_factor, base_value, base_source, retry_max_tokens) "
        "VALUES ('legacy-run-a', 'phase-4', '2025-12-21 10:00:00', 1, 'truncation', 1, 1.25, "
        "8192, 'selected_budget', 10240)"
    )
    for _ in range(3):
        connection.execute(
            "INSERT INTO llm_usage_events (provider, model, run_id, phase_id, role, total_tokens, "
            "created_at, is_doctor_call) VALUES ('anthropic', 'claude-sonnet-4-5', 'legacy-run-a', "
            "'phase-0', 'builder', 1200, '2025-12-21 10:00:00', 0)"
        )
    own = {
        "runs",
        "tiers",
        "phases",
        "token_estimation_v2_events",
        "token_budget_escalation_events",
        "llm_usage_events",
    }
    fill_every_other_table(connection, own)
    if not with_telemetry_tables:
        connection.execute("DROP TABLE token_estimation_v2_events")
        connection.execute("DROP TABLE token_budget_escalation_events")
        connection.execute("ALTER TABLE phases DROP COLUMN phase_type")
        connection.execute("ALTER TABLE phases DROP COLUMN deployment_config")
    connection.commit()
    counts = {
        name: connection.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
        for (name,) in connection.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
    }
    connection.close()
    return counts


@pytest.fixture
def original_db(workdir: Path) -> tuple[Path, dict[str, int]]:
    """`autopack_legacy.db` in the work dir, made with the original's schema, with rows."""
    path = workdir / "autopack_legacy.db"
    return path, build_original_db(path)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    base = os.environ.get("AUTOPACK_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("AUTOPACK_TEST_POSTGRES_URL is not set (CI sets it)")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin_url = sa.engine.make_url(base).set(drivername="postgresql+psycopg")
    admin = sa.create_engine(admin_url)
    with admin.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = admin_url.update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


def reference_seed_spec(run_name: str) -> SeedRunSpec:
    """A seed run built from the reference phase specs in tests/data."""
    data = json.loads((REFERENCE_DATA / "telemetry_run_phase_specs.json").read_text())[run_name]
    run, tier, defaults = data["run"], data["tier"], data["phase_defaults"]
    return SeedRunSpec(
        run_id=run["id"],
        token_cap=run["token_cap"],
        max_phases=run["max_phases"],
        max_duration_minutes=run["max_duration_minutes"],
        tier_name=tier["name"],
        tier_description=tier.get("description"),
        tier_token_cap=tier.get("token_cap"),
        ci_run_cap=tier["ci_run_cap"],
        max_builder_attempts=defaults["max_builder_attempts"],
        max_auditor_attempts=defaults["max_auditor_attempts"],
        incident_token_cap=defaults["incident_token_cap"],
        phases=[SeedPhase.model_validate(p) for p in data["phases"]],
    )


@pytest.fixture
def seed_db(cli: CliRunner, workdir: Path) -> Iterator[Database]:
    """`autopack_telemetry_seed.db` (role seed) holding the ten telemetry-collection-v4 phases."""
    assert cli("db", "init", "--db", "seed").exit_code == 0
    db = open_database(resolve_target("seed", None), OpenMode.READ_WRITE)
    create_seed_run(db.engine, reference_seed_spec("telemetry-collection-v4"))
    yield db
    db.close()
