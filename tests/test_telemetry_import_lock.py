"""`telemetry import` holds the write lock only to insert (issue 11, defect 8), and stays
idempotent and all-or-nothing per file when another writer gets in between its planning and
its write."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from autopack.db.engine import Database
from autopack.db.models import Run, RunState
from autopack.errors import TargetError
from autopack.seed.model import create_seed_run
from autopack.telemetry import import_write, importer
from autopack.telemetry.import_plan import FilePlan
from autopack.telemetry.import_write import StagedPlan
from autopack.telemetry.importer import PLACEHOLDER_MARK, file_run_id, import_files
from tests.conftest import CliRunner, reference_seed_spec
from tests.telemetry_io_helpers import (
    EVENTS,
    PHASES,
    PROVENANCE,
    RUNS,
    V4_PHASES,
    V4_RUN,
    add_bare_row,
    count,
    foreign_key_problems,
    init_db,
    open_rw,
)

LINE = (
    "[2025-12-29 19:40:{second:02d}] INFO: [TokenEstimationV2] predicted_output={n} "
    "actual_output=1218 smape=124.1% selected_budget=8192 category=implementation "
    "complexity=low deliverables=1 success=True stop_reason=end_turn truncated=False "
    "model=claude-sonnet-4-5"
)
NDJSON = (
    '{{"run_id": "{run}", "phase_id": "p{n}", "timestamp": "2025-12-29T00:00:{n:02d}", '
    '"predicted_output_tokens": {n}, "actual_output_tokens": 700, "success": true}}'
)
STAGE = "autopack_import_stage_"
Staging = Callable[[sa.Connection, FilePlan], AbstractContextManager[StagedPlan]]


def write_log(path: Path, numbers: range) -> Path:
    path.write_text("".join(LINE.format(second=n % 60, n=n) + "\n" for n in numbers))
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, cli: CliRunner, workdir: Path) -> Iterator[Database]:
    """A fresh DB on each backend (PostgreSQL skips without AUTOPACK_TEST_POSTGRES_URL)."""
    if request.param == "sqlite":
        url = init_db(cli, workdir / "lock.db")
    else:
        url = request.getfixturevalue("postgres_url")
        assert cli("db", "init", "--database-url", url, "-q").exit_code == 0
    db = open_rw(url)
    yield db
    db.close()


def between_plan_and_write(
    monkeypatch: pytest.MonkeyPatch, meanwhile: Callable[[int], None]
) -> list[int]:
    """Run `meanwhile(attempt)` after each plan is made and before its rows are written (while
    they are staged): what another writer could do at that moment. Returns the attempts."""
    attempts: list[int] = []
    busy: list[bool] = []
    real: Staging = import_write.staged

    @contextmanager
    def staged(connection: sa.Connection, plan: FilePlan) -> Iterator[StagedPlan]:
        with real(connection, plan) as staged_plan:
            if not busy:  # not an import that `meanwhile` runs
                attempts.append(len(attempts) + 1)
                busy.append(True)
                try:
                    meanwhile(attempts[-1])
                finally:
                    busy.clear()
            yield staged_plan

    monkeypatch.setattr(importer, "staged", staged)
    return attempts


def keys(db: Database) -> list[str]:
    with db.engine.connect() as connection:
        return list(connection.execute(sa.select(PROVENANCE.c.sample_key)).scalars())


def check_keys_and_links(db: Database) -> None:
    """Every key once; every imported row has its provenance; SQLite's foreign keys hold."""
    found = keys(db)
    assert len(found) == len(set(found))
    assert count(db, PROVENANCE) == count(db, EVENTS)
    path = db.target.sqlite_path
    if path is not None:
        assert foreign_key_problems(path) == []


# --- what the write transaction holds the lock for ---------------------------------------


def test_the_write_transaction_only_checks_staged_rows_and_inserts(
    cli: CliRunner, workdir: Path
) -> None:
    db = open_rw(init_db(cli, workdir / "t.db"))
    statements: list[str] = []

    @sa.event.listens_for(db.engine, "before_cursor_execute")
    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(" ".join(statement.split()))

    @sa.event.listens_for(db.engine, "commit")
    def committed(_conn: Any) -> None:
        statements.append("COMMIT")

    try:
        small = write_log(workdir / "small.log", range(1, 4))
        big = write_log(workdir / "big.log", range(100, 1100))
        report = import_files(db, [small, big])
        assert [file.imported for file in report.files] == [3, 1000]
        locked = _write_transactions(statements)
        assert len(locked) == 2  # one per file
        for inside in locked:
            # The same few statements whatever the file's size: nothing per sample.
            assert len(inside) <= 10, inside
            for statement in inside:
                assert _cheap(statement), statement
            inserted = [re.match(r"INSERT INTO (\w+)", s) for s in inside]
            assert [m.group(1) for m in inserted if m] == [
                "runs",
                "tiers",
                "phases",
                "token_estimation_v2_events",
                "autopack_telemetry_provenance",
            ]
        check_keys_and_links(db)
    finally:
        db.close()


