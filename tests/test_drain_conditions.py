"""Draining in the conditions users have (issue 10) and the transaction defects of issue 11:
dead workers, provider outages, resumes racing, telemetry joined to its result.
Every case runs through the CLI, on SQLite and on PostgreSQL (the `backlog` fixture)."""

from __future__ import annotations

import json
import signal
import socket
import time
from typing import Any

import sqlalchemy as sa

from autopack.db.engine import Database
from autopack.db.models import DrainSession, table_of
from autopack.db.names import ORIGINAL_TABLES
from autopack.drain.holders import this_process
from tests.backlog_helpers import add_run, good_reply, results, set_phase, states
from tests.conftest import CliRunner
from tests.drain_fixtures import Drain, spawn_batch, wait_for
from tests.fake_llm import FakeLlmServer, Reply

SESSIONS = table_of(DrainSession)


def _kill_mid_phase(backlog: Database, llm: FakeLlmServer, workdir: Any) -> None:
    """Start a batch in a subprocess and kill -9 it while run-b-p0 is EXECUTING."""
    for run in ("run-a", "run-b", "run-c"):
        add_run(backlog.engine, run, 2)
    llm.queue(good_reply(), good_reply(delay_s=60))
    process = spawn_batch(workdir, llm, backlog.target.url)
    try:
        wait_for(lambda: len(llm.requests) >= 2 and len(results(backlog.engine)) >= 1)
        assert states(backlog.engine)["run-b-p0"] == "EXECUTING"
        process.kill()
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()


def test_a_dead_workers_claim_is_reclaimed_by_a_plain_batch(
    cli: CliRunner, backlog: Database, llm: FakeLlmServer, workdir: Any, drain: Drain
) -> None:
    _kill_mid_phase(backlog, llm, workdir)
    (dead,) = {row.session_id for row in results(backlog.engine)}
    url = backlog.target.url
    listed = json.loads(cli("drain", "sessions", "--database-url", url, "--json").stdout)
    assert [s["status"] for s in listed["sessions"]] == ["dead"]

    # A dry run never waits: it plans what it can and says what is held.
    started = time.monotonic()
    code, doc, stderr = drain("--dry-run", "--batch-size", "10")
    assert code == 0, stderr
    assert time.monotonic() - started < 30
    assert "run-b-p0" not in [e["phase_id"] for e in doc["results"]]
    assert "does not wait" in doc["stop_reason"]

    # A plain batch (no --resume) takes the dead process's phase back at once: no hang.
    started = time.monotonic()
    shown = cli(
        "drain", "batch", "--database-url", url, "--workspace", "ws", "--batch-size", "10",
        env=llm.env("anthropic"),
    )  # fmt: skip
    assert shown.exit_code == 0, shown.stderr
    assert time.monotonic() - started < 60
    assert "reclaimed run-b / run-b-p0 from dead process" in shown.stderr
    assert set(states(backlog.engine).values()) == {"COMPLETE"}
    complete = [(r.run_id, r.phase_id) for r in results(backlog.engine) if r.outcome == "complete"]
    assert len(complete) == len(set(complete)) == 6  # nothing drained twice

    # --resume without an id picks the newest session with results or claims, and says so.
    resumed = cli(
        "drain", "batch", "--database-url", url, "--workspace", "ws", "--resume",
        env=llm.env("anthropic"),
    )  # fmt: skip
    assert resumed.exit_code == 0, resumed.stderr
    assert f"resuming session {dead}" in resumed.stderr


def test_resume_takes_a_session_over_atomically(
    backlog: Database, llm: FakeLlmServer, drain: Drain
) -> None:
    """Issue 11 D4: a second resume of a session that a live process resumed is refused."""
    add_run(backlog.engine, "run-a", 2)
    set_phase(backlog.engine, "run-a", 1, state="FAILED")
    code, doc, _ = drain("--state", "queued", "--batch-size", "1")
    assert code == 0
    session = doc["session_id"]
    # The session's holder: a dead process of this machine (a pid that cannot exist).
    me = this_process()
    dead = f"{me.host}:4194304:{me.machine}:1"
    with backlog.engine.begin() as connection:
        connection.execute(
            sa.update(SESSIONS)
            .where(SESSIONS.c.id == session)
            .values(status="running", worker=dead)
        )
    # The first resume wins the compare-and-set and runs; its holder is now this process.
    code, doc, stderr = drain("--resume", "--session", session[:10])
    assert code == 0, stderr
    # The session row as a racing second resume read it before the first took it over:
    # its compare-and-set on the dead holder fails, so it is refused.
    with backlog.engine.begin() as connection:
        connection.execute(
            sa.update(SESSIONS).where(SESSIONS.c.id == session).values(status="running")
        )
        row = connection.execute(sa.select(SESSIONS).where(SESSIONS.c.id == session)).one()
    assert row.worker != dead
    code, _, stderr = drain("--resume", "--session", session)
    assert code == 2
    assert "still running" in stderr


