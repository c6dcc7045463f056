"""`telemetry export`: every column, filters, streaming, guards, and a lossless round trip."""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import itertools
import json
import os
import sqlite3
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from autopack.db.engine import Database, OpenMode, open_database
from autopack.errors import ConfigError, GuardError, SchemaError
from autopack.estimator import deliverable_count_bucket, normalize_category
from autopack.settings import resolve_target
from autopack.telemetry import export as export_module
from autopack.telemetry import export_parallel, export_worker
from autopack.telemetry.exchange import (
    BOOLEAN_COLUMNS,
    CSV_COLUMNS,
    EVENT_COLUMNS,
    FLOAT_COLUMNS,
    INTEGER_COLUMNS,
    NDJSON_KEYS,
    ExportFormat,
)
from autopack.telemetry.export import ExportFilters, export_telemetry, export_to_file
from autopack.telemetry.importer import import_files
from tests.conftest import CliRunner, build_original_db, reference_seed_spec
from tests.telemetry_io_helpers import (
    COMPARED,
    EVENTS,
    SAMPLE_LOG,
    V4_PHASES,
    V4_RUN,
    add_bare_row,
    add_drained_rows,
    comparable,
    count,
    event_rows,
    init_db,
    open_rw,
    provenance_rows,
)

# The keys of the original's NDJSON export (reference/original_spec.md §10.1).
ORIGINAL_NDJSON_KEYS = {
    "run_id",
    "phase_id",
    "timestamp",
    "category",
    "complexity",
    "deliverable_count",
    "deliverables",
    "predicted_output_tokens",
    "actual_output_tokens",
    "selected_budget",
    "success",
    "truncated",
    "stop_reason",
    "model",
    "smape_percent",
    "waste_ratio",
    "underestimated",
}


@pytest.fixture
def full_db(seed_db: Database) -> Database:
    """The seed DB with 64 rows: 3 drained, 1 written the original's way, 60 imported."""
    add_drained_rows(seed_db)
    add_bare_row(seed_db)
    import_files(seed_db, [SAMPLE_LOG])
    assert count(seed_db, EVENTS) == 64
    return seed_db


def _export(db: Database, fmt: ExportFormat = ExportFormat.CSV, **filters: Any) -> str:
    out = io.StringIO()
    export_telemetry(db, out, fmt, ExportFilters(**filters))
    return out.getvalue()


