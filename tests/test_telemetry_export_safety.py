"""`telemetry export`: one snapshot under a concurrent writer, `--output` that destroys nothing,
stale temporary files swept, and a lossless round trip for any row (hypothesis)."""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import shutil
import stat
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autopack.db.engine import Database
from autopack.output_file import remove_stale_temporaries
from autopack.seed.model import create_seed_run
from autopack.telemetry import export_to, import_files
from autopack.telemetry.columns import ExportFormat
from autopack.telemetry.export import ExportFilters
from tests.conftest import CliRunner, reference_seed_spec
from tests.telemetry_io_helpers import (
    EVENTS,
    V4_PHASES,
    V4_RUN,
    add_bare_row,
    event_rows,
    init_db,
    open_rw,
)

_NUMBERS = itertools.count()
SNAPSHOT_ROWS = 60_000
"""More than the 50,000 rows from which the old export read on worker processes."""


def _bulk_rows(db: Database, rows: int) -> None:
    base = {
        "run_id": V4_RUN,
        "phase_id": V4_PHASES[0],
        "category": "tests",
        "complexity": "low",
        "deliverable_count": 1,
        "deliverables_json": '["a.py"]',
        "predicted_output_tokens": 100,
        "selected_budget": 4096,
        "success": True,
        "truncated": False,
        "model": "m",
        "is_truncated_output": False,
    }
    with db.engine.begin() as connection:
        connection.execute(
            sa.insert(EVENTS),
            [
                {
                    **base,
                    "timestamp": datetime(2025, 12, 29, 12, 0, 0, n % 1_000_000),
                    "created_at": datetime(2025, 12, 29, 12, 0, 1),
                    "actual_output_tokens": n,
                }
                for n in range(rows)
            ],
        )


def _state(db: Database) -> dict[int, int]:
    with db.engine.connect() as connection:
        found = connection.execute(sa.select(EVENTS.c.event_id, EVENTS.c.actual_output_tokens))
        return {int(event_id): int(actual) for event_id, actual in found}


def _check_one_instant(db: Database) -> None:
    _bulk_rows(db, SNAPSHOT_ROWS)
    before = _state(db)
    exported: dict[int, int] = {}
    written: list[int] = []
    ids = sorted(before)

    def write_meanwhile(done: int, total: int | None) -> None:
        if written:
            return
        written.append(done)
        with db.engine.begin() as connection:  # another connection: it commits now
            connection.execute(
                sa.update(EVENTS)
                .where(EVENTS.c.event_id.in_(ids[:50] + ids[-50:]))
                .values(actual_output_tokens=0)
            )
            connection.execute(sa.delete(EVENTS).where(EVENTS.c.event_id.in_(ids[100:110])))
            connection.execute(sa.delete(EVENTS).where(EVENTS.c.event_id == ids[-1]))
        _bulk_rows(db, 10)

    out = io.BytesIO()
    result = export_to(db, out, ExportFormat.NDJSON, ExportFilters(), progress=write_meanwhile)
    assert written, "the writer ran"
    assert written[0] < result.rows, "the writer ran before the export ended"
    for line in out.getvalue().splitlines():
        row = json.loads(line)
        exported[int(row["event_id"])] = int(row["actual_output_tokens"])
    after = _state(db)
    assert after != before  # the writer's changes were committed
    assert exported == before  # and the file is the table as it was when the export began


def test_a_sqlite_wal_export_is_one_snapshot_under_a_concurrent_writer(
    seed_db: Database,
) -> None:
    with seed_db.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    _check_one_instant(seed_db)


def test_a_postgres_export_is_one_snapshot_under_a_concurrent_writer(
    cli: CliRunner, postgres_url: str
) -> None:
    assert cli("db", "init", "--database-url", postgres_url, "-q").exit_code == 0
    db = open_rw(postgres_url)
    try:
        create_seed_run(db.engine, reference_seed_spec(V4_RUN))
        _check_one_instant(db)
    finally:
        db.close()


# --- --output never destroys what it points at (issue 11, defect 1) ------------------------


@pytest.fixture
def exportable(seed_db: Database) -> Database:
    add_bare_row(seed_db)
    return seed_db


def _export_cli(cli: CliRunner, output: Path, *extra: str) -> Any:
    return cli("telemetry", "export", "--db", "seed", "-q", "-o", str(output), *extra)