def _original_tables(backlog: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every original table but llm_usage_events, row by row, in key order."""
    dump: dict[str, list[tuple[Any, ...]]] = {}
    metadata = sa.MetaData()
    with backlog.engine.connect() as connection:
        for name in ORIGINAL_TABLES:
            if name == "llm_usage_events":
                continue
            table = sa.Table(name, metadata, autoload_with=connection)
            rows = connection.execute(sa.select(table).order_by(*table.primary_key.columns))
            dump[name] = [tuple(row) for row in rows]
    return dump


def _failed_backlog(backlog: Database) -> None:
    for run in ("run-a", "run-b", "run-c", "run-d"):
        add_run(backlog.engine, run, 2)
        for index in (0, 1):
            set_phase(
                backlog.engine,
                run,
                index,
                state="FAILED",
                last_failure_reason="DELIVERABLES_VALIDATION_FAILED",
            )


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed again once the socket is


def test_a_closed_port_leaves_the_backlog_as_it_was(
    backlog: Database, llm: FakeLlmServer, drain: Drain
) -> None:
    _failed_backlog(backlog)
    before = _original_tables(backlog)
    port = _closed_port()
    env = {
        "AUTOPACK_LLM_BASE_URL": f"http://127.0.0.1:{port}",
        "AUTOPACK_LLM_MAX_RETRIES": "0",
    }
    code, doc, stderr = drain("--state", "failed", "--batch-size", "8", env=env)
    assert code == 1, stderr
    assert doc["stop_reason"].startswith("provider unavailable: ")
    assert doc["totals"]["provider_unavailable"] == 3  # the breaker's default
    assert {e["outcome"] for e in doc["results"]} == {"provider_unavailable"}
    assert {e["final_state"] for e in doc["results"]} == {"FAILED"}
    assert _original_tables(backlog) == before


def test_a_401_leaves_the_backlog_as_it_was_and_the_breaker_is_an_option(
    backlog: Database, llm: FakeLlmServer, drain: Drain
) -> None:
    _failed_backlog(backlog)
    before = _original_tables(backlog)
    llm.default_reply = Reply.client_error(401, "invalid x-api-key")
    code, doc, stderr = drain(
        "--state", "failed", "--batch-size", "8", "--max-provider-failures", "2"
    )
    assert code == 1, stderr
    assert "provider unavailable: " in doc["stop_reason"]
    assert "401" in doc["stop_reason"]
    assert doc["totals"]["provider_unavailable"] == 2
    assert _original_tables(backlog) == before
    assert set(states(backlog.engine).values()) == {"FAILED"}


def test_a_new_failure_keeps_the_previous_reason(
    backlog: Database, llm: FakeLlmServer, drain: Drain
) -> None:
    add_run(backlog.engine, "run-a", 1, deliverables={0: "shared/never.py"})
    set_phase(backlog.engine, "run-a", 0, state="FAILED", last_failure_reason="OLD_REASON")
    code, _, _ = drain("--state", "failed", "--batch-size", "1")
    assert code == 1
    with backlog.engine.connect() as connection:
        reason = connection.execute(
            sa.text("SELECT last_failure_reason FROM phases WHERE phase_id = 'run-a-p0'")
        ).scalar_one()
    assert reason.endswith("; previous: OLD_REASON")
    assert not reason.startswith("OLD_REASON")


def test_telemetry_rows_join_their_drain_result_through_the_export(
    cli: CliRunner, backlog: Database, llm: FakeLlmServer, drain: Drain
) -> None:
    """Issue 11 D3 and 'telemetry that can't be joined': drain_result_id is filled in the
    result's own transaction, and the export carries it."""
    add_run(backlog.engine, "run-a", 2)
    code, doc, _ = drain("--batch-size", "2")
    assert code == 0
    ids = {e["phase_id"]: e["result_id"] for e in doc["results"]}
    exported = cli(
        "telemetry", "export", "--database-url", backlog.target.url, "--format", "ndjson"
    )
    assert exported.exit_code == 0, exported.stderr
    rows = [json.loads(line) for line in exported.stdout.splitlines() if line.strip()]
    assert len(rows) == 2
    assert {row["phase_id"]: row["drain_result_id"] for row in rows} == ids