def _csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _ndjson_rows(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


# --- what is written ----------------------------------------------------------------------


def test_csv_has_every_column_then_provenance_then_derived(full_db: Database) -> None:
    rows = _csv_rows(_export(full_db))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert CSV_COLUMNS[: len(EVENT_COLUMNS)] == EVENT_COLUMNS
    assert len(rows) == 64
    assert [int(r["event_id"]) for r in rows] == list(range(1, 65))
    drained = rows[0]
    assert drained["source"] == "drain"
    assert drained["coefficient_set"] == "default"
    assert drained["timestamp"][10] == "T"
    assert len(drained["timestamp"]) == 26
    bare = rows[3]
    assert bare["source"] == ""
    assert bare["sample_key"] == ""
    assert bare["success"] == "True"
    assert bare["underestimated"] == ""
    assert bare["is_sot_file"] == ""
    assert bare["smape_percent"] == repr(0.1 + 0.2)
    assert json.loads(bare["deliverables_json"]) == ["docs/USAGE.md", 'docs/a, "quoted".md']
    assert bare["category_normalized"] == "docs"
    assert bare["deliverable_bucket"] == "2-5"
    imported = rows[4]
    assert imported["source"] == "import"
    assert imported["sample_key"].startswith("log:")
    assert imported["source_line"] == "1"


def test_ndjson_is_a_superset_of_the_original_export(full_db: Database) -> None:
    rows = _ndjson_rows(_export(full_db, ExportFormat.NDJSON))
    assert len(rows) == 64
    assert list(rows[0]) == list(NDJSON_KEYS)
    assert set(rows[0]) >= ORIGINAL_NDJSON_KEYS
    bare = rows[3]
    assert bare["deliverables"] == ["docs/USAGE.md", 'docs/a, "quoted".md']
    assert bare["success"] is True
    assert bare["underestimated"] is None
    assert bare["smape_percent"] == 0.1 + 0.2
    assert bare["waste_ratio"] == 1 / 3
    assert bare["timestamp"] == "2025-12-29T20:18:40.123456"
    assert rows[4]["deliverables"] == []


def test_derived_columns_match_the_python_rules(seed_db: Database) -> None:
    cases = [
        ("testing", 0),
        ("Testing", 1),
        ("documentation", 2),
        ("doc_synthesis", 5),
        ("IMPLEMENT_FEATURE", 6),
        ("misc", 40),
    ]
    for minute, (category, deliverables) in enumerate(cases):
        add_bare_row(
            seed_db,
            category=category,
            deliverable_count=deliverables,
            timestamp=datetime(2025, 12, 29, 20, minute),
        )
    for fmt in ExportFormat:
        text = _export(seed_db, fmt)
        rows = _csv_rows(text) if fmt is ExportFormat.CSV else _ndjson_rows(text)
        for row, (category, deliverables) in zip(rows, cases, strict=True):
            assert row["category_normalized"] == normalize_category(category)
            assert row["deliverable_bucket"] == deliverable_count_bucket(deliverables)


def test_a_row_of_an_odd_legacy_db_is_exported_as_it_is(seed_db: Database) -> None:
    add_bare_row(seed_db, deliverables_json="not json", deliverable_count=-1)
    (row,) = _ndjson_rows(_export(seed_db, ExportFormat.NDJSON))
    assert row["deliverables_json"] == "not json"
    assert row["deliverables"] == []
    assert row["deliverable_bucket"] is None


# --- filters --------------------------------------------------------------------------------


def _count(db: Database, **filters: Any) -> int:
    return len(_csv_rows(_export(db, **filters)))


def test_filters_select_what_they_say(full_db: Database) -> None:
    add_bare_row(full_db, category="testing", complexity="high", success=False)
    rows = event_rows(full_db)
    assert _count(full_db, success_only=True) == sum(r["success"] for r in rows)
    clean = [r for r in rows if not r["truncated"] and not r["is_truncated_output"]]
    assert _count(full_db, exclude_truncated=True) == len(clean)
    assert _count(full_db, success_only=True, exclude_truncated=True) == sum(
        r["success"] for r in clean
    )
    assert _count(full_db, run_ids=(V4_RUN,)) == 5
    imported_run = next(r["run_id"] for r in rows if r["run_id"] != V4_RUN)
    assert _count(full_db, run_ids=(V4_RUN, imported_run)) == 65
    assert _count(full_db, run_ids=("no-such-run",)) == 0
    tests = [r for r in rows if normalize_category(r["category"]) == "tests"]
    assert {r["category"] for r in tests} == {"tests", "testing"}
    assert _count(full_db, categories=("testing",)) == len(tests)
    assert _count(full_db, categories=("tests", "docs")) == len(tests) + sum(
        normalize_category(r["category"]) == "docs" for r in rows
    )
    assert _count(full_db, complexities=("medium",)) == sum(
        r["complexity"] == "medium" for r in rows
    )
    assert _count(full_db, complexities=("LOW", "high")) == sum(
        r["complexity"] in ("low", "high") for r in rows
    )


def test_since_is_inclusive_and_until_exclusive(full_db: Database) -> None:
    rows = event_rows(full_db)
    day = datetime(2025, 12, 29)
    after = datetime(2025, 12, 30)
    expected = sum(day <= r["timestamp"] < after for r in rows)
    assert 0 < expected < 64
    assert _count(full_db, since=day, until=after) == expected
    exact = datetime(2025, 12, 29, 19, 40, 2)
    assert _count(full_db, since=exact, until=datetime(2025, 12, 29, 19, 40, 3)) == 1
    assert (
        _count(
            full_db,
            since=datetime(2025, 12, 29, 19, 40, 2, 1),
            until=datetime(2025, 12, 29, 19, 40, 3),
        )
        == 0
    )


def test_contradictory_or_unknown_filters_are_refused() -> None:
    with pytest.raises(ConfigError, match="not before"):
        ExportFilters(since=datetime(2025, 12, 30), until=datetime(2025, 12, 29))
    with pytest.raises(ConfigError, match="unknown complexity"):
        ExportFilters(complexities=("huge",))


# --- streaming, files -------------------------------------------------------------------------


def test_rows_stream_in_batches_with_progress(
    full_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_module, "BATCH_ROWS", 7)
    seen: list[tuple[int, int | None]] = []
    out = io.StringIO()
    result = export_telemetry(
        full_db,
        out,
        ExportFormat.NDJSON,
        ExportFilters(),
        progress=lambda d, t: seen.append((d, t)),
    )
    assert result.rows == 64
    assert [done for done, _total in seen] == [*range(7, 64, 7), 64]
    assert {total for _done, total in seen} == {64}


def test_file_export_is_atomic(full_db: Database, workdir: Path) -> None:
    target = workdir / "telemetry.csv"
    target.write_text("previous export\n")

    def explode(done: int, total: int | None) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        export_to_file(full_db, target, ExportFormat.CSV, ExportFilters(), progress=explode)
    assert target.read_text() == "previous export\n"
    assert sorted(p.name for p in workdir.iterdir() if "telemetry.csv" in p.name) == [
        "telemetry.csv"
    ]
    result = export_to_file(full_db, target, ExportFormat.CSV, ExportFilters())
    assert result.output == str(target)
    assert result.rows == 64
    assert len(_csv_rows(target.read_text())) == 64


def test_a_write_failure_is_a_clear_error_and_leaves_nothing(
    full_db: Database, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_room(source: object, target: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_room)
    with pytest.raises(ConfigError, match="No space left on device"):
        export_to_file(full_db, workdir / "t.csv", ExportFormat.CSV, ExportFilters())
    assert [p.name for p in workdir.iterdir() if p.name.endswith((".csv", ".tmp"))] == []


def test_refused_output_paths(full_db: Database, workdir: Path) -> None:
    for path, message in (
        (workdir, "is a directory"),
        (workdir / "missing" / "x.csv", "does not exist"),
        (workdir / "autopack_telemetry_seed.db", "is the database being exported"),
    ):
        with pytest.raises(ConfigError, match=message):
            export_to_file(full_db, path, ExportFormat.CSV, ExportFilters())


# --- guards -----------------------------------------------------------------------------------


def test_empty_db_is_refused_unless_allowed(cli: CliRunner, workdir: Path) -> None:
    url = init_db(cli, workdir / "empty.db")
    db = open_database(resolve_target(None, url), OpenMode.READ_ONLY)
    try:
        with pytest.raises(GuardError, match="empty"):
            _export(db)
        out = io.StringIO()
        result = export_telemetry(db, out, ExportFormat.CSV, ExportFilters(), allow_empty_db=True)
        assert result.rows == 0
        assert out.getvalue() == ",".join(CSV_COLUMNS) + "\n"
    finally:
        db.close()


def test_db_without_telemetry_tables_is_a_clear_refusal(workdir: Path) -> None:
    path = workdir / "old.db"
    build_original_db(path, with_telemetry_tables=False)
    db = open_database(resolve_target(None, f"sqlite:///{path}"), OpenMode.READ_ONLY)
    try:
        with pytest.raises(
            SchemaError, match=r"has no telemetry table \(token_estimation_v2_events\)"
        ):
            _export(db)
    finally:
        db.close()


def test_an_original_db_exports_read_only_without_provenance(
    original_db: tuple[Path, dict[str, int]],
) -> None:
    path, counts = original_db
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    db = open_database(resolve_target("legacy", None), OpenMode.READ_ONLY)
    try:
        rows = _csv_rows(_export(db))
    finally:
        db.close()
    assert len(rows) == counts["token_estimation_v2_events"]
    assert {r["source"] for r in rows} == {""}
    assert {r["category_normalized"] for r in rows} == {"implementation", "tests", "docs"}
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert not Path(f"{path}-wal").exists()


# --- the round trip ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(ExportFormat))
def test_round_trip_into_a_fresh_db_is_lossless(
    full_db: Database, cli: CliRunner, workdir: Path, fmt: ExportFormat
) -> None:
    exported = workdir / f"a.{fmt.value}"
    export_to_file(full_db, exported, fmt, ExportFilters())
    url = init_db(cli, workdir / "b.db")
    other = open_rw(url)
    try:
        report = import_files(other, [exported])
        assert report.totals.imported == 64
        assert not report.found_problems
        assert report.files[0].placeholder_runs[0] == V4_RUN
        assert report.files[0].on_existing_phases == 0
        assert report.files[0].on_new_placeholders == 64

        # Every column but event_id, and the provenance facts, are the same; a row that had no
        # provenance (written the original's way) is now marked as imported.
        def marked(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
            return [(*row[:-3], row[-3] or "import", *row[-2:]) for row in rows]

        assert comparable(other) == marked(comparable(full_db))

        # The second export differs only where the documented provenance was filled in.
        again = workdir / f"b.{fmt.value}"
        export_to_file(other, again, fmt, ExportFilters())
        reader = _csv_rows if fmt is ExportFormat.CSV else _ndjson_rows
        before, after = reader(exported.read_text()), reader(again.read_text())
        filled = {"source", "sample_key", "source_file", "source_line"}
        for first, second in zip(before, after, strict=True):
            for key in first:
                if key in filled and first[key] in ("", None):
                    continue
                assert first[key] == second[key], key
            assert second["sample_key"]

        # Importing either export again, into either DB, adds nothing.
        assert import_files(other, [exported, again]).totals.imported == 0
        assert import_files(full_db, [exported, again]).totals.imported == 0
        assert count(full_db, EVENTS) == 64
        assert count(other, EVENTS) == 64
    finally:
        other.close()


def test_round_trip_into_a_db_with_the_same_run_attaches(
    full_db: Database, cli: CliRunner, workdir: Path
) -> None:
    exported = workdir / "a.csv"
    export_to_file(full_db, exported, ExportFormat.CSV, ExportFilters(run_ids=(V4_RUN,)))
    url = init_db(cli, workdir / "b.db")
    other = open_rw(url)
    try:
        from autopack.seed.model import create_seed_run

        create_seed_run(other.engine, reference_seed_spec(V4_RUN))
        report = import_files(other, [exported])
        assert (report.totals.imported, report.files[0].on_existing_phases) == (4, 4)
        assert report.totals.placeholder_runs == 0
        assert {r["phase_id"] for r in event_rows(other)} == set(V4_PHASES)
        provenance = provenance_rows(other)
        assert sorted(str(p["coefficient_set"]) for p in provenance.values()) == [
            "None",
            "default",
            "default",
            "default",
        ]
    finally:
        other.close()


def test_compared_columns_cover_the_table() -> None:
    assert set(COMPARED) | {"event_id"} == set(EVENT_COLUMNS)


# --- through the command line -----------------------------------------------------------------


def test_cli_export_to_stdout_reports_the_count_on_stderr(
    cli: CliRunner, full_db: Database
) -> None:
    result = cli("telemetry", "export", "--db", "seed", "--success-only", "--exclude-truncated")
    assert result.exit_code == 0, result.stderr
    rows = _csv_rows(result.stdout)
    assert rows
    assert all(r["success"] == "True" and r["truncated"] == "False" for r in rows)
    assert f"exported {len(rows)} rows (csv) to stdout" in result.stderr
    assert "target database" in result.stderr


def test_cli_export_ndjson_with_filters(cli: CliRunner, full_db: Database) -> None:
    result = cli(
        "telemetry",
        "export",
        "--db",
        "seed",
        "--format",
        "ndjson",
        "--run-id",
        V4_RUN,
        "--category",
        "testing",
        "--since",
        "2000-01-01",
        "--until",
        "2100-01-01T00:00+02:00",
        "-q",
    )
    assert result.exit_code == 0, result.stderr
    (row,) = _ndjson_rows(result.stdout)
    assert row["phase_id"] == V4_PHASES[1]
    assert row["truncated"] is True
    assert "target database" not in result.stderr
    assert "exported 1 row (ndjson) to stdout" in result.stderr


def test_cli_export_to_a_file_with_json_summary(
    cli: CliRunner, full_db: Database, workdir: Path
) -> None:
    result = cli("telemetry", "export", "--db", "seed", "-o", "missing/telemetry.csv", "--json")
    assert result.exit_code == 2, result.stderr
    assert "does not exist" in result.stderr
    result = cli(
        "telemetry",
        "export",
        "--db",
        "seed",
        "-o",
        "telemetry.csv",
        "--json",
        "--complexity",
        "low",
    )
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["target"]["read_only"] is True
    assert doc["format"] == "csv"
    assert doc["output"] == str(workdir / "telemetry.csv")
    assert doc["filters"]["complexities"] == ["low"]
    assert doc["rows"] == len(_csv_rows((workdir / "telemetry.csv").read_text())) > 0
    assert doc["columns"] == list(CSV_COLUMNS)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--json"], "--json prints a summary on stdout"),
        (["--since", "yesterday"], "--since 'yesterday' is not a date"),
        (["--since", "2025-12-30", "--until", "2025-12-29"], "is not before --until"),
        (["--complexity", "huge"], "unknown complexity 'huge'"),
        (["--format", "xml"], "Invalid value"),
    ],
)
def test_cli_export_refusals(
    cli: CliRunner, full_db: Database, args: list[str], message: str
) -> None:
    result = cli("telemetry", "export", "--db", "seed", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_cli_export_guards(cli: CliRunner, workdir: Path) -> None:
    url = init_db(cli, workdir / "empty.db")
    refused = cli("telemetry", "export", "--database-url", url)
    assert refused.exit_code == 2
    assert "is empty (0 runs, 0 phases)" in refused.stderr
    assert "--allow-empty-db" in refused.stderr
    assert refused.stdout == ""
    allowed = cli("telemetry", "export", "--database-url", url, "--allow-empty-db", "-q")
    assert allowed.exit_code == 0
    assert allowed.stdout == ",".join(CSV_COLUMNS) + "\n"
    build_original_db(workdir / "old.db", with_telemetry_tables=False)
    missing = cli("telemetry", "export", "--database-url", f"sqlite:///{workdir / 'old.db'}")
    assert missing.exit_code == 2
    assert "has no telemetry table (token_estimation_v2_events)" in missing.stderr
    assert "Traceback" not in missing.stderr
    absent = cli("telemetry", "export", "--database-url", f"sqlite:///{workdir / 'typo.db'}")
    assert absent.exit_code == 2
    assert not (workdir / "typo.db").exists()


# --- PostgreSQL -------------------------------------------------------------------------------


def test_postgres_export_matches_sqlite_byte_for_byte(
    cli: CliRunner, postgres_url: str, workdir: Path
) -> None:
    assert cli("db", "init", "--database-url", postgres_url, "-q").exit_code == 0
    sqlite_url = init_db(cli, workdir / "lite.db")
    outputs: dict[str, dict[ExportFormat, str]] = {}
    for name, url in (("pg", postgres_url), ("lite", sqlite_url)):
        db = open_rw(url)
        try:
            assert import_files(db, [SAMPLE_LOG]).totals.imported == 60
            add_bare_row(db, run_id=event_rows(db)[0]["run_id"], phase_id="line-1")
            outputs[name] = {
                fmt: _export(db, fmt, since=datetime(2025, 12, 1)) for fmt in ExportFormat
            }
        finally:
            db.close()
    assert outputs["pg"] == outputs["lite"]
    pg = open_rw(postgres_url)
    try:
        exported = workdir / "pg.ndjson"
        exported.write_text(outputs["pg"][ExportFormat.NDJSON])
        assert import_files(pg, [exported]).totals.imported == 0
    finally:
        pg.close()


# --- worker processes (a large SQLite export) ------------------------------------------------


def _export_with(db: Database, fmt: ExportFormat, workers: int, **filters: Any) -> str:
    out = io.StringIO()
    result = export_telemetry(db, out, fmt, ExportFilters(**filters), workers=workers)
    assert result.rows == len(_rows_of(fmt, out.getvalue()))
    return out.getvalue()


def _rows_of(fmt: ExportFormat, text: str) -> list[Any]:
    return _csv_rows(text) if fmt is ExportFormat.CSV else _ndjson_rows(text)


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Chunks of 5 rows, so a small DB makes many; records the in-process fallbacks."""
    monkeypatch.setattr(export_parallel, "CHUNK_ROWS", 5)
    fallbacks: list[tuple[int, int]] = []
    in_process = export_module._export_in_process

    def recording(*args: Any, **kwargs: Any) -> int:
        id_range = args[7] if len(args) > 7 else kwargs.get("id_range")
        if id_range is not None:
            fallbacks.append(id_range)
        return in_process(*args, **kwargs)

    monkeypatch.setattr(export_module, "_export_in_process", recording)
    return fallbacks


@pytest.mark.parametrize("fmt", list(ExportFormat))
def test_workers_write_the_same_bytes_as_one_process(
    full_db: Database, small_chunks: list[tuple[int, int]], fmt: ExportFormat
) -> None:
    for filters in (
        {},
        {"success_only": True, "categories": ("tests",)},
        {"since": datetime(2025, 12, 29, 19), "complexities": ("low", "medium")},
    ):
        expected = _export_with(full_db, fmt, 0, **filters)
        assert _rows_of(fmt, expected)
        for workers in (1, 2, 3):
            assert _export_with(full_db, fmt, workers, **filters) == expected, (workers, filters)
    assert small_chunks == []  # every chunk came from the workers


def _set_raw(db: Database, event_id: int, sql: str, *params: Any) -> None:
    """Store a value as it is: SQLite keeps what it is given, whatever the column's type."""
    with db.engine.begin() as connection:
        connection.exec_driver_sql(
            f"UPDATE token_estimation_v2_events SET {sql} WHERE event_id = ?", (*params, event_id)
        )


@pytest.mark.parametrize("fmt", list(ExportFormat))
def test_odd_values_come_out_as_in_one_process(
    full_db: Database,
    small_chunks: list[tuple[int, int]],
    monkeypatch: pytest.MonkeyPatch,
    fmt: ExportFormat,
) -> None:
    monkeypatch.setattr(export_parallel, "FALLBACK_STREAK", 10**9)  # chunk by chunk here
    ids = [add_bare_row(full_db, phase_id=V4_PHASES[i % len(V4_PHASES)]) for i in range(30)]
    _set_raw(full_db, ids[0], "selected_budget = ?", 1234.5678901234567)  # a REAL in INTEGER
    _set_raw(full_db, ids[3], "sot_file_name = ?", b"as bytes")  # a BLOB in a text column
    _set_raw(full_db, ids[6], "stop_reason = ?", 'a, "quoted"\nreason')  # CSV must quote it
    _set_raw(full_db, ids[9], "model = ?", "nul\x00inside, modèle ✓")  # NUL, not ASCII
    _set_raw(full_db, ids[12], "success = 2, underestimated = 'yes'")  # neither 0 nor 1
    _set_raw(full_db, ids[15], "smape_percent = 'n/a', waste_ratio = 'a,b'")  # text in REAL
    _set_raw(full_db, ids[18], "smape_percent = ?, waste_ratio = ?", 1e-7, 2.5e-5)  # exponents
    _set_raw(full_db, ids[21], "waste_ratio = ?, smape_percent = ?", 1e16, float("inf"))
    _set_raw(full_db, ids[24], "deliverables_json = ?", '{"not": "a list"}')
    _set_raw(full_db, ids[27], "context_quality = ''")
    _set_raw(full_db, ids[29], "deliverables_json = ?, waste_ratio = ?", b'["a"]', b"0.5")
    expected = _export_with(full_db, fmt, 0)
    assert _export_with(full_db, fmt, 2) == expected
    assert ("nul\x00inside" if fmt is ExportFormat.CSV else "nul\\u0000inside") in expected
    # Only the chunks holding a value the fast path does not write exactly went the
    # in-process way: CSV cells that need quoting; NDJSON values that are not JSON-ready.
    odd = [0, 3, 6, 9, 29] if fmt is ExportFormat.CSV else [0, 3, 12, 15, 29]
    assert len(small_chunks) == len(set(small_chunks))
    assert set(small_chunks) == {
        next((first, end) for first, end in small_chunks if first <= ids[i] < end) for i in odd
    }


def test_a_worker_that_cannot_read_the_db_leaves_it_all_to_this_process(
    full_db: Database,
    small_chunks: list[tuple[int, int]],
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    expected = _export_with(full_db, ExportFormat.NDJSON, 0)
    plan = export_module._parallel_plan

    def elsewhere(*args: Any) -> Any:
        planned = plan(*args)
        assert planned is not None
        return (workdir / "missing.db", *planned[1:])

    monkeypatch.setattr(export_module, "_parallel_plan", elsewhere)
    assert _export_with(full_db, ExportFormat.NDJSON, 2) == expected
    # Every chunk, in this process: the first ones one by one, then the rest in one go.
    assert export_parallel.FALLBACK_STREAK == 3
    assert small_chunks == [(1, 6), (6, 11), (11, 65)]


def test_sparse_event_ids_make_bounded_chunks_in_order() -> None:
    connection = sqlite3.connect(":memory:")
    connection.execute("CREATE TABLE token_estimation_v2_events (event_id INTEGER PRIMARY KEY)")
    ids = [*range(1, 101), *range(10**9, 10**9 + 1000), 2 * 10**12, *range(5000, 5003)]
    connection.executemany("INSERT INTO token_estimation_v2_events VALUES (?)", [(i,) for i in ids])
    chunks = export_parallel.plan_chunks(connection, 64)
    covered = [i for first, end in chunks for i in sorted(ids) if first <= i < end]
    assert covered == sorted(ids)
    assert all(a_end <= b_first for (_, a_end), (b_first, _) in itertools.pairwise(chunks))
    assert max(sum(first <= i < end for i in ids) for first, end in chunks) <= 2 * 64
    assert len(chunks) <= 2 * len(ids) // 64 + 3
    dense = sqlite3.connect(":memory:")
    dense.execute("CREATE TABLE token_estimation_v2_events (event_id INTEGER PRIMARY KEY)")
    dense.executemany(
        "INSERT INTO token_estimation_v2_events VALUES (?)", [(i,) for i in range(7, 207)]
    )
    assert export_parallel.plan_chunks(dense, 64) == [(7, 71), (71, 135), (135, 199), (199, 207)]
    empty = sqlite3.connect(":memory:")
    empty.execute("CREATE TABLE token_estimation_v2_events (event_id INTEGER PRIMARY KEY)")
    assert export_parallel.plan_chunks(empty, 64) == []


@pytest.mark.parametrize("fmt", list(ExportFormat))
def test_workers_write_through_file_descriptors(
    full_db: Database, small_chunks: list[tuple[int, int]], workdir: Path, fmt: ExportFormat
) -> None:
    expected = _export_with(full_db, fmt, 0)

    def direct(out: TextIO) -> None:
        export_telemetry(full_db, out, fmt, ExportFilters(), workers=2, write_to_descriptor=True)

    # A file and a pipe (spliced into; a thread reads the pipe), a non-UTF-8 stream.
    path = workdir / "direct.out"
    with path.open("w", encoding="utf-8", newline="") as handle:
        direct(handle)
    assert path.read_text(encoding="utf-8") == expected
    read_end, write_end = os.pipe()
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(_read_all(read_end)))
    reader.start()
    with open(write_end, "w", encoding="utf-8", newline="") as pipe:
        direct(pipe)
    reader.join()
    assert b"".join(received).decode() == expected
    latin = workdir / "latin.out"
    with latin.open("w", encoding="latin-1", newline="") as handle:
        direct(handle)
    assert latin.read_text(encoding="latin-1") == expected
    # O_APPEND refuses splice(): the chunks are copied instead.
    appended = workdir / "appended.out"
    appended.write_text("before\n")
    with appended.open("a", encoding="utf-8", newline="") as handle:
        direct(handle)
    assert appended.read_text(encoding="utf-8") == "before\n" + expected


def _read_all(descriptor: int) -> bytes:
    with open(descriptor, "rb") as pipe:
        return pipe.read()


def test_progress_is_reported_chunk_by_chunk(
    full_db: Database, small_chunks: list[tuple[int, int]]
) -> None:
    seen: list[tuple[int, int | None]] = []
    out = io.StringIO()
    result = export_telemetry(
        full_db,
        out,
        ExportFormat.CSV,
        ExportFilters(),
        progress=lambda done, total: seen.append((done, total)),
        workers=2,
    )
    assert result.rows == 64
    assert [done for done, _ in seen] == [*range(5, 64, 5), 64]
    assert {total for _, total in seen} == {64}


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[subprocess.Popen[bytes]]:
    """The worker processes an export starts."""
    processes: list[subprocess.Popen[bytes]] = []
    start = export_parallel._start_worker

    def recording() -> subprocess.Popen[bytes]:
        processes.append(start())
        return processes[-1]

    monkeypatch.setattr(export_parallel, "_start_worker", recording)
    return processes


def _fake_worker(workdir: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    script = workdir / "fake_worker.py"
    script.write_text("import os, struct, sys\n" + body)
    monkeypatch.setattr(export_parallel, "WORKER_SCRIPT", script)


def _leftovers(workdir: Path) -> list[str]:
    return sorted(p.name for p in workdir.iterdir() if "telemetry.csv" in p.name)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("os._exit(4)", r"an export worker (exited at start|stopped before .*) \(status 4\)"),
        ("sys.stdin.read()\nsys.exit(3)", r"stopped before its chunks were done \(status 3\)"),
        (
            "sys.stdin.read()\n"
            "msg = b'Traceback: boom'\n"
            "sys.stdout.buffer.write(struct.pack('<cIQ', b'E', 0, len(msg)) + msg)\n",
            "an export worker failed:\nTraceback: boom",
        ),
        (
            "sys.stdin.read()\n"
            "sys.stdout.buffer.write(struct.pack('<cIQ', b'D', 1, 100) + b'partial')\n",
            "stopped before its chunks were done",
        ),
    ],
)
def test_a_failed_worker_leaves_no_file_and_no_process(
    full_db: Database,
    small_chunks: list[tuple[int, int]],
    started: list[subprocess.Popen[bytes]],
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
    body: str,
    message: str,
) -> None:
    _fake_worker(workdir, monkeypatch, body)
    target = workdir / "telemetry.csv"
    with pytest.raises(export_parallel.WorkerFailed, match=message):
        export_to_file(full_db, target, ExportFormat.CSV, ExportFilters(), workers=2)
    assert _leftovers(workdir) == []
    assert started
    assert all(process.returncode is not None for process in started)


def test_interrupting_a_parallel_export_stops_the_workers(
    full_db: Database,
    small_chunks: list[tuple[int, int]],
    started: list[subprocess.Popen[bytes]],
    workdir: Path,
) -> None:
    target = workdir / "telemetry.csv"
    target.write_text("previous export\n")

    def interrupt(done: int, total: int | None) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_to_file(
            full_db, target, ExportFormat.NDJSON, ExportFilters(), progress=interrupt, workers=2
        )
    assert target.read_text() == "previous export\n"
    assert _leftovers(workdir) == ["telemetry.csv"]
    assert len(started) == 2
    assert all(process.returncode is not None for process in started)


def test_workers_are_used_only_for_large_sqlite_exports(
    full_db: Database, started: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_parallel, "available_cores", lambda: 2)
    _export(full_db)
    assert started == []  # 64 rows: below PARALLEL_MIN_ROWS
    monkeypatch.setattr(export_module, "PARALLEL_MIN_ROWS", 60)
    _export(full_db, run_ids=(V4_RUN,))
    assert started == []  # the filter selects too few
    _export(full_db)
    assert len(started) == 1  # one chunk of the default size: one worker
    monkeypatch.setattr(export_parallel, "available_cores", lambda: 1)
    _export(full_db)
    assert len(started) == 1


def test_cli_export_to_stdout_through_workers(
    cli: CliRunner,
    full_db: Database,
    small_chunks: list[tuple[int, int]],
    started: list[subprocess.Popen[bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    expected = _export_with(full_db, ExportFormat.NDJSON, 0)
    monkeypatch.setattr(export_module, "PARALLEL_MIN_ROWS", 1)
    monkeypatch.setattr(export_parallel, "available_cores", lambda: 2)
    result = cli("telemetry", "export", "--db", "seed", "--format", "ndjson", "-q")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == expected
    assert len(started) == 2


def test_the_worker_imports_neither_autopack_nor_sqlalchemy() -> None:
    # A fresh interpreter: its memory counts alongside the parent's, so it must stay small.
    code = (
        "import runpy, sys; runpy.run_path(sys.argv[1], run_name='worker'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('autopack', 'sqlalchemy', 'pydantic', 'typer', 'rich')))"
    )
    done = subprocess.run(
        [sys.executable, "-P", "-c", code, str(export_parallel.WORKER_SCRIPT)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "[]"


def test_postgres_exports_in_one_process(
    cli: CliRunner, postgres_url: str, started: list[subprocess.Popen[bytes]]
) -> None:
    assert cli("db", "init", "--database-url", postgres_url, "-q").exit_code == 0
    db = open_rw(postgres_url)
    try:
        assert import_files(db, [SAMPLE_LOG]).totals.imported == 60
        for fmt in ExportFormat:
            assert _export_with(db, fmt, 2) == _export_with(db, fmt, 0)
    finally:
        db.close()
    assert started == []


# --- worker processes: when they are not used, and what they must not change ----------------


def _journal_mode(path: Path) -> str:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return str(connection.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        connection.close()


def test_a_db_in_rollback_journal_mode_is_exported_in_one_process(
    full_db: Database,
    small_chunks: list[tuple[int, int]],
    started: list[subprocess.Popen[bytes]],
    workdir: Path,
) -> None:
    # There a writer waiting to commit keeps new readers out: the workers, starting to read
    # after this process, would fail with "database is locked" where one long read works.
    path = full_db.target.sqlite_path
    assert path is not None
    assert _journal_mode(path) == "wal"
    expected = {fmt: _export_with(full_db, fmt, 2) for fmt in ExportFormat}
    assert len(started) == 4  # WAL: the workers ran
    copy = workdir / "rollback.db"
    source, target = sqlite3.connect(path), sqlite3.connect(copy)
    source.backup(target)
    assert target.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"
    source.close()
    target.close()
    db = open_database(resolve_target(None, f"sqlite:///{copy}"), OpenMode.READ_ONLY)
    try:
        for fmt in ExportFormat:
            assert _export_with(db, fmt, 2) == expected[fmt]
    finally:
        db.close()
    assert len(started) == 4  # none more
    assert _journal_mode(copy) == "delete"


def _quoting_writer_of_python_3_13(monkeypatch: pytest.MonkeyPatch) -> None:
    """csv.writer quoting a cell that holds "\\r", as Python 3.13's does (the 3.11 module
    does so when "\\r" is in the line terminator)."""
    real = csv.writer

    def writer(stream: Any, **options: Any) -> Any:
        return real(stream, **{**options, "lineterminator": "\r\n"})

    monkeypatch.setattr(csv, "writer", writer)


def _csv_job(layout: list[str], texts: list[str], specials_per_row: int) -> export_worker.Job:
    return {
        "database": "",
        "busy_timeout_ms": 0,
        "sql": "",
        "layout": layout,
        "codes": [None] * len(layout),
        "texts": texts,
        "csv_specials_per_row": specials_per_row,
        "chunks": [],
    }


def test_the_worker_asks_the_csv_module_which_cells_need_quotes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Python 3.13 began to quote a cell holding "\r": a copied rule would miss it.
    _quoting_writer_of_python_3_13(monkeypatch)
    job = _csv_job([export_worker.SQL_TEXT, export_worker.CSV_CELL], ["", ",", "\n"], 2)
    formatter = export_worker.Formatter(job)
    assert formatter.csv_rule is not None
    assert "\r" in formatter.csv_rule.special
    # A cell the database wrote raw holds "\r": the chunk falls back.
    assert formatter.format([(b"one\rtwo", b"x")]) is None
    # A cell the worker formats is quoted as csv.writer quotes it.
    assert formatter.format([(b"x", b"one\rtwo")]) == b'x,"one\rtwo"\n'


def test_the_worker_quotes_csv_cells_as_the_csv_module_does() -> None:
    # The characters probed when a worker starts, and every other one up to U+3000 and a
    # few beyond: csv.writer quotes a cell for none outside the probe, so none can be missed.
    rule = export_worker.CsvRule()
    probed = set(export_worker.QUOTING_PROBE)
    formatter = export_worker.Formatter(
        _csv_job([export_worker.SQL_TEXT], ["a,", ",b\n"], 3)  # a cell the database wrote
    )
    quoted: set[str] = set()
    for char in [*map(chr, range(0x3000)), "\ufeff", "\ufffd", "\U0001f600", "\U0010ffff"]:
        text = f"x{char}y"
        buffer = io.StringIO()
        export_worker.csv_writer(buffer).writerow(["a", text, "b"])
        expected = buffer.getvalue()
        if expected != f"a,{text},b\n":
            quoted.add(char)
        assert f"a,{rule.cell(text.encode())[0].decode()},b\n" == expected, repr(char)
        assert formatter.format([(text.encode(),)]) in (None, expected.encode()), repr(char)
    assert quoted <= probed
    assert quoted == set(rule.special)
    assert {",", '"', "\n"} <= quoted


@pytest.mark.parametrize("fmt", list(ExportFormat))
def test_a_real_at_the_integer_limit_comes_out_as_in_one_process(
    full_db: Database, small_chunks: list[tuple[int, int]], fmt: ExportFormat
) -> None:
    # SQLite keeps -2**63 as a REAL in an INTEGER column; CAST makes it an equal integer.
    _set_raw(full_db, 10, "actual_max_tokens = ?", -(2.0**63))
    _set_raw(full_db, 20, "selected_budget = ?", -(2.0**63))
    expected = _export_with(full_db, fmt, 0)
    assert expected.count("-9.223372036854776e+18") == 2
    assert _export_with(full_db, fmt, 2) == expected
    assert len(small_chunks) == 2


@pytest.mark.parametrize("fmt", list(ExportFormat))
def test_categories_that_are_not_text_come_out_as_they_are(
    full_db: Database, small_chunks: list[tuple[int, int]], fmt: ExportFormat
) -> None:
    texts = {int(r["event_id"]): str(r["category"]) for r in event_rows(full_db)}
    with full_db.engine.begin() as connection:
        connection.exec_driver_sql(
            "UPDATE token_estimation_v2_events SET category = CAST(category AS BLOB)"
        )
    every_blob = _export_with(full_db, fmt, 0)
    assert _export_with(full_db, fmt, 2) == every_blob
    assert _export_with(full_db, fmt, 2, categories=("tests",)) == _export_with(
        full_db, fmt, 0, categories=("tests",)
    )
    # BLOBs, a number and text side by side: a category that is not text is its own
    # spelling, which no --category names.
    with full_db.engine.begin() as connection:
        connection.exec_driver_sql(
            "UPDATE token_estimation_v2_events SET category = CAST(category AS TEXT) "
            "WHERE event_id > 10"
        )
        connection.exec_driver_sql(
            "UPDATE token_estimation_v2_events SET category = 7 WHERE event_id = 12"
        )
    mixed = _export_with(full_db, fmt, 0)
    assert _export_with(full_db, fmt, 2) == mixed
    selected = _export_with(full_db, fmt, 0, categories=("tests",))
    assert _export_with(full_db, fmt, 2, categories=("tests",)) == selected
    assert [int(row["event_id"]) for row in _rows_of(fmt, selected)] == [
        i for i, category in texts.items() if i > 12 and normalize_category(category) == "tests"
    ]


def test_workers_that_cannot_start_leave_the_export_to_this_process(
    full_db: Database,
    small_chunks: list[tuple[int, int]],
    started: list[subprocess.Popen[bytes]],
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Too many open files (EMFILE) or processes (EAGAIN): not a write error of --output.
    expected = _export_with(full_db, ExportFormat.CSV, 0)
    start = export_parallel._start_worker

    def second_fails() -> subprocess.Popen[bytes]:
        if started:
            raise OSError(errno.EMFILE, "Too many open files")
        return start()

    monkeypatch.setattr(export_parallel, "_start_worker", second_fails)
    target = workdir / "telemetry.csv"
    seen: list[int] = []
    result = export_to_file(
        full_db,
        target,
        ExportFormat.CSV,
        ExportFilters(),
        workers=2,
        progress=lambda done, total: seen.append(done),
    )
    assert target.read_bytes() == expected.encode()  # one header, every row once
    assert result.rows == 64
    assert seen == [64]
    assert small_chunks == [(1, 65)]  # all of it in this process, in one go
    assert len(started) == 1
    assert started[0].returncode is not None


def test_a_run_of_fallbacks_leaves_the_rest_to_this_process(
    full_db: Database,
    small_chunks: list[tuple[int, int]],
    started: list[subprocess.Popen[bytes]],
    workdir: Path,
) -> None:
    def export(where: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Progress and the chunks in this process; into a stream, then a file (written
        through its descriptor: the rest must still come after the chunks written there)."""
        with full_db.engine.begin() as connection:
            connection.exec_driver_sql("UPDATE token_estimation_v2_events SET stop_reason = NULL")
            connection.exec_driver_sql(
                f"UPDATE token_estimation_v2_events SET stop_reason = 'a,b' WHERE {where}"
            )
        expected = _export_with(full_db, ExportFormat.CSV, 0)
        small_chunks.clear()
        seen: list[int] = []
        out = io.StringIO()
        export_telemetry(
            full_db,
            out,
            ExportFormat.CSV,
            ExportFilters(),
            workers=2,
            progress=lambda done, total: seen.append(done),
        )
        assert out.getvalue() == expected
        in_stream = list(small_chunks)
        target = workdir / "telemetry.csv"
        export_to_file(full_db, target, ExportFormat.CSV, ExportFilters(), workers=2)
        assert target.read_bytes() == expected.encode()
        assert small_chunks == in_stream * 2
        assert all(process.returncode is not None for process in started)
        return seen, in_stream

    # A cell to quote in every row: two chunks fall back, the third starts the rest here.
    assert export("1") == ([5, 10, 64], [(1, 6), (6, 11), (11, 65)])
    # After chunks from the workers.
    assert export("event_id >= 21") == ([*range(5, 31, 5), 64], [(21, 26), (26, 31), (31, 65)])
    # Fallbacks that are not three in a row: each chunk on its own.
    assert export("event_id < 11 OR event_id BETWEEN 16 AND 25") == (
        [*range(5, 64, 5), 64],
        [(1, 6), (6, 11), (16, 21), (21, 26)],
    )


@pytest.mark.parametrize("fmt", list(ExportFormat))
def test_workers_write_through_the_text_stream_they_are_given(
    full_db: Database, small_chunks: list[tuple[int, int]], workdir: Path, fmt: ExportFormat
) -> None:
    # Its file descriptor only when the caller says so: a stream may translate newlines or
    # have a write() of its own.
    class Upper(io.TextIOWrapper):
        def write(self, text: str) -> int:
            return super().write(text.upper())

    outputs: dict[str, list[bytes]] = {"crlf": [], "upper": []}
    for workers in (0, 2):
        crlf = workdir / f"crlf{workers}.out"
        with crlf.open("w", encoding="utf-8", newline="\r\n") as handle:
            export_telemetry(full_db, handle, fmt, ExportFilters(), workers=workers)
        outputs["crlf"].append(crlf.read_bytes())
        upper = workdir / f"upper{workers}.out"
        with Upper(upper.open("wb"), encoding="utf-8", newline="") as stream:
            export_telemetry(full_db, stream, fmt, ExportFilters(), workers=workers)
        outputs["upper"].append(upper.read_bytes())
    assert outputs["crlf"][1] == outputs["crlf"][0]
    assert outputs["crlf"][0].count(b"\r\n") == outputs["crlf"][0].count(b"\n") >= 64
    assert outputs["upper"][1] == outputs["upper"][0] == outputs["upper"][0].upper()


# --- property: the workers write the bytes one process writes ---------------------------------

_TIMESTAMP_COLUMNS = ("timestamp", "created_at")
_EDITABLE = [name for name in EVENT_COLUMNS if name != "event_id"]


# Any value of any storage class, in any column.
_ANY_TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        ["", ",", '"', "\n", "\r", "\x00", "a,b", 'q"q', "é✓", "\u2028", "null", "1", " 5 ", "1e5"]
    ),
)
_ANY_INT = st.one_of(st.integers(-5, 10), st.integers(-(2**63), 2**63 - 1))
_ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True)
_ANY_VALUE = st.one_of(_ANY_INT, _ANY_FLOAT, _ANY_TEXT, st.binary(max_size=6))
"""Any value but NULL: NULL only where the column allows it."""


def _any_value_for(name: str) -> st.SearchStrategy[Any]:
    if name in _TIMESTAMP_COLUMNS:
        stamps = ["2025-12-29 20:18:40.123456", "2025-12-29 20:18:40", "2025-12-29T20:18:40"]
        strategy = st.one_of(st.sampled_from([*stamps, "2025-12-29", "", "x y"]), _ANY_VALUE)
    elif name in BOOLEAN_COLUMNS:
        strategy = st.one_of(st.sampled_from([0, 1, 2, "true", 0.5, -1, 1.0]), _ANY_VALUE)
    elif name == "deliverables_json":
        lists = ['["a.py"]', "[]", '{"a": 1}', "not json", "[1, 2.5, null, true]", "[1e400]"]
        strategy = st.one_of(st.sampled_from([*lists, '["x,y", "q\\"q"]', "3"]), _ANY_VALUE)
    elif name == "category":
        strategy = st.one_of(st.sampled_from(["tests", "testing", "docs", "Tests "]), _ANY_VALUE)
    elif name in FLOAT_COLUMNS:
        strategy = st.one_of(_ANY_FLOAT, _ANY_VALUE)
    elif name in INTEGER_COLUMNS:
        strategy = st.one_of(_ANY_INT, _ANY_VALUE)
    else:
        strategy = st.one_of(_ANY_TEXT, _ANY_VALUE)
    return st.one_of(st.none(), strategy) if EVENTS.c[name].nullable else strategy


# Well-typed rows: the fast path's usual diet.
_TIMES = st.datetimes(min_value=datetime(2025, 12, 29), max_value=datetime(2025, 12, 31))
_UTF8 = st.text(st.characters(codec="utf-8"), max_size=10)


def _typed_value_for(name: str) -> st.SearchStrategy[Any]:
    strategy: st.SearchStrategy[Any]
    if name in _TIMESTAMP_COLUMNS:
        strategy = _TIMES.map(lambda t: t.strftime("%Y-%m-%d %H:%M:%S.%f"))
    elif name in BOOLEAN_COLUMNS:
        strategy = st.sampled_from([0, 1])
    elif name == "deliverables_json":
        items = st.one_of(_UTF8, st.integers(), st.floats(allow_nan=False), st.none())
        strategy = st.lists(items, max_size=4).map(json.dumps)
    elif name == "category":
        strategy = st.sampled_from(["tests", "testing", "docs", "documentation", "Tests"])
    elif name == "complexity":
        strategy = st.sampled_from(["low", "medium", "high"])
    elif name in FLOAT_COLUMNS:
        strategy = st.floats()
    elif name in INTEGER_COLUMNS:
        strategy = st.integers(-(2**63), 2**63 - 1)
    else:
        strategy = _UTF8
    return st.one_of(st.none(), strategy) if EVENTS.c[name].nullable else strategy


_BASE_ROW: dict[str, Any] = {
    "phase_id": "p1",
    "timestamp": "2025-12-29 20:18:40.123456",
    "category": "tests",
    "complexity": "low",
    "deliverable_count": 2,
    "deliverables_json": '["a.py"]',
    "predicted_output_tokens": 10,
    "actual_output_tokens": 20,
    "selected_budget": 4096,
    "success": 1,
    "truncated": 0,
    "model": "m",
    "is_truncated_output": 0,
    "created_at": "2025-12-29 20:18:41.000000",
}
"""What a row holds where the strategy draws nothing (the NOT NULL columns)."""
_ANY_ROW = st.fixed_dictionaries(
    {}, optional={name: _any_value_for(name) for name in _EDITABLE}
).map(lambda row: {**_BASE_ROW, **row})
_TYPED_ROW = st.fixed_dictionaries(
    {name: _typed_value_for(name) for name in _EDITABLE if name != "run_id"}
)
_PROVENANCE = st.fixed_dictionaries(
    {"source": st.one_of(st.sampled_from(["drain", "import"]), _ANY_TEXT)},
    optional={
        "coefficient_set": st.one_of(st.none(), _ANY_TEXT, st.binary(max_size=4)),
        "coefficient_set_hash": st.one_of(st.none(), _ANY_TEXT),
        "drain_result_id": st.one_of(st.none(), _ANY_INT, _ANY_FLOAT, _ANY_TEXT),
        "source_file": st.one_of(st.none(), _ANY_TEXT),
        "source_line": st.one_of(st.none(), _ANY_INT, _ANY_FLOAT),
    },
)
_FILTERS = st.one_of(
    st.just(ExportFilters()),
    st.builds(
        ExportFilters,
        success_only=st.booleans(),
        exclude_truncated=st.booleans(),
        run_ids=st.lists(st.sampled_from(["r1", "r2", "o'q"]), max_size=2).map(tuple),
        categories=st.lists(st.sampled_from(["tests", "docs", "x'y"]), max_size=2).map(tuple),
        complexities=st.lists(st.sampled_from(["low", "HIGH "]), max_size=2).map(tuple),
        since=st.one_of(st.none(), _TIMES),
        until=st.none(),
    ),
)
_RANDOM_DB_NUMBERS = itertools.count()


@pytest.fixture
def template_db(cli: CliRunner, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty DB made by `db init` (WAL mode, so the workers run), and chunks of 3 rows."""
    path = workdir / "template.db"
    init_db(cli, path)
    assert _journal_mode(path) == "wal"
    monkeypatch.setattr(export_parallel, "CHUNK_ROWS", 3)
    return path


def _same_bytes_both_ways(
    template: Path,
    rows: list[dict[str, Any]],
    provenance: dict[int, dict[str, Any]],
    filters: ExportFilters,
    fmt: ExportFormat,
    started: list[subprocess.Popen[bytes]],
) -> None:
    path = template.with_name(f"random{next(_RANDOM_DB_NUMBERS)}.db")
    try:
        if not _fill(template, path, rows, provenance):
            reject()  # a NOT NULL or UNIQUE constraint refused a row
        db = open_database(resolve_target(None, f"sqlite:///{path}"), OpenMode.READ_ONLY)
        try:
            workers_before = len(started)
            expected, written = (_attempt(db, fmt, filters, workers) for workers in (0, 2))
            if isinstance(expected, str):
                assert written == expected
                # Workers ran, unless a category holds a NUL (SQL text cannot hold it).
                nul = any("\x00" in str(row.get("category")) for row in rows)
                assert len(started) > workers_before or nul
            else:
                # Both fail; with two bad values, not always on the same one first (one
                # process formats a chunk before it reads the next, the other reads ahead).
                assert not isinstance(written, str)
        finally:
            db.close()
    finally:
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)


def _fill(
    template: Path, path: Path, rows: list[dict[str, Any]], provenance: dict[int, dict[str, Any]]
) -> bool:
    """A copy of the template (WAL mode) holding these rows, as they are; False if refused."""
    with contextlib.closing(sqlite3.connect(path)) as connection:  # no foreign keys: any run
        with contextlib.closing(sqlite3.connect(template)) as source:
            source.backup(connection)
        assert connection.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
        try:
            ids = []
            for row in rows:
                names = list(row)
                cursor = connection.execute(
                    f"INSERT INTO token_estimation_v2_events ({','.join(names)}) "
                    f"VALUES ({','.join('?' * len(names))})",
                    [row[name] for name in names],
                )
                ids.append(cursor.lastrowid)
            for index, facts in provenance.items():
                if index < len(ids):
                    names = ["event_id", *facts]
                    connection.execute(
                        f"INSERT INTO autopack_telemetry_provenance ({','.join(names)}) "
                        f"VALUES ({','.join('?' * len(names))})",
                        [ids[index], *facts.values()],
                    )
        except sqlite3.IntegrityError:
            return False
        connection.commit()
    return True


def _attempt(
    db: Database, fmt: ExportFormat, filters: ExportFilters, workers: int
) -> str | Exception:
    """The text written, or the error raised."""
    out = io.StringIO()
    try:
        export_telemetry(db, out, fmt, filters, allow_empty_db=True, workers=workers)
    except Exception as exc:  # a bad value fails the export both ways
        return exc
    return out.getvalue()


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    rows=st.lists(_ANY_ROW, min_size=1, max_size=10),
    provenance=st.dictionaries(st.integers(0, 9), _PROVENANCE, max_size=4),
    filters=_FILTERS,
    run_id=st.sampled_from(["r1", "r2", "o'q"]),
    streak=st.sampled_from([1, 3, 10**9]),
    fmt=st.sampled_from(ExportFormat),
)
def test_workers_write_what_one_process_writes_for_any_values(
    template_db: Path,
    started: list[subprocess.Popen[bytes]],
    monkeypatch: pytest.MonkeyPatch,
    rows: list[dict[str, Any]],
    provenance: dict[int, dict[str, Any]],
    filters: ExportFilters,
    run_id: str,
    streak: int,
    fmt: ExportFormat,
) -> None:
    monkeypatch.setattr(export_parallel, "FALLBACK_STREAK", streak)
    rows = [{"run_id": run_id, **row} for row in rows]
    _same_bytes_both_ways(template_db, rows, provenance, filters, fmt, started)


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    rows=st.lists(st.tuples(st.sampled_from(["r1", "r2"]), _TYPED_ROW), min_size=1, max_size=12),
    provenance=st.dictionaries(st.integers(0, 11), _PROVENANCE, max_size=6),
    filters=_FILTERS,
    fmt=st.sampled_from(ExportFormat),
)
def test_workers_write_what_one_process_writes_for_typed_rows(
    template_db: Path,
    started: list[subprocess.Popen[bytes]],
    rows: list[tuple[str, dict[str, Any]]],
    provenance: dict[int, dict[str, Any]],
    filters: ExportFilters,
    fmt: ExportFormat,
) -> None:
    typed = [{"run_id": run_id, **row} for run_id, row in rows]
    _same_bytes_both_ways(template_db, typed, provenance, filters, fmt, started)