def test_output_into_a_character_device_writes_into_it(
    cli: CliRunner, exportable: Database
) -> None:
    devnull = Path(os.devnull)
    before = devnull.stat()
    result = _export_cli(cli, devnull)
    assert result.exit_code == 0, result.stderr
    after = devnull.stat()
    assert stat.S_ISCHR(after.st_mode)
    assert (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)
    assert not [p for p in devnull.parent.glob(".null.*.tmp")]


def test_output_into_a_fifo_writes_into_it(
    cli: CliRunner, exportable: Database, workdir: Path
) -> None:
    fifo = workdir / "rows.fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    result = _export_cli(cli, fifo)
    reader.join(timeout=30)
    assert result.exit_code == 0, result.stderr
    assert stat.S_ISFIFO(fifo.lstat().st_mode)  # still a FIFO, not a regular file
    rows = list(csv.DictReader(io.StringIO(received[0].decode())))
    assert len(rows) == 1


def test_output_through_a_symlink_replaces_its_target_and_keeps_the_link(
    cli: CliRunner, exportable: Database, workdir: Path
) -> None:
    target = workdir / "real.csv"
    target.write_text("old\n")
    link = workdir / "link.csv"
    link.symlink_to(target)
    result = _export_cli(cli, link)
    assert result.exit_code == 0, result.stderr
    assert link.is_symlink()
    assert link.resolve() == target
    assert len(list(csv.DictReader(io.StringIO(target.read_text())))) == 1
    assert sorted(p.name for p in workdir.iterdir() if p.name.endswith(".tmp")) == []


def test_output_that_is_a_directory_is_refused(
    cli: CliRunner, exportable: Database, workdir: Path
) -> None:
    folder = workdir / "out"
    folder.mkdir()
    result = _export_cli(cli, folder)
    assert result.exit_code == 2
    assert "is a directory" in result.stderr
    assert list(folder.iterdir()) == []


def test_analyze_output_follows_the_same_rules(
    cli: CliRunner, exportable: Database, workdir: Path
) -> None:
    target = workdir / "report.md"
    target.write_text("old\n")
    link = workdir / "link.md"
    link.symlink_to(target)
    fifo = workdir / "report.fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    for output in (link, fifo, Path(os.devnull)):
        result = cli("telemetry", "analyze", "--db", "seed", "-q", "-o", str(output))
        assert result.exit_code in (0, 1), result.stderr
    reader.join(timeout=30)
    assert link.is_symlink()
    assert target.read_text().startswith("#")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert received[0].startswith(b"#")
    assert stat.S_ISCHR(Path(os.devnull).stat().st_mode)
    refused = cli("telemetry", "analyze", "--db", "seed", "-q", "-o", str(workdir))
    assert refused.exit_code == 2
    assert "is a directory" in refused.stderr


# --- stale temporary files (issue 11, defect 15) -------------------------------------------


