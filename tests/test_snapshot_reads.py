"""Reports read one snapshot: a writer changing phase states while they run never makes their
numbers disagree (the stale listing with its unleased list; identity's counts with each other;
a run's EXECUTING phases with its telemetry rows in `runs show` and `runs list`).

A writer thread moves stale QUEUED phases to EXECUTING (without a lease: they become
"unleased") and, in the same transaction, records one clean telemetry event per phase moved.
At every committed instant, then: stale + unleased is the number of phases it works on, no
phase is on both lists, and identity's EXECUTING count equals its telemetry count. A report
that read its parts at different instants would see the writer in between (the tests check
that the writer did commit while reports ran).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import autopack.triage.stale as stale_module
from autopack.db.engine import Database, OpenMode, open_database
from autopack.db.identity import inspect_database
from autopack.db.models import Phase, TokenEstimationV2Event, table_of, utc_now
from autopack.runs import list_runs, show_run
from autopack.seed.model import create_seed_run
from autopack.settings import build_target
from autopack.triage import stale_report
from tests.conftest import CliRunner, reference_seed_spec

RUN = "telemetry-collection-v4"
MOVED = 1_500
"""Stale phases the writer works on."""
PHASES = table_of(Phase)
EVENTS = table_of(TokenEstimationV2Event)
H48 = timedelta(hours=48)
OVERLAPS = 3
"""Reports that must have seen the writer commit while they ran."""
TIME_LIMIT = 60.0


def _add_stale_phases(db: Database) -> datetime:
    """MOVED QUEUED phases last touched three days ago (returned), copied from a seed phase."""
    old = utc_now() - 3 * H48
    with db.engine.begin() as connection:
        template = dict(connection.execute(sa.select(PHASES).limit(1)).mappings().one())
        template.pop("id")
        connection.execute(
            sa.insert(PHASES),
            [
                {
                    **template,
                    "phase_id": f"bulk-{index:05d}",
                    "phase_index": 100 + index,
                    "state": "QUEUED",
                    "updated_at": old,
                }
                for index in range(MOVED)
            ],
        )
    return old


class _Writer(threading.Thread):
    """Moves one stale phase to EXECUTING and records one event, per transaction."""

    def __init__(self, db: Database, old: datetime) -> None:
        super().__init__(daemon=True)
        self.db = db
        self.old = old
        self.commits = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                with self.db.engine.begin() as connection:
                    row = connection.execute(
                        sa.select(PHASES.c.id, PHASES.c.phase_id)
                        .where(PHASES.c.state == "QUEUED", PHASES.c.phase_id.like("bulk-%"))
                        .limit(1)
                    ).first()
                    if row is None:
                        return
                    connection.execute(  # still untouched for days: now unleased
                        sa.update(PHASES)
                        .where(PHASES.c.id == row.id)
                        .values(state="EXECUTING", updated_at=self.old)
                    )
                    connection.execute(sa.insert(EVENTS).values(**_event(row.phase_id)))
                self.commits += 1
                time.sleep(0.001)  # let the reader take the next batch
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc


def _event(phase_id: str) -> dict[str, Any]:
    return {
        "run_id": RUN,
        "phase_id": phase_id,
        "category": "implementation",
        "complexity": "low",
        "deliverable_count": 1,
        "deliverables_json": "[]",
        "predicted_output_tokens": 100,
        "actual_output_tokens": 120,
        "selected_budget": 200,
        "success": True,
        "truncated": False,
        "model": "test",
    }


def _consistent_reports(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    old = _add_stale_phases(db)
    # Small batches: a report takes many steps, and the writer commits between them.
    monkeypatch.setattr(stale_module, "BATCH_ROWS", 25)
    writer = _Writer(db, old)
    overlapped = {"stale": 0, "identity": 0, "runs": 0}
    writer.start()
    deadline = time.monotonic() + TIME_LIMIT
    try:
        while min(overlapped.values()) < OVERLAPS and writer.is_alive():
            assert time.monotonic() < deadline, f"the writer barely ran: {overlapped}"
            before = writer.commits
            report = stale_report(db, H48, keep=0, documents=True)
            overlapped["stale"] += writer.commits > before
            stale = [e["phase_id"] for t in report.stale.documents for e in json.loads(f"[{t}]")]
            unleased = [
                e["phase_id"] for t in report.unleased.documents for e in json.loads(f"[{t}]")
            ]
            assert (report.stale.count, report.unleased.count) == (len(stale), len(unleased))
            assert report.stale.count + report.unleased.count == MOVED
            assert not set(stale) & set(unleased)

            before = writer.commits
            identity = inspect_database(db)
            overlapped["identity"] += writer.commits > before
            executing = identity.phase_states["EXECUTING"]
            assert executing == identity.telemetry.events == identity.telemetry.clean_samples
            assert identity.counts["token_estimation_v2_events"] == executing
            assert sum(identity.phase_states.values()) == identity.counts["phases"]

            before = writer.commits
            run = show_run(db, RUN)
            (listed,) = list_runs(db).runs
            overlapped["runs"] += writer.commits > before
            assert run.telemetry is not None
            assert run.phase_states.get("EXECUTING", 0) == run.telemetry.events
            assert sum(p.telemetry_events for p in run.phases) == run.telemetry.events
            assert listed.phase_states.get("EXECUTING", 0) == listed.telemetry_events
    finally:
        writer.stop.set()
        writer.join()
    assert writer.error is None, writer.error
    assert min(overlapped.values()) >= OVERLAPS, f"the writer finished first: {overlapped}"


def test_reports_on_sqlite_are_one_snapshot(
    seed_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    _consistent_reports(seed_db, monkeypatch)


@pytest.fixture
def postgres_db(cli: CliRunner, postgres_url: str, workdir: Path) -> Iterator[Database]:
    assert cli("db", "init", "--database-url", postgres_url, "--role", "seed").exit_code == 0
    target = build_target(postgres_url, source="test", cwd=workdir)
    with open_database(target, OpenMode.READ_WRITE) as db:
        create_seed_run(db.engine, reference_seed_spec(RUN))
        yield db


def test_reports_on_postgres_are_one_snapshot(
    postgres_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    _consistent_reports(postgres_db, monkeypatch)
