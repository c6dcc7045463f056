"""Every timestamp in every `--json` document and in the NDJSON and CSV exports has one format:
RFC 3339 in UTC with a `+00:00` offset (docs/json.md), whatever the stored value looked like."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from autopack.db.clock import utc_text
from autopack.db.engine import OpenMode, open_database
from autopack.db.models import Phase, table_of
from autopack.settings import resolve_target
from autopack.telemetry.columns import parse_timestamp
from tests.backlog_helpers import add_run, good_reply
from tests.conftest import CliRunner
from tests.fake_llm import FakeLlmServer

# Anything that starts like a date is a timestamp to check (a date alone would be one too).
TIMESTAMP_LIKE = re.compile(r"^\d{4}-\d{2}-\d{2}")
THE_FORMAT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?\+00:00$")


def _strings(value: Any, path: str = "$") -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")
    elif isinstance(value, str):
        yield path, value


def _timestamps(document: Any) -> dict[str, str]:
    """Every timestamp-like string value, by its path; fails on any in another format."""
    found = {path: text for path, text in _strings(document) if TIMESTAMP_LIKE.match(text)}
    wrong = {path: text for path, text in found.items() if not THE_FORMAT.match(text)}
    assert not wrong, wrong
    return found


def test_utc_text_writes_naive_values_as_utc_and_converts_aware_ones() -> None:
    assert utc_text(datetime(2026, 12, 7, 10, 15)) == "2026-12-07T10:15:00+00:00"
    assert utc_text(datetime(2026, 12, 7, 10, 15, 0, 500)) == "2026-12-07T10:15:00.000500+00:00"
    plus_two = timezone(timedelta(hours=2))
    assert utc_text(datetime(2026, 12, 7, 12, 15, tzinfo=plus_two)) == "2026-12-07T10:15:00+00:00"
    assert utc_text(datetime(2026, 12, 7, 10, 15, tzinfo=UTC)) == "2026-12-07T10:15:00+00:00"


def test_the_checker_refuses_the_old_formats() -> None:
    for old in ("2026-12-07T10:15:00", "2026-12-07 10:15:00.123456", "2026-12-07T10:15:00Z"):
        with pytest.raises(AssertionError):
            _timestamps({"started_at": old})


@pytest.fixture
def drained(cli: CliRunner, workdir: Path, fake_llm: FakeLlmServer) -> dict[str, str]:
    """A seed DB with two runs, three phases drained through the fake LLM; one phase left
    EXECUTING an hour ago (for triage). Returns the LLM variables."""
    assert cli("db", "init", "--db", "seed").exit_code == 0
    (workdir / "ws").mkdir()
    db = open_database(resolve_target("seed", None, cwd=workdir), OpenMode.READ_WRITE)
    try:
        add_run(db.engine, "run-a", 2)
        add_run(db.engine, "run-b", 2)
        phases = table_of(Phase)
        with db.engine.begin() as connection:
            connection.execute(
                sa.update(phases)
                .where(phases.c.phase_id == "run-b-p1")
                .values(state="EXECUTING", updated_at=datetime(2025, 1, 1, 9, 30))
            )
    finally:
        db.close()
    fake_llm.default_reply = good_reply()
    env = fake_llm.env("anthropic")
    result = cli("drain", "batch", "--db", "seed", "--workspace", "ws", "--json", env=env)
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert len(doc["results"]) >= 2
    assert len(_timestamps(doc)) == 1 + 2 * len(doc["results"])  # mtime, started, finished
    return env


def _document(cli: CliRunner, *args: str, env: dict[str, str] | None = None) -> Any:
    result = cli(*args, env=env)
    assert result.exit_code in (0, 1), result.stderr
    return json.loads(result.stdout)


def test_every_json_document_writes_one_timestamp_format(
    cli: CliRunner, workdir: Path, drained: dict[str, str]
) -> None:
    seed = ("--db", "seed", "--json")
    sessions = _document(cli, "drain", "sessions", *seed)
    session_id = sessions["sessions"][0]["id"]
    documents = {
        "db identity": _document(cli, "db", "identity", *seed),
        "db check": _document(cli, "db", "check", *seed),
        "db stamp": _document(cli, "db", "stamp", "--role", "seed", *seed),
        "db upgrade": _document(cli, "db", "upgrade", "--yes", *seed),
        "drain sessions": sessions,
        "drain sessions ID": _document(cli, "drain", "sessions", session_id, *seed),
        "telemetry analyze": _document(cli, "telemetry", "analyze", *seed),
        "telemetry analyze --since": _document(
            cli, "telemetry", "analyze", "--since", "2020-01-01T02:00+02:00", *seed
        ),
        "telemetry explain": _document(cli, "telemetry", "explain", *seed),
        "telemetry export": _document(
            cli,
            "telemetry",
            "export",
            "--since",
            "2020-01-01",
            "-o",
            "x.ndjson",
            "-f",
            "ndjson",
            *seed,
        ),
        "triage stale": _document(
            cli, "triage", "stale", "--stale-hours", "0.5", "--report-only", *seed
        ),
        "calibrate sets": _document(cli, "calibrate", "sets", *seed),
        "runs list": _document(cli, "runs", "list", *seed),
        "runs show": _document(cli, "runs", "show", "run-a", *seed),
        "phases show": _document(cli, "phases", "show", "run-a", "run-a-p0", *seed),
    }
    counts = {name: len(_timestamps(doc)) for name, doc in documents.items()}
    # Each document holds the ones it should (the target's mtime at least), so an empty
    # check cannot pass for a document that lost its timestamps.
    assert all(n >= 1 for name, n in counts.items() if name != "calibrate sets"), counts
    assert counts["drain sessions ID"] >= 1 + 2 * 2, counts
    assert counts["phases show"] >= 1 + 2 + 2, counts  # mtime, the phase's own, an attempt
    analyze = documents["telemetry analyze"]
    assert analyze["first_timestamp"] is not None
    assert analyze["generated_at"].endswith("+00:00")
    since = documents["telemetry analyze --since"]["filters"]["since"]
    assert since == "2020-01-01T00:00:00+00:00"
    assert documents["telemetry export"]["filters"]["since"] == "2020-01-01T00:00:00+00:00"
    # An EXECUTING phase without a lease: written by the DB's own JSON function.
    unleased = documents["triage stale"]["unleased"]
    assert [entry["phase_id"] for entry in unleased] == ["run-b-p1"]
    assert unleased[0]["last_activity"] == "2025-01-01T09:30:00+00:00"


def test_ndjson_and_csv_exports_write_the_same_format_and_import_back(
    cli: CliRunner, workdir: Path, drained: dict[str, str]
) -> None:
    for fmt in ("ndjson", "csv"):
        result = cli("telemetry", "export", "--db", "seed", "-f", fmt, "-o", f"t.{fmt}")
        assert result.exit_code == 0, result.stderr
    lines = (workdir / "t.ndjson").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) >= 2
    for row in rows:
        assert len(_timestamps(row)) == 2  # timestamp, created_at
    table = list(csv.DictReader(io.StringIO((workdir / "t.csv").read_text())))
    assert [r["timestamp"] for r in table] == [r["timestamp"] for r in rows]
    for row in table:
        assert THE_FORMAT.match(row["timestamp"]), row["timestamp"]
    # Both import into another DB, timestamps unchanged (naive UTC, to the microsecond).
    assert cli("db", "init", "--database-url", "sqlite:///other.db").exit_code == 0
    for fmt in ("ndjson", "csv"):
        imported = cli("telemetry", "import", "--database-url", "sqlite:///other.db", f"t.{fmt}")
        assert imported.exit_code == 0, imported.stderr
    again = cli("telemetry", "export", "--database-url", "sqlite:///other.db", "-f", "ndjson")
    assert again.exit_code == 0, again.stderr
    stamps = {json.loads(line)["timestamp"] for line in again.stdout.splitlines()}
    assert stamps == {row["timestamp"] for row in rows}


def test_the_importer_still_reads_the_old_naive_format() -> None:
    naive = "2025-12-29T20:18:40.123456"
    assert parse_timestamp(naive) == parse_timestamp(naive + "+00:00")
    assert parse_timestamp("2025-12-29 20:18:40") == datetime(2025, 12, 29, 20, 18, 40)