def _dead_pid() -> int:
    """A pid no process has: a child that has been waited for."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_the_next_export_removes_temporary_files_of_dead_exports_only(
    cli: CliRunner, exportable: Database, workdir: Path
) -> None:
    dead = workdir / f".telemetry.csv.{_dead_pid()}.0123abcd.tmp"
    dead.write_text("half an export")
    alive = workdir / f".other.csv.{os.getppid()}.0123abcd.tmp"
    alive.write_text("being written")
    unrelated = workdir / ".notes.tmp"
    unrelated.write_text("not ours")
    result = _export_cli(cli, workdir / "telemetry.csv")
    assert result.exit_code == 0, result.stderr
    assert not dead.exists()
    assert alive.exists()
    assert unrelated.exists()
    assert remove_stale_temporaries(workdir) == []


def test_an_interrupted_export_leaves_no_temporary_file(
    exportable: Database, workdir: Path
) -> None:
    def interrupt(done: int, total: int | None) -> None:
        raise KeyboardInterrupt  # what SIGINT (and SIGTERM, once handled) raise mid-export

    with pytest.raises(KeyboardInterrupt):
        export_to(exportable, workdir / "t.csv", ExportFormat.CSV, progress=interrupt)
    assert sorted(p.name for p in workdir.iterdir() if p.name.startswith(".t.csv")) == []
    assert not (workdir / "t.csv").exists()


# --- the round trip, for any row (hypothesis) ----------------------------------------------

_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
_OPTIONAL_TEXT = st.one_of(st.none(), _TEXT.filter(lambda t: t.strip() != ""))
_COUNT = st.integers(0, 2**63 - 1)
_ROW = st.fixed_dictionaries(
    {
        "timestamp": st.datetimes(datetime(1970, 1, 2), datetime(2100, 1, 1)),
        "category": _TEXT.filter(lambda t: t.strip() != ""),
        "complexity": st.sampled_from(["low", "medium", "high", "maintenance"]),
        "deliverable_count": _COUNT,
        "deliverables_json": st.lists(_TEXT, max_size=3).map(json.dumps),
        "predicted_output_tokens": _COUNT,
        "actual_output_tokens": _COUNT,
        "selected_budget": _COUNT,
        "actual_max_tokens": st.one_of(st.none(), _COUNT),
        "success": st.booleans(),
        "truncated": st.booleans(),
        "stop_reason": _OPTIONAL_TEXT,
        "model": _TEXT.filter(lambda t: t.strip() != ""),
        "smape_percent": st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
        "waste_ratio": st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
        "underestimated": st.one_of(st.none(), st.booleans()),
        "is_truncated_output": st.booleans(),
        "context_quality": _OPTIONAL_TEXT,
        "sot_entry_count_hint": st.one_of(st.none(), _COUNT),
    }
)


_TEMPLATES: dict[Path, Path] = {}


def _fresh_copy(cli: CliRunner, workdir: Path, name: str) -> Database:
    """A DB made by `db init` once per test, then copied (db init per example is slow)."""
    template = _TEMPLATES.get(workdir)
    if template is None:
        template = workdir / "template.db"
        db = open_rw(init_db(cli, template))
        try:
            create_seed_run(db.engine, reference_seed_spec(V4_RUN))  # the rows' run and phases
        finally:
            db.close()
        _TEMPLATES[workdir] = template
    copy = workdir / name
    shutil.copyfile(template, copy)
    return open_rw(f"sqlite:///{copy}")


def _stored(db: Database) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in row.items() if k not in ("event_id", "run_id", "phase_id")}
        for row in event_rows(db)
    ]


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    # Distinct timestamps: rows equal in every keyed figure are one sample by design (see below).
    rows=st.lists(_ROW, min_size=1, max_size=4, unique_by=lambda row: row["timestamp"]),
    fmt=st.sampled_from(list(ExportFormat)),
)
def test_every_format_reads_back_losslessly(
    cli: CliRunner, workdir: Path, rows: list[dict[str, Any]], fmt: ExportFormat
) -> None:
    number = next(_NUMBERS)
    source = _fresh_copy(cli, workdir, f"source{number}.db")
    target = _fresh_copy(cli, workdir, f"target{number}.db")
    try:
        for row in rows:
            add_bare_row(source, **{**row, "created_at": row["timestamp"]})
        exported = workdir / f"rows{number}.{fmt.value}"
        export_to(source, exported, fmt, allow_empty_db=True)
        report = import_files(target, [exported])
        assert report.totals.imported == len(rows), report.files[0].problems
        assert _stored(target) == _stored(source)
    finally:
        source.close()
        target.close()


@pytest.mark.parametrize("fmt", list(ExportFormat))
def test_rows_equal_in_every_keyed_figure_import_as_one_sample(
    cli: CliRunner, workdir: Path, fmt: ExportFormat
) -> None:
    """The same call stored twice (same phase, microsecond, figures) is one sample, said so."""
    source = _fresh_copy(cli, workdir, f"dup-source-{fmt.value}.db")
    target = _fresh_copy(cli, workdir, f"dup-target-{fmt.value}.db")
    row = {
        "timestamp": datetime(2026, 1, 2, 3, 4, 5, 678901),
        "category": "implementation",
        "complexity": "low",
        "deliverable_count": 1,
        "predicted_output_tokens": 900,
        "actual_output_tokens": 1200,
        "selected_budget": 4096,
        "success": True,
        "truncated": False,
        "model": "claude-sonnet-4-5",
    }
    try:
        for _ in range(2):
            add_bare_row(source, **{**row, "created_at": row["timestamp"]})
        exported = workdir / f"dup.{fmt.value}"
        export_to(source, exported, fmt, allow_empty_db=True)
        report = import_files(target, [exported])
        assert (report.totals.imported, report.totals.already_present) == (1, 1)
        assert _stored(target) == _stored(source)[:1]
    finally:
        source.close()
        target.close()
