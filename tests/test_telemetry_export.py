"""`telemetry export`: every column, filters, streaming, guards, and a lossless round trip."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet
import pytest

from autopack.db.engine import Database, OpenMode, open_database
from autopack.errors import ConfigError, GuardError, SchemaError
from autopack.estimator import deliverable_count_bucket, normalize_category
from autopack.settings import resolve_target
from autopack.telemetry import export as export_module
from autopack.telemetry import export_to
from autopack.telemetry.columns import EVENT_COLUMNS, RECORD_NAMES, ExportFormat, names_for
from autopack.telemetry.export import ExportFilters
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
    out = io.BytesIO()
    export_to(db, out, fmt, ExportFilters(**filters))
    return out.getvalue().decode("utf-8")


def _csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _ndjson_rows(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def _rows_in(path: Path, fmt: ExportFormat) -> list[dict[str, Any]]:
    if fmt is ExportFormat.PARQUET:
        return list(pyarrow.parquet.read_table(path).to_pylist())
    reader = _csv_rows if fmt is ExportFormat.CSV else _ndjson_rows
    return list(reader(path.read_text()))


# --- what is written ----------------------------------------------------------------------


def test_csv_has_every_column_then_provenance_then_derived(full_db: Database) -> None:
    rows = _csv_rows(_export(full_db))
    assert list(rows[0]) == list(RECORD_NAMES)
    assert RECORD_NAMES[: len(EVENT_COLUMNS)] == EVENT_COLUMNS
    assert len(rows) == 64
    assert [int(r["event_id"]) for r in rows] == list(range(1, 65))
    drained = rows[0]
    assert drained["source"] == "drain"
    assert drained["coefficient_set"] == "default"
    assert drained["timestamp"][10] == "T"
    assert len(drained["timestamp"]) == 32  # microseconds, then the UTC offset
    assert drained["timestamp"].endswith("+00:00")
    bare = rows[3]
    assert bare["source"] == ""
    assert bare["sample_key"] == ""
    assert bare["success"] == "true"
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
    assert list(rows[0]) == list(tuple(names_for(ExportFormat.NDJSON)))
    assert set(rows[0]) >= ORIGINAL_NDJSON_KEYS
    bare = rows[3]
    assert bare["deliverables"] == ["docs/USAGE.md", 'docs/a, "quoted".md']
    assert bare["success"] is True
    assert bare["underestimated"] is None
    assert bare["smape_percent"] == 0.1 + 0.2
    assert bare["waste_ratio"] == 1 / 3
    assert bare["timestamp"] == "2025-12-29T20:18:40.123456+00:00"
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
    for fmt in (ExportFormat.CSV, ExportFormat.NDJSON):
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
    assert row["deliverable_bucket"] == "unknown"


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
    out = io.BytesIO()
    result = export_to(
        full_db,
        out,
        ExportFormat.NDJSON,
        ExportFilters(),
        progress=lambda d, t: seen.append((d, t)),
    )
    assert result.rows == 64
    done = [done for done, _total in seen]
    assert done == sorted(done)
    assert done[-1] == 64
    assert len(done) >= 64 // 7  # batch by batch, not all at once
    assert {total for _done, total in seen} == {64}


def test_file_export_is_atomic(full_db: Database, workdir: Path) -> None:
    target = workdir / "telemetry.csv"
    target.write_text("previous export\n")

    def explode(done: int, total: int | None) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        export_to(full_db, target, ExportFormat.CSV, ExportFilters(), progress=explode)
    assert target.read_text() == "previous export\n"
    assert sorted(p.name for p in workdir.iterdir() if "telemetry.csv" in p.name) == [
        "telemetry.csv"
    ]
    result = export_to(full_db, target, ExportFormat.CSV, ExportFilters())
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
        export_to(full_db, workdir / "t.csv", ExportFormat.CSV, ExportFilters())
    assert [p.name for p in workdir.iterdir() if p.name.endswith((".csv", ".tmp"))] == []


def test_refused_output_paths(full_db: Database, workdir: Path) -> None:
    for path, message in (
        (workdir, "is a directory"),
        (workdir / "missing" / "x.csv", "does not exist"),
        (workdir / "autopack_telemetry_seed.db", "is the database being exported"),
    ):
        with pytest.raises(ConfigError, match=message):
            export_to(full_db, path, ExportFormat.CSV, ExportFilters())


# --- guards -----------------------------------------------------------------------------------


def test_empty_db_is_refused_unless_allowed(cli: CliRunner, workdir: Path) -> None:
    url = init_db(cli, workdir / "empty.db")
    db = open_database(resolve_target(None, url), OpenMode.READ_ONLY)
    try:
        with pytest.raises(GuardError, match="empty"):
            _export(db)
        out = io.BytesIO()
        result = export_to(db, out, ExportFormat.CSV, ExportFilters(), allow_empty_db=True)
        assert result.rows == 0
        assert out.getvalue().decode() == ",".join(f'"{n}"' for n in RECORD_NAMES) + "\n"
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
    export_to(full_db, exported, fmt, ExportFilters())
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
        export_to(other, again, fmt, ExportFilters())
        before, after = _rows_in(exported, fmt), _rows_in(again, fmt)
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
    export_to(full_db, exported, ExportFormat.CSV, ExportFilters(run_ids=(V4_RUN,)))
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
    assert all(r["success"] == "true" and r["truncated"] == "false" for r in rows)
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
    assert doc["columns"] == list(RECORD_NAMES)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--json"], "--json prints a summary on stdout"),
        (["--since", "yesterday"], "--since 'yesterday' is not a date"),
        (["--since", "2025-12-30", "--until", "2025-12-29"], "is not before --until"),
        (["--complexity", "huge"], "unknown complexity 'huge'"),
        (["--format", "xml"], "invalid value for '--format' / '-f': 'xml' is not one of"),
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
    assert allowed.stdout == ",".join(f'"{n}"' for n in RECORD_NAMES) + "\n"
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
                fmt: _export(db, fmt, since=datetime(2025, 12, 1))
                for fmt in (ExportFormat.CSV, ExportFormat.NDJSON)
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


def test_text_that_is_not_utf8_is_written_with_replacement_characters(
    seed_db: Database,
) -> None:
    event_id = add_bare_row(seed_db)
    with seed_db.engine.begin() as connection:
        connection.exec_driver_sql(
            "UPDATE token_estimation_v2_events SET model = CAST(x'6dff6d' AS TEXT) "
            "WHERE event_id = ?",
            (event_id,),
        )
    out = io.BytesIO()
    result = export_to(seed_db, out, ExportFormat.NDJSON)
    (row,) = _ndjson_rows(out.getvalue().decode("utf-8"))
    assert row["model"] == "m\ufffdm"
    assert result.replaced_invalid_text == 1
