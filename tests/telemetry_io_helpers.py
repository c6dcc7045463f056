"""Helpers for the telemetry export/import tests: DBs, rows written three ways, row snapshots."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from autopack.db.engine import Database, OpenMode, open_database
from autopack.db.models import (
    Phase,
    Run,
    TelemetryProvenance,
    TokenEstimationV2Event,
    table_of,
)
from autopack.estimator import estimate, load_builtin_set
from autopack.settings import resolve_target
from autopack.telemetry.recorder import BuilderCall, record_builder_call
from tests.conftest import REFERENCE_DATA, CliRunner

SAMPLE_LOG = REFERENCE_DATA / "token_estimation_v2_sample.log"
SAMPLE_CSV = REFERENCE_DATA / "token_estimation_v2_log_samples.csv"
V4_RUN = "telemetry-collection-v4"
V4_PHASES = ("telemetry-p1-string-util", "telemetry-p6-string-tests", "telemetry-p9-readme")

EVENTS = table_of(TokenEstimationV2Event)
PROVENANCE = table_of(TelemetryProvenance)
PHASES = table_of(Phase)
RUNS = table_of(Run)

# The columns compared across a round trip: all but the new DB's own key.
COMPARED = tuple(c.name for c in EVENTS.columns if c.name != "event_id")


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


def init_db(cli: CliRunner, path: Path) -> str:
    """A fresh DB made by `db init` (the only way a DB file is created); returns its URL."""
    url = url_of(path)
    result = cli("db", "init", "--database-url", url, "-q")
    assert result.exit_code == 0, result.stderr
    return url


def open_rw(url: str) -> Database:
    return open_database(resolve_target(None, url), OpenMode.READ_WRITE)


def _call(phase_id: str, output_tokens: int, *, truncated: bool = False) -> BuilderCall:
    coefficients = load_builtin_set("default")
    category = (
        "tests" if "tests" in phase_id else "docs" if "readme" in phase_id else "implementation"
    )
    predicted = estimate(
        [f"examples/{phase_id}.py"], category, "low", coefficients=coefficients, workspace=None
    )
    return BuilderCall(
        run_id=V4_RUN,
        phase_id=phase_id,
        provider="anthropic",
        model="claude-sonnet-4-5",
        estimate=predicted,
        selected_budget=8192,
        max_tokens_sent=16384,
        input_tokens=900,
        output_tokens=output_tokens,
        stop_reason="max_tokens" if truncated else "end_turn",
        truncated=truncated,
        success=not truncated,
    )


def add_drained_rows(db: Database) -> None:
    """Three rows as a drain records them (with provenance: source drain, a coefficient set)."""
    for phase_id, tokens, truncated in (
        (V4_PHASES[0], 1218, False),
        (V4_PHASES[1], 16384, True),
        (V4_PHASES[2], 3646, False),
    ):
        written = record_builder_call(
            db.engine,
            _call(phase_id, tokens, truncated=truncated),
            enabled=True,
            tables_present=True,
        )
        assert written.event_id is not None


def add_bare_row(db: Database, **values: Any) -> int:
    """A row as the original wrote it: no provenance, doc/SOT features, odd floats, NULLs."""
    row: dict[str, Any] = {
        "run_id": V4_RUN,
        "phase_id": V4_PHASES[2],
        "timestamp": datetime(2025, 12, 29, 20, 18, 40, 123456),
        "category": "documentation",
        "complexity": "low",
        "deliverable_count": 2,
        "deliverables_json": '["docs/USAGE.md", "docs/a, \\"quoted\\".md"]',
        "predicted_output_tokens": 2600,
        "actual_output_tokens": 16205,
        "selected_budget": 4096,
        "actual_max_tokens": None,
        "success": True,
        "truncated": False,
        "stop_reason": None,
        "model": "claude-sonnet-4-5",
        "smape_percent": 0.1 + 0.2,
        "waste_ratio": 1 / 3,
        "underestimated": None,
        "is_truncated_output": False,
        "api_reference_required": True,
        "examples_required": False,
        "research_required": None,
        "usage_guide_required": True,
        "context_quality": "some",
        "is_sot_file": None,
        "sot_file_name": "USAGE.md",
        "sot_entry_count_hint": 7,
        "created_at": datetime(2025, 12, 29, 20, 18, 41),
    }
    row.update(values)
    with db.engine.begin() as connection:
        key = connection.execute(sa.insert(EVENTS).values(**row)).inserted_primary_key
    assert key is not None
    return int(key[0])


def event_rows(db: Database) -> list[dict[str, Any]]:
    with db.engine.connect() as connection:
        rows = connection.execute(sa.select(EVENTS).order_by(EVENTS.c.event_id)).mappings()
        return [dict(row) for row in rows]


def provenance_rows(db: Database) -> dict[int, dict[str, Any]]:
    with db.engine.connect() as connection:
        rows = connection.execute(sa.select(PROVENANCE)).mappings()
        return {row["event_id"]: dict(row) for row in rows}


def comparable(db: Database) -> list[tuple[Any, ...]]:
    """Every row's compared columns plus its lasting provenance, in a stable order."""
    provenance = provenance_rows(db)
    out = []
    for row in event_rows(db):
        facts = provenance.get(row["event_id"], {})
        out.append(
            (
                *(row[name] for name in COMPARED),
                facts.get("source"),
                facts.get("coefficient_set"),
                facts.get("coefficient_set_hash"),
            )
        )
    return sorted(out, key=repr)


def count(db: Database, table: sa.Table) -> int:
    with db.engine.connect() as connection:
        return int(connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


KEYED_TABLES = ("tiers", "phases", "token_estimation_v2_events", "autopack_telemetry_provenance")


def foreign_key_problems(path: Path) -> list[Any]:
    """Broken foreign keys in the tables import writes (an original DB's other tables hold
    filler rows that break their own keys; they are not import's business)."""
    connection = sqlite3.connect(path)
    try:
        problems: list[Any] = []
        for table in KEYED_TABLES:
            problems += connection.execute(f"PRAGMA foreign_key_check({table})").fetchall()
        return problems
    finally:
        connection.close()
