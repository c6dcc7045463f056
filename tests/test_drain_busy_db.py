"""Defect 8 (issue 11): a second writer holding the SQLite lock past the busy timeout.

It used to end the drain with exit 2 ("database is locked", "restore from a backup"), leaving
phases EXECUTING under long leases. Now every drain write waits with backoff, says so on
stderr, and gets through when the lock is released: no phase left claimed, no row dropped.
The busy timeout is cut to 0.3 s here so the lock is held well past it in a few seconds.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

import autopack.db.engine as engine_module
from autopack.db.engine import Database, OpenMode, open_database
from autopack.db.models import TokenEstimationV2Event, table_of
from autopack.db.retry import is_transient, run_retrying
from autopack.settings import resolve_target
from tests.backlog_helpers import add_run, good_reply, results, states
from tests.conftest import CliRunner
from tests.fake_llm import FakeLlmServer


@pytest.fixture
def backlog(cli: CliRunner, workdir: Path) -> Iterator[Database]:
    assert cli("db", "init", "--database-url", "sqlite:///backlog.db").exit_code == 0
    (workdir / "ws").mkdir()
    db = open_database(resolve_target(None, "sqlite:///backlog.db"), OpenMode.READ_WRITE)
    yield db
    db.close()


def hold_write_lock(path: Path, seconds: float, start: threading.Event) -> None:
    """A second writer: one transaction holding SQLite's write lock for `seconds`."""
    start.wait(timeout=60)
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("CREATE TABLE IF NOT EXISTS other_writer (x INTEGER)")
        time.sleep(seconds)
        connection.execute("COMMIT")
    finally:
        connection.close()


def test_a_long_second_writer_is_waited_out(
    cli: CliRunner,
    backlog: Database,
    fake_llm: FakeLlmServer,
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", 300)
    for run in ("run-a", "run-b", "run-c"):
        add_run(backlog.engine, run, 1)
    # Each reply takes 1 s; the lock is taken as the first request arrives, so the first
    # telemetry row, its drain result and the next claim all meet it.
    fake_llm.default_reply = good_reply(delay_s=1.0)
    first_request = threading.Event()
    holder = threading.Thread(
        target=hold_write_lock, args=(workdir / "backlog.db", 3.0, first_request)
    )
    holder.start()
    watcher = threading.Thread(
        target=lambda: _set_when(first_request, lambda: bool(fake_llm.requests)), daemon=True
    )
    watcher.start()

    result = cli(
        "drain",
        "batch",
        "--database-url",
        backlog.target.url,
        "--workspace",
        "ws",
        "--json",
        "--batch-size",
        "3",
        "--workers",
        "2",
        env=fake_llm.env("anthropic"),
    )
    holder.join()

    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["totals"]["succeeded"] == 3
    assert set(states(backlog.engine).values()) == {"COMPLETE"}
    assert len(results(backlog.engine)) == 3
    with backlog.engine.connect() as connection:
        rows = connection.execute(
            sa.select(sa.func.count()).select_from(table_of(TokenEstimationV2Event))
        ).scalar_one()
    assert rows == fake_llm.answered_2xx == 3
    waits = [r.getMessage() for r in caplog.records if r.name == "autopack.db"]
    assert waits, "the drain did not say it was waiting"
    assert all("waiting to" in message for message in waits)


def _set_when(event: threading.Event, condition: object) -> None:
    assert callable(condition)
    deadline = time.monotonic() + 60
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    event.set()


def test_only_transient_errors_are_retried(backlog: Database) -> None:
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        with backlog.engine.begin() as connection:
            connection.exec_driver_sql("SELECT * FROM no_such_table")

    with pytest.raises(sa.exc.OperationalError) as raised:
        run_retrying(broken, what="read", sleep=lambda _s: None)
    assert calls == [1]
    assert not is_transient(raised.value)


def test_a_connection_cut_while_recording_the_result_is_retried(
    cli: CliRunner,
    backlog: Database,
    fake_llm: FakeLlmServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ending transaction (state, result, claim release, telemetry link) meets a cut
    connection once, as pg_terminate_backend makes it: it is retried whole, not a crash."""
    import autopack.drain.finish as finish_module

    real_insert = finish_module._insert_result
    cuts: list[int] = []

    def cut_once(connection: sa.Connection, session_id: str, values: dict[str, object]) -> int:
        if not cuts:
            cuts.append(1)
            raise sa.exc.OperationalError(
                "INSERT INTO autopack_drain_results …",
                {},
                Exception("terminating connection due to administrator command"),
            )
        return real_insert(connection, session_id, values)

    monkeypatch.setattr(finish_module, "_insert_result", cut_once)
    add_run(backlog.engine, "run-a", 1)
    fake_llm.default_reply = good_reply()
    result = cli(
        "drain",
        "batch",
        "--database-url",
        backlog.target.url,
        "--workspace",
        "ws",
        "--json",
        "--batch-size",
        "1",
        env=fake_llm.env("anthropic"),
    )
    assert result.exit_code == 0, result.stderr
    assert cuts == [1]
    assert set(states(backlog.engine).values()) == {"COMPLETE"}
    assert len(results(backlog.engine)) == 1
