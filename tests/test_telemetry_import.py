"""`telemetry import`: the original's log lines and NDJSON export, idempotent, key-safe."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from autopack.cli.app import main
from autopack.db.engine import Database
from autopack.errors import ConfigError
from autopack.telemetry.import_sources import SOURCE_IMPORT_CONTAMINATED
from autopack.telemetry.importer import (
    PLACEHOLDER_MARK,
    ImportOptions,
    file_run_id,
    import_files,
    parse_utc_offset,
)
from autopack.telemetry.logline import LegacyV1Line, LogLineError, LogSample, parse_log_line
from tests.conftest import CliRunner, build_original_db
from tests.telemetry_io_helpers import (
    EVENTS,
    PHASES,
    PROVENANCE,
    RUNS,
    SAMPLE_CSV,
    SAMPLE_LOG,
    V4_PHASES,
    V4_RUN,
    add_drained_rows,
    count,
    event_rows,
    foreign_key_problems,
    init_db,
    open_rw,
    provenance_rows,
)

FULL = (
    "[2025-12-29 19:40:02] INFO: [TokenEstimationV2] predicted_output=5200 actual_output=1218 "
    "smape=124.1% selected_budget=8192 category=implementation complexity=low deliverables=1 "
    "success=True stop_reason=end_turn truncated=False model=claude-sonnet-4-5"
)


@pytest.fixture
def fresh(cli: CliRunner, workdir: Path) -> Iterator[tuple[str, Database]]:
    url = init_db(cli, workdir / "fresh.db")
    db = open_rw(url)
    yield url, db
    db.close()


# --- the line parser ---------------------------------------------------------------------


def test_full_line_is_read_field_by_field() -> None:
    sample = parse_log_line(FULL)
    assert isinstance(sample, LogSample)
    assert sample.timestamp == datetime(2025, 12, 29, 19, 40, 2)
    assert (sample.predicted_output, sample.actual, sample.contaminated) == (5200, 1218, False)
    assert sample.smape_logged == pytest.approx(124.1)
    assert (sample.selected_budget, sample.category, sample.complexity) == (
        8192,
        "implementation",
        "low",
    )
    assert (sample.deliverables, sample.success, sample.truncated) == (1, True, False)
    assert (sample.stop_reason, sample.model) == ("end_turn", "claude-sonnet-4-5")


def test_python_logging_prefix_and_short_form() -> None:
    line = (
        "2025-12-23 19:47:57,427 - autopack.anthropic_clients - INFO - [TokenEstimationV2] "
        "predicted_output=1500 actual_output=118 smape=170.8% category=testing complexity=medium "
        "deliverables=2 success=False\n"
    )
    sample = parse_log_line(line)
    assert isinstance(sample, LogSample)
    assert sample.timestamp == datetime(2025, 12, 23, 19, 47, 57, 427000)
    assert sample.selected_budget is None
    assert sample.model is None
    assert sample.truncated is None
    assert sample.success is False


def test_fallback_line_is_contaminated() -> None:
    sample = parse_log_line(FULL.replace("actual_output=1218", "actual_total=5000"))
    assert isinstance(sample, LogSample)
    assert sample.contaminated
    assert sample.actual == 5000


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("2025-12-29 INFO starting drain", None),
        ("[TokenEstimationV2] Failed to write DB telemetry: no such table", None),
        (
            "[TokenEstimation] Predicted: 500 output tokens, Actual: 700 output tokens, Error: 40%",
            LegacyV1Line(),
        ),
    ],
)
def test_lines_that_are_not_samples(line: str, expected: object) -> None:
    assert parse_log_line(line) == expected


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (FULL.replace("predicted_output=5200", "predicted_output=abc"), "predicted_output='abc'"),
        (FULL.replace("actual_output=1218 ", ""), "no actual_output"),
        (FULL.replace("success=True", "success=maybe"), "success='maybe'"),
        (FULL + " trailing-junk", "unexpected text"),
        (FULL.replace("model=", "model=a model="), "model appears twice"),
        (FULL.replace("actual_output=1218", "actual_output=1218 actual_total=9"), "both"),
        ("[TokenEstimationV2] actual_output=5", "no predicted_output"),
    ],
)
def test_malformed_sample_lines_say_why(line: str, reason: str) -> None:
    with pytest.raises(LogLineError, match=reason.replace("(", r"\(")):
        parse_log_line(line)


@pytest.mark.parametrize(
    ("text", "hours"),
    [("+08:00", 8), ("-0500", -5), ("+8", 8), ("UTC", 0), ("0", 0), ("+05:30", 5.5)],
)
def test_utc_offsets(text: str, hours: float) -> None:
    assert parse_utc_offset(text) == timedelta(hours=hours)


@pytest.mark.parametrize("text", ["8", "+25:00", "+08:75", "CET", ""])
def test_bad_utc_offsets_are_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_utc_offset(text)


# --- the reference log -------------------------------------------------------------------


def test_reference_log_imports_to_60_rows_that_match_the_parsed_csv(
    fresh: tuple[str, Database], workdir: Path
) -> None:
    _url, db = fresh
    report = import_files(db, [SAMPLE_LOG])
    assert report.totals.imported == 60
    assert report.totals.unparseable == 0
    assert report.totals.skipped == 0
    assert not report.found_problems
    rows = event_rows(db)
    assert len(rows) == 60
    run_id = file_run_id(SAMPLE_LOG.resolve())
    assert {row["run_id"] for row in rows} == {run_id}
    assert report.files[0].placeholder_runs == [run_id]

    with SAMPLE_CSV.open(newline="") as handle:
        expected = [r for r in csv.DictReader(handle) if r["timestamp_local"]]
    by_figures = {
        (r["timestamp_local"], int(r["predicted_output_tokens"]), int(r["actual_output_tokens"])): r
        for r in expected
    }
    for row in rows:
        when = row["timestamp"].strftime("%Y-%m-%d %H:%M:%S")
        reference = by_figures[(when, row["predicted_output_tokens"], row["actual_output_tokens"])]
        assert row["category"] == reference["category"]
        assert row["complexity"] == reference["complexity"]
        assert row["deliverable_count"] == int(reference["deliverable_count"])
        assert row["selected_budget"] == int(reference["selected_budget"])
        assert row["success"] is (reference["success"] == "True")
        assert row["truncated"] is (reference["truncated"] == "True")
        assert row["is_truncated_output"] is row["truncated"]
        assert row["stop_reason"] == reference["stop_reason"]
        assert row["model"] == reference["model"]
        assert row["smape_percent"] == pytest.approx(
            float(reference["smape_percent_recomputed"]), abs=1e-3
        )
        assert row["underestimated"] is (reference["underestimated"] == "True")
        assert row["created_at"] == row["timestamp"]

    provenance = provenance_rows(db)
    assert len(provenance) == 60
    assert {p["source"] for p in provenance.values()} == {"import"}
    assert {p["coefficient_set"] for p in provenance.values()} == {None}
    assert {p["source_file"] for p in provenance.values()} == {str(SAMPLE_LOG.resolve())}
    assert sorted(p["source_line"] for p in provenance.values()) == list(range(1, 61))
    assert len({p["sample_key"] for p in provenance.values()}) == 60
    assert foreign_key_problems(workdir / "fresh.db") == []


def test_placeholders_are_marked_and_never_drainable(fresh: tuple[str, Database]) -> None:
    _url, db = fresh
    import_files(db, [SAMPLE_LOG])
    with db.engine.connect() as connection:
        runs = connection.execute(sa.select(RUNS.c.state, RUNS.c.goal_anchor)).all()
        states = set(connection.execute(sa.select(PHASES.c.state).distinct()).scalars())
        names = set(connection.execute(sa.select(PHASES.c.phase_id)).scalars())
    assert [state for state, _anchor in runs] == ["DONE_SUCCESS"]
    assert runs[0][1].startswith(PLACEHOLDER_MARK)
    assert states == {"SKIPPED"}
    assert names == {f"line-{n}" for n in range(1, 61)}


def test_importing_twice_or_a_copy_adds_nothing(fresh: tuple[str, Database], workdir: Path) -> None:
    _url, db = fresh
    import_files(db, [SAMPLE_LOG])
    again = import_files(db, [SAMPLE_LOG])
    assert (again.totals.imported, again.totals.already_present) == (0, 60)
    copy = workdir / "copy-of-sample.log"
    copy.write_text(SAMPLE_LOG.read_text())
    from_copy = import_files(db, [copy])
    assert (from_copy.totals.imported, from_copy.totals.already_present) == (0, 60)
    assert from_copy.totals.placeholder_runs == 0
    assert count(db, EVENTS) == 60
    assert count(db, RUNS) == 1


def test_dry_run_reports_and_writes_nothing(fresh: tuple[str, Database]) -> None:
    _url, db = fresh
    report = import_files(db, [SAMPLE_LOG], ImportOptions(dry_run=True))
    assert report.dry_run
    assert report.totals.imported == 60
    assert report.totals.placeholder_runs == 1
    assert count(db, EVENTS) == 0
    assert count(db, RUNS) == 0
    assert count(db, PHASES) == 0


# --- malformed, contaminated, short and legacy lines --------------------------------------


MIXED_LOG = "\n".join(
    [
        "[2025-12-24 15:00:00] INFO: starting",  # 1: ordinary output
        FULL,  # 2: good
        FULL.replace("predicted_output=5200", "predicted_output=five"),  # 3: bad number
        "[2025-12-24 15:01:00] WARNING: [TokenEstimationV2] Failed to write DB telemetry: boom",  # 4
        FULL.replace("19:40:02", "19:41:00").replace(
            "actual_output=1218", "actual_total=9000"
        ),  # 5
        "[TokenEstimation] Predicted: 500 output tokens, Actual: 700 output tokens, Error: 40%",  # 6
        "[2025-12-24 15:02:00] INFO: [TokenEstimationV2] predicted_output=3000 actual_output=2500 "
        "category=testing complexity=MEDIUM_complexity deliverables=3 success=True",  # 7: short
        FULL.replace("19:40:02", "19:42:00").replace(" model=claude-sonnet-4-5", " model"),  # 8
        "",  # 9
        "[2025-12-24 15:03:00] INFO: [TokenEstimationV2] predicted_output=3000",  # 10: cut short
    ]
)


def test_malformed_lines_are_counted_with_line_numbers(
    fresh: tuple[str, Database], workdir: Path
) -> None:
    _url, db = fresh
    log = workdir / "mixed.log"
    log.write_text(MIXED_LOG + "\n")
    report = import_files(db, [log])
    (file,) = report.files
    assert [(p.line, p.reason.split(" ")[0]) for p in file.problems] == [
        (3, "predicted_output='five'"),
        (8, "unexpected"),
        (10, "no"),
    ]
    assert file.unparseable == 3
    assert file.skipped == {"contaminated": 1, "legacy_v1": 1}
    assert file.imported == 2
    assert file.records == file.imported + file.already_present + sum(file.skipped.values())
    assert report.found_problems
    short = next(row for row in event_rows(db) if row["predicted_output_tokens"] == 3000)
    assert short["category"] == "testing"
    assert short["complexity"] == "medium"
    assert short["deliverable_count"] == 3
    assert short["selected_budget"] == 0
    assert short["model"] == "unknown"
    assert short["stop_reason"] is None
    assert short["truncated"] is False


def test_contaminated_lines_on_request_are_flagged(
    fresh: tuple[str, Database], workdir: Path
) -> None:
    _url, db = fresh
    log = workdir / "mixed.log"
    log.write_text(MIXED_LOG)
    report = import_files(db, [log], ImportOptions(include_contaminated=True))
    assert report.files[0].skipped == {"legacy_v1": 1}
    provenance = provenance_rows(db)
    (flagged,) = [
        e
        for e in event_rows(db)
        if provenance[e["event_id"]]["source"] == SOURCE_IMPORT_CONTAMINATED
    ]
    assert flagged["actual_output_tokens"] == 9000
    assert flagged["truncated"] is False
    assert flagged["stop_reason"] is None
    # Asking later for the contaminated lines only adds those.
    import_files(db, [log])
    assert count(db, EVENTS) == 3


def test_log_timestamps_offset_and_missing(fresh: tuple[str, Database], workdir: Path) -> None:
    _url, db = fresh
    log = workdir / "times.log"
    payload = FULL.split("INFO: ", 1)[1]
    log.write_text(
        f"[2025-12-29 19:40:02] INFO: {payload}\n"
        f"2025-12-29T19:40:02+01:00 INFO {payload.replace('1218', '1300')}\n"
        f"{payload.replace('1218', '1400')}\n"
    )
    stamp = datetime(2025, 12, 30, 8, 0, 0).timestamp()
    os.utime(log, (stamp, stamp))
    import_files(db, [log], ImportOptions(log_utc_offset=timedelta(hours=8)))
    times = {row["actual_output_tokens"]: row["timestamp"] for row in event_rows(db)}
    assert times[1218] == datetime(2025, 12, 29, 11, 40, 2)  # local +08:00 → UTC
    assert times[1300] == datetime(2025, 12, 29, 18, 40, 2)  # its own offset wins
    assert times[1400] == datetime.fromtimestamp(stamp, UTC).replace(
        tzinfo=None
    )  # no timestamp: the file's mtime


def test_identical_lines_without_timestamps_are_distinct_samples(
    fresh: tuple[str, Database], workdir: Path
) -> None:
    _url, db = fresh
    payload = FULL.split("INFO: ", 1)[1]
    log = workdir / "bare.log"
    log.write_text(f"{payload}\n{payload}\n")
    assert import_files(db, [log]).totals.imported == 2
    assert import_files(db, [log]).totals.imported == 0


def test_a_log_without_samples_finds_problems(fresh: tuple[str, Database], workdir: Path) -> None:
    _url, db = fresh
    log = workdir / "quiet.log"
    log.write_text("nothing to see\n")
    report = import_files(db, [log])
    assert report.totals.records == 0
    assert report.found_problems


# --- the original's NDJSON export ---------------------------------------------------------


def _original(run_id: str, phase_id: str, when: str, **extra: object) -> str:
    record = {
        "run_id": run_id,
        "phase_id": phase_id,
        "timestamp": when,
        "category": "implementation",
        "complexity": "low",
        "deliverable_count": 1,
        "deliverables": ["src/a.py"],
        "predicted_output_tokens": 5200,
        "actual_output_tokens": 1218,
        "selected_budget": 8192,
        "success": True,
        "truncated": False,
        "stop_reason": "end_turn",
        "model": "claude-sonnet-4-5",
        "smape_percent": 124.1,
        "waste_ratio": 4.27,
        "underestimated": False,
    }
    record.update(extra)
    return json.dumps(record)


def test_original_ndjson_attaches_or_creates_placeholders(seed_db: Database, workdir: Path) -> None:
    export = workdir / "export.ndjson"
    export.write_text(
        "\n".join(
            [
                _original(V4_RUN, V4_PHASES[0], "2025-12-29T16:08:06.123456"),
                _original("telemetry-collection-v5", "telemetry-v5-p1", "2025-12-29T19:40:02"),
                _original("telemetry-collection-v5", "telemetry-v5-p2", "2025-12-29T19:41:12"),
                _original(V4_RUN, "telemetry-p99-unknown", "2025-12-29T17:00:00", truncated=True),
            ]
        )
        + "\n"
    )
    report = import_files(seed_db, [export])
    (file,) = report.files
    assert file.format == "ndjson"
    assert (file.imported, file.on_existing_phases, file.on_new_placeholders) == (4, 1, 3)
    file_run = file_run_id(export.resolve())
    assert file.placeholder_runs == ["telemetry-collection-v5", file_run]
    rows = {(r["run_id"], r["phase_id"]): r for r in event_rows(seed_db)}
    attached = rows[(V4_RUN, V4_PHASES[0])]
    assert attached["timestamp"] == datetime(2025, 12, 29, 16, 8, 6, 123456)
    assert attached["deliverables_json"] == '["src/a.py"]'
    assert attached["actual_max_tokens"] is None
    assert attached["smape_percent"] == 124.1
    assert attached["waste_ratio"] == 4.27
    assert attached["created_at"] == attached["timestamp"]
    assert ("telemetry-collection-v5", "telemetry-v5-p2") in rows
    diverted = rows[(file_run, f"{V4_RUN}/telemetry-p99-unknown")]
    assert diverted["truncated"] is True
    assert diverted["is_truncated_output"] is True
    # The real v4 run was not given a phase; the v5 placeholder run was created whole.
    with seed_db.engine.connect() as connection:
        v4_phases = connection.execute(
            sa.select(sa.func.count()).select_from(PHASES).where(PHASES.c.run_id == V4_RUN)
        ).scalar_one()
        v5_state = connection.execute(
            sa.select(RUNS.c.state).where(RUNS.c.id == "telemetry-collection-v5")
        ).scalar_one()
    assert v4_phases == 10
    assert v5_state == "DONE_SUCCESS"
    assert foreign_key_problems(workdir / "autopack_telemetry_seed.db") == []
    assert import_files(seed_db, [export]).totals.imported == 0


def test_original_ndjson_of_rows_already_in_the_db_adds_nothing(
    seed_db: Database, workdir: Path
) -> None:
    add_drained_rows(seed_db)
    export = workdir / "export.ndjson"
    lines = []
    for row in event_rows(seed_db):
        lines.append(
            _original(
                row["run_id"],
                row["phase_id"],
                row["timestamp"].isoformat(),
                predicted_output_tokens=row["predicted_output_tokens"],
                actual_output_tokens=row["actual_output_tokens"],
            )
        )
    export.write_text("\n".join(lines))
    report = import_files(seed_db, [export])
    assert (report.totals.imported, report.totals.already_present) == (0, 3)


def test_bad_ndjson_lines_are_reported_and_the_rest_imported(
    fresh: tuple[str, Database], workdir: Path
) -> None:
    _url, db = fresh
    export = workdir / "bad.ndjson"
    export.write_text(
        "\n".join(
            [
                _original("r1", "p1", "2025-12-29T19:40:02"),
                "{not json",
                "[1, 2]",
                json.dumps({"run_id": "r1", "phase_id": "p2"}),
                _original("r1", "p3", "yesterday"),
                _original("r1", "p4", "2025-12-29T19:40:02", predicted_output_tokens="many"),
                _original("r1", "p5", "2025-12-29T19:40:02", actual_output_tokens=-3),
                _original("r1", "p6", "2025-12-29T19:40:02", success="perhaps"),
                "",
                _original("r1", "p7", "2025-12-29T19:41:02"),
            ]
        )
    )
    report = import_files(db, [export])
    (file,) = report.files
    assert file.imported == 2
    assert [p.line for p in file.problems] == [2, 3, 4, 5, 6, 7, 8]
    reasons = [p.reason for p in file.problems]
    assert reasons[0].startswith("not JSON")
    assert reasons[1] == "not a JSON object"
    assert reasons[2].startswith("missing timestamp, predicted_output_tokens")
    assert "timestamp='yesterday'" in reasons[3]
    assert "predicted_output_tokens='many'" in reasons[4]
    assert "negative" in reasons[5]
    assert "success='perhaps'" in reasons[6]


def test_a_foreign_csv_fails_alone(fresh: tuple[str, Database], workdir: Path) -> None:
    _url, db = fresh
    report = import_files(db, [SAMPLE_CSV, SAMPLE_LOG])
    foreign, log = report.files
    assert foreign.format == "csv"
    assert foreign.error is not None
    assert "not an autopack telemetry CSV export" in foreign.error
    assert log.imported == 60
    assert report.found_problems


# --- through the command line -------------------------------------------------------------


def test_cli_import_on_an_empty_db_then_idempotent(cli: CliRunner, workdir: Path) -> None:
    url = init_db(cli, workdir / "empty.db")
    first = cli("telemetry", "import", "--database-url", url, str(SAMPLE_LOG))
    assert first.exit_code == 0, first.stderr
    assert "imported 60 of 60 samples" in first.stdout  # the report; the panel on stderr
    assert "target database" in first.stderr
    assert "imported" not in first.stderr
    second = cli("telemetry", "import", str(SAMPLE_LOG), "--database-url", url, "--json")
    assert second.exit_code == 0, second.stderr
    doc = json.loads(second.stdout)
    assert doc["target"]["path"] == str(workdir / "empty.db")
    assert doc["dry_run"] is False
    assert doc["totals"]["imported"] == 0
    assert doc["totals"]["already_present"] == 60
    (file,) = doc["files"]
    assert set(file) >= {
        "path",
        "format",
        "records",
        "imported",
        "already_present",
        "on_existing_phases",
        "on_new_placeholders",
        "skipped",
        "unparseable",
        "problems",
        "placeholder_runs",
        "placeholder_phases",
        "error",
    }


def test_cli_import_is_not_gated_by_telemetry_db_enabled(cli: CliRunner, workdir: Path) -> None:
    url = init_db(cli, workdir / "gated.db")
    result = cli(
        "telemetry",
        "import",
        "--database-url",
        url,
        str(SAMPLE_LOG),
        "-q",
        env={"TELEMETRY_DB_ENABLED": "0"},
    )
    assert result.exit_code == 0, result.stderr
    assert "imported 60" in result.stdout


def test_cli_unparseable_lines_exit_1_with_line_numbers(cli: CliRunner, workdir: Path) -> None:
    url = init_db(cli, workdir / "t.db")
    log = workdir / "mixed.log"
    log.write_text(MIXED_LOG)
    result = cli("telemetry", "import", "--database-url", url, str(log), "-q")
    assert result.exit_code == 1
    assert "line 3: predicted_output='five' is not a whole number" in result.stdout
    assert "line 10: no actual_output" in result.stdout
    assert "Traceback" not in result.stderr


def test_cli_missing_file_is_refused_before_touching_the_db(cli: CliRunner, workdir: Path) -> None:
    url = init_db(cli, workdir / "t.db")
    before = (workdir / "t.db").stat().st_mtime_ns
    result = cli("telemetry", "import", "--database-url", url, str(SAMPLE_LOG), "nope.log")
    assert result.exit_code == 2
    assert "error: no such file: nope.log" in result.stderr
    assert "hint:" in result.stderr
    assert (workdir / "t.db").stat().st_mtime_ns == before


def test_cli_import_into_a_db_without_telemetry_tables(cli: CliRunner, workdir: Path) -> None:
    path = workdir / "autopack_legacy.db"
    build_original_db(path, with_telemetry_tables=False)
    result = cli("telemetry", "import", "--db", "legacy", str(SAMPLE_LOG))
    assert result.exit_code == 2
    assert "has no telemetry table (token_estimation_v2_events)" in result.stderr
    assert "autopack db upgrade" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_import_into_an_original_db_needs_the_provenance_table(
    cli: CliRunner, original_db: tuple[Path, dict[str, int]]
) -> None:
    result = cli("telemetry", "import", "--db", "legacy", str(SAMPLE_LOG), "-q")
    assert result.exit_code == 2
    assert "autopack_telemetry_provenance" in result.stderr
    assert "autopack db upgrade" in result.stderr


def test_cli_import_after_upgrading_an_original_db(
    cli: CliRunner, original_db: tuple[Path, dict[str, int]]
) -> None:
    path, _counts = original_db
    assert cli("db", "upgrade", "--db", "legacy", "--yes", "-q").exit_code == 0
    result = cli("telemetry", "import", "--db", "legacy", str(SAMPLE_LOG), "-q")
    assert result.exit_code == 0, result.stderr
    assert foreign_key_problems(path) == []


def test_cli_bad_offset_and_format(cli: CliRunner, workdir: Path) -> None:
    url = init_db(cli, workdir / "t.db")
    bad = cli(
        "telemetry", "import", "--database-url", url, str(SAMPLE_LOG), "--log-utc-offset", "CET"
    )
    assert bad.exit_code == 2
    assert "invalid UTC offset" in bad.stderr
    forced = cli(
        "telemetry", "import", "--database-url", url, str(SAMPLE_LOG), "--format", "ndjson", "-q"
    )
    assert forced.exit_code == 1
    assert "line 1: not JSON" in forced.stdout
    assert "warning: no telemetry sample found" in forced.stderr


def test_cli_dry_run_says_so(cli: CliRunner, workdir: Path) -> None:
    url = init_db(cli, workdir / "t.db")
    result = cli("telemetry", "import", "--database-url", url, str(SAMPLE_LOG), "--dry-run", "-q")
    assert result.exit_code == 0
    assert "would import 60" in result.stdout
    assert "nothing was written" in result.stdout
    db = open_rw(url)
    try:
        assert count(db, EVENTS) == 0
        assert count(db, PROVENANCE) == 0
    finally:
        db.close()


def test_dry_run_of_several_files_sees_the_earlier_ones(
    fresh: tuple[str, Database], workdir: Path
) -> None:
    _url, db = fresh
    copy = workdir / "copy.log"
    copy.write_text(SAMPLE_LOG.read_text())
    seen: list[tuple[int, int | None]] = []
    report = import_files(
        db,
        [SAMPLE_LOG, copy],
        ImportOptions(dry_run=True),
        progress=lambda done, total: seen.append((done, total)),
    )
    assert [file.imported for file in report.files] == [60, 0]
    assert report.files[1].already_present == 60
    total = SAMPLE_LOG.stat().st_size * 2
    assert seen[-1] == (total, total)
    assert count(db, EVENTS) == 0


def test_a_file_that_breaks_halfway_is_rolled_back_whole(
    fresh: tuple[str, Database], workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from autopack.telemetry import export_to
    from autopack.telemetry.columns import ExportFormat

    _url, db = fresh
    import_files(db, [SAMPLE_LOG])
    exported = workdir / "ours.csv"
    export_to(db, exported, ExportFormat.CSV)
    other_url = f"sqlite:///{workdir / 'other.db'}"
    assert main(["db", "init", "--database-url", other_url, "-q"]) == 0
    other = open_rw(other_url)
    try:
        broken = workdir / "broken.csv"
        # A cell beyond the csv module's field limit breaks the reader after 60 good rows.
        broken.write_text(exported.read_text() + "1," + "x" * 200_000 + "\n")
        report = import_files(other, [broken, exported])
        failed, good = report.files
        assert failed.error is not None
        assert failed.error.startswith("cannot read it")
        assert failed.imported == 0
        assert good.imported == 60
        assert count(other, EVENTS) == 60
    finally:
        other.close()


def test_line_numbers_are_what_grep_shows(fresh: tuple[str, Database], workdir: Path) -> None:
    _url, db = fresh
    log = workdir / "cr.log"
    bad = FULL.replace("predicted_output=5200", "predicted_output=x")
    log.write_bytes(f"progress 10%\rprogress 50%\r\n{FULL}\r\n{bad}\n".encode())
    report = import_files(db, [log])
    assert [p.line for p in report.files[0].problems] == [3]
    assert [p["source_line"] for p in provenance_rows(db).values()] == [2]


# --- lines that once crashed the import (issue 11, defect 9) -------------------------------

_GOOD_NDJSON = json.dumps(
    {
        "run_id": "r",
        "phase_id": "p",
        "timestamp": "2025-12-29T00:00:00",
        "predicted_output_tokens": 1,
        "actual_output_tokens": 7,
        "success": True,
    }
)


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("int.log", FULL.replace("predicted_output=5200", f"predicted_output={2**63}"), "64-bit"),
        (
            "int.ndjson",
            _GOOD_NDJSON.replace('"actual_output_tokens": 7', f'"actual_output_tokens": {2**64}'),
            "64-bit",
        ),
        (
            "ts.log",
            FULL.replace("2025-12-29 19:40:02", "0001-01-01T00:00:00+05:00"),
            "out of range",
        ),
        (
            "ts.ndjson",
            _GOOD_NDJSON.replace("2025-12-29T00:00:00", "0001-01-01T00:00:00+05:00"),
            "out of range",
        ),
        ("deep.ndjson", '{"x": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    ],
)
def test_a_line_that_cannot_be_stored_is_rejected_and_later_files_imported(
    cli: CliRunner, fresh: tuple[str, Database], workdir: Path, name: str, content: str, reason: str
) -> None:
    url, _db = fresh
    bad = workdir / name
    bad.write_text(content + "\n")
    good = workdir / "good.ndjson"
    good.write_text(_GOOD_NDJSON + "\n")
    result = cli("telemetry", "import", "--database-url", url, "--json", "-q", str(bad), str(good))
    assert result.exit_code == 1, result.stderr  # lines were rejected: exit 1, not 70
    report = json.loads(result.stdout)
    first, second = report["files"]
    assert first["unparseable"] == 1
    assert reason in first["problems"][0]["reason"]
    assert second["imported"] == 1


def test_a_first_line_over_128_kib_is_one_unreadable_line(
    cli: CliRunner, fresh: tuple[str, Database], workdir: Path
) -> None:
    url, _db = fresh
    long = workdir / "long.log"
    long.write_text("a,run_id,predicted_output_tokens," + "x" * 140_000 + "\n" + FULL + "\n")
    good = workdir / "good.ndjson"
    good.write_text(_GOOD_NDJSON + "\n")
    result = cli("telemetry", "import", "--database-url", url, "--json", "-q", str(long), str(good))
    assert result.exit_code == 0, result.stderr
    first, second = json.loads(result.stdout)["files"]
    assert (first["format"], first["imported"], second["imported"]) == ("log", 1, 1)