def _write_transactions(statements: list[str]) -> list[list[str]]:
    """The statements between each BEGIN IMMEDIATE and the COMMIT that ends it."""
    found: list[list[str]] = []
    inside: list[str] | None = None
    for statement in statements:
        if statement == "BEGIN IMMEDIATE":
            inside = []
        elif statement == "COMMIT" and inside is not None:
            found.append(inside)
            inside = None
        elif inside is not None:
            inside.append(statement)
    return found


def _cheap(statement: str) -> bool:
    """An insert moving staged rows in, a check driven by staged rows (EXISTS probes of a
    unique index), or the largest id of a table."""
    if statement.startswith("INSERT INTO "):
        return f"FROM {STAGE}" in statement and "VALUES" not in statement
    if statement.startswith("SELECT coalesce(max("):
        return " WHERE " not in statement
    return statement.startswith("SELECT ? AS anon_1 FROM " + STAGE) and "EXISTS" in statement


def test_the_lock_is_free_while_a_file_is_planned_and_staged(
    cli: CliRunner, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = init_db(cli, workdir / "t.db")
    db = open_rw(url)
    path = db.target.sqlite_path
    assert path is not None
    import sqlite3

    def another_writer(_attempt: int) -> None:
        other = sqlite3.connect(path, timeout=0, isolation_level=None)  # no waiting at all
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute(f"CREATE TABLE probe_{_attempt} (a)")
            other.execute("COMMIT")
        finally:
            other.close()

    attempts = between_plan_and_write(monkeypatch, another_writer)
    try:
        report = import_files(db, [write_log(workdir / "a.log", range(1, 51))])
        assert attempts == [1]  # the probe table is no concern of the plan's
        assert report.totals.imported == 50
    finally:
        db.close()


# --- another writer between planning and writing -----------------------------------------


def test_a_sample_stored_meanwhile_is_counted_once_not_duplicated(
    target: Database, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    main = write_log(workdir / "main.log", range(1, 11))
    overlap = write_log(workdir / "overlap.log", range(5, 6))  # one of main's lines
    others: list[int] = []

    def import_the_overlap(attempt: int) -> None:
        if attempt == 1:
            second = open_rw(target.target.url)
            try:
                others.append(import_files(second, [overlap]).totals.imported)
            finally:
                second.close()

    attempts = between_plan_and_write(monkeypatch, import_the_overlap)
    report = import_files(target, [main]).files[0]
    assert others == [1]
    assert attempts == [1, 2]  # the first plan went stale; the second was written
    assert (report.imported, report.already_present) == (9, 1)
    assert report.placeholder_phases == 9
    assert count(target, EVENTS) == 10
    check_keys_and_links(target)
    # Ids were taken as the DB would give them: a row written afterwards gets a new one.
    with target.engine.connect() as connection:
        phase_id = connection.execute(
            sa.select(PHASES.c.phase_id).where(PHASES.c.run_id == file_run_id(main))
        ).scalar()
    add_bare_row(target, run_id=file_run_id(main), phase_id=phase_id)
    assert count(target, EVENTS) == 11


def test_the_same_file_imported_meanwhile_adds_nothing_twice(
    target: Database, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    main = write_log(workdir / "main.log", range(1, 21))

    def import_it_too(attempt: int) -> None:
        if attempt == 1:
            second = open_rw(target.target.url)
            try:
                assert import_files(second, [main]).totals.imported == 20
            finally:
                second.close()

    between_plan_and_write(monkeypatch, import_it_too)
    report = import_files(target, [main]).files[0]
    assert (report.imported, report.already_present, report.placeholder_runs) == (0, 20, [])
    assert count(target, EVENTS) == 20
    with target.engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(RUNS)).scalar() == 1
    check_keys_and_links(target)


def test_a_run_created_meanwhile_is_not_taken_over(
    target: Database, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = workdir / "orig.ndjson"
    source.write_text("".join(NDJSON.format(run="r-new", n=n) + "\n" for n in range(1, 4)))

    def create_the_run(attempt: int) -> None:
        if attempt == 1:  # e.g. a seed, between the import's plan and its write
            now = datetime.now(UTC).replace(tzinfo=None)
            run = Run(id="r-new", state=RunState.QUEUED.value, created_at=now, updated_at=now)
            with target.engine.begin() as connection:
                connection.execute(sa.insert(RUNS).values(**run.model_dump(exclude_none=True)))

    attempts = between_plan_and_write(monkeypatch, create_the_run)
    report = import_files(target, [source]).files[0]
    assert attempts == [1, 2]
    assert report.imported == 3
    # The real run is left alone: its samples went to the file's own placeholder run.
    assert report.placeholder_runs == [file_run_id(source)]
    with target.engine.connect() as connection:
        anchors = dict(connection.execute(sa.select(RUNS.c.id, RUNS.c.goal_anchor)).all())
        placed = set(connection.execute(sa.select(EVENTS.c.run_id, EVENTS.c.phase_id)).all())
    assert anchors["r-new"] is None
    assert str(anchors[file_run_id(source)]).startswith(PLACEHOLDER_MARK)
    assert placed == {(file_run_id(source), f"r-new/p{n}") for n in range(1, 4)}
    check_keys_and_links(target)


def test_writers_that_keep_taking_the_samples_make_the_file_fail_whole(
    target: Database, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "MAX_PLAN_ATTEMPTS", 2)
    main = write_log(workdir / "main.log", range(1, 6))

    def import_one_of_its_lines(attempt: int) -> None:
        second = open_rw(target.target.url)
        try:
            line = write_log(workdir / f"line{attempt}.log", range(attempt, attempt + 1))
            assert import_files(second, [line]).totals.imported == 1
        finally:
            second.close()

    between_plan_and_write(monkeypatch, import_one_of_its_lines)
    with pytest.raises(TargetError, match="kept adding the samples"):
        import_files(target, [main])
    assert count(target, EVENTS) == 2  # the other writers' two lines; nothing of main's
    assert not any(run == file_run_id(main) for run in _run_ids(target))
    check_keys_and_links(target)


def _run_ids(db: Database) -> list[str]:
    with db.engine.connect() as connection:
        return list(connection.execute(sa.select(RUNS.c.id)).scalars())


def test_staging_tables_are_gone_after_an_import(target: Database, workdir: Path) -> None:
    import_files(target, [write_log(workdir / "a.log", range(1, 4))])
    with target.engine.connect() as connection:
        # The pool hands the import's connection back: its temporary tables were dropped.
        names = sa.inspect(connection).get_temp_table_names()
    assert not [name for name in names if name.startswith(STAGE)]


# --- plans with nothing to create, and plans that extend an earlier import's run -----------


def test_rows_for_existing_phases_create_nothing_else(target: Database, workdir: Path) -> None:
    create_seed_run(target.engine, reference_seed_spec(V4_RUN))
    source = workdir / "drained.ndjson"
    source.write_text(
        "".join(
            NDJSON.format(run=V4_RUN, n=n).replace(f'"p{n}"', f'"{phase}"') + "\n"
            for n, phase in enumerate(V4_PHASES[:3], start=1)
        )
    )
    phases_before = count(target, PHASES)
    report = import_files(target, [source]).files[0]
    assert (report.imported, report.on_existing_phases, report.placeholder_runs) == (3, 3, [])
    assert count(target, PHASES) == phases_before
    check_keys_and_links(target)


def test_phases_added_to_an_earlier_imports_run_meanwhile_are_not_given_the_same_index(
    target: Database, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = workdir / "first.ndjson"
    first.write_text("".join(NDJSON.format(run="r-x", n=n) + "\n" for n in (1, 2)))
    second = workdir / "second.ndjson"
    second.write_text("".join(NDJSON.format(run="r-x", n=n) + "\n" for n in (3, 4)))
    meanwhile = workdir / "meanwhile.ndjson"
    meanwhile.write_text(NDJSON.format(run="r-x", n=9) + "\n")
    import_files(target, [first])

    def add_a_phase_to_the_run(attempt: int) -> None:
        if attempt == 1:
            other = open_rw(target.target.url)
            try:
                assert import_files(other, [meanwhile]).totals.imported == 1
            finally:
                other.close()

    attempts = between_plan_and_write(monkeypatch, add_a_phase_to_the_run)
    report = import_files(target, [second]).files[0]
    assert attempts == [1, 2]
    assert (report.imported, report.placeholder_runs, report.placeholder_phases) == (2, [], 2)
    with target.engine.connect() as connection:
        indexes = dict(
            connection.execute(
                sa.select(PHASES.c.phase_id, PHASES.c.phase_index).where(PHASES.c.run_id == "r-x")
            ).all()
        )
    assert indexes == {"p1": 0, "p2": 1, "p9": 2, "p3": 3, "p4": 4}
    check_keys_and_links(target)
