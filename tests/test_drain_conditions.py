"""Draining in the conditions users have (issue 10) and the transaction defects of issue 11:
dead workers, provider outages, resumes racing, telemetry joined to its result.
Every case runs through the CLI, on SQLite and on PostgreSQL (the `backlog` fixture)."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

import autopack.drain.finish as finish_module
from autopack.db.engine import Database
from autopack.db.models import DrainSession, PhaseClaim, table_of
from autopack.db.names import ORIGINAL_TABLES
from autopack.drain.holders import this_process
from autopack.drain.sessions import start_session, take_over_session
from autopack.errors import GuardError
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


def _run_and_tier_states(backlog: Database, run_id: str) -> tuple[str, list[str]]:
    with backlog.engine.connect() as connection:
        run = connection.execute(
            sa.text("SELECT state FROM runs WHERE id = :r"), {"r": run_id}
        ).scalar_one()
        tiers = connection.execute(
            sa.text("SELECT state FROM tiers WHERE run_id = :r"), {"r": run_id}
        ).scalars()
        return run, list(tiers)


def test_a_failed_head_holds_its_runs_later_phases(
    cli: CliRunner, backlog: Database, llm: FakeLlmServer, drain: Drain
) -> None:
    add_run(backlog.engine, "run-a", 3)
    set_phase(backlog.engine, "run-a", 0, state="FAILED", last_failure_reason="boom")
    add_run(backlog.engine, "run-b", 1)
    code, doc, stderr = drain("--state", "queued", "--batch-size", "10", "--dry-run")
    assert code == 0, stderr
    assert [e["phase_id"] for e in doc["results"]] == ["run-b-p0"]
    assert "waits behind run-a-p0 (FAILED)" in doc["blocked_runs"]["run-a"]
    code, doc, _ = drain("--state", "queued", "--batch-size", "10")
    assert [e["phase_id"] for e in doc["results"]] == ["run-b-p0"]
    assert states(backlog.engine)["run-a-p1"] == "QUEUED"
    # drain phase refuses a phase whose predecessors are not COMPLETE, unless told otherwise.
    code, doc, stderr = drain("run-a", "run-a-p1", command="phase")
    assert code == 2
    assert (
        "waits behind earlier phases that are not COMPLETE: run-a-p0 (FAILED)"
        in (doc["results"][0]["failure_reason"])
    )
    code, doc, _ = drain("run-a", "run-a-p1", "--ignore-order", command="phase")
    assert code == 0
    assert states(backlog.engine)["run-a-p1"] == "COMPLETE"


def test_runs_and_tiers_follow_their_phases(
    backlog: Database, llm: FakeLlmServer, drain: Drain
) -> None:
    add_run(backlog.engine, "run-a", 2)
    add_run(backlog.engine, "run-gate", 1)
    with backlog.engine.begin() as connection:
        connection.execute(sa.text("UPDATE runs SET state = 'GATE' WHERE id = 'run-gate'"))
    assert _run_and_tier_states(backlog, "run-a") == ("RUN_CREATED", ["PENDING"])
    code, _, _ = drain("--batch-size", "1", "--run-id", "run-a")
    assert code == 0
    assert _run_and_tier_states(backlog, "run-a") == ("PHASE_EXECUTION", ["IN_PROGRESS"])
    code, _, _ = drain("--batch-size", "5")
    assert code == 0
    assert _run_and_tier_states(backlog, "run-a") == ("DONE_SUCCESS", ["COMPLETE"])
    # A run in a state the drain does not own is left alone (its tier still follows).
    assert _run_and_tier_states(backlog, "run-gate")[0] == "GATE"


def test_unknown_ids_are_refused_with_a_guess_and_nothing_is_written(
    cli: CliRunner, backlog: Database, llm: FakeLlmServer, drain: Drain
) -> None:
    add_run(backlog.engine, "telemetry-run", 1)
    code, _, stderr = drain("--run-id", "telemetry-rnu", command="queued")
    assert code == 2
    assert "run 'telemetry-rnu' is not in this database (did you mean 'telemetry-run'?)" in stderr
    code, _, stderr = drain("--run-id", "nope")
    assert code == 2
    code, _, stderr = drain("telemetry-run", "telemetry-run-p9", command="phase")
    assert code == 2
    assert "did you mean 'telemetry-run-p0'" in stderr
    with backlog.engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(SESSIONS)).scalar() == 0
    url = backlog.target.url
    for command in ("explain", "analyze"):
        result = cli("telemetry", command, "--database-url", url, "--run-id", "nope")
        assert result.exit_code == 2, (command, result.stderr)
        assert "run 'nope' is not in this database" in result.stderr


def test_a_dry_run_plans_a_legacy_db_that_was_not_upgraded(
    cli: CliRunner, original_db: tuple[Any, dict[str, int]], workdir: Any
) -> None:
    path, _ = original_db
    (workdir / "ws").mkdir()
    before = path.read_bytes()
    result = cli(
        "drain", "batch", "--db", "legacy", "--workspace", "ws", "--dry-run", "--json",
        "--max-total-tokens", "1000", "--state", "all",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "the real drain needs `autopack db upgrade` first" in result.stderr
    doc = json.loads(result.stdout)
    assert doc["dry_run"] is True
    assert doc["results"], "the backlog is planned"
    assert all(e["estimated_tokens"] and e["selected_budget"] for e in doc["results"])
    forecast = doc["forecast"]
    assert forecast["predicted_output_tokens"] == sum(e["estimated_tokens"] for e in doc["results"])
    assert forecast["max_total_tokens"] == 1000
    assert forecast["within_max_total_tokens"] is (forecast["predicted_output_tokens"] <= 1000)
    assert path.read_bytes() == before
    # The real drain is refused, saying what to do.
    real = cli("drain", "batch", "--db", "legacy", "--workspace", "ws", "--dry-run")
    assert real.exit_code == 0
    refused = cli(
        "drain", "batch", "--db", "legacy", "--workspace", "ws",
        env={"AUTOPACK_LLM_PROVIDER": "anthropic", "AUTOPACK_LLM_MODEL": "m",
             "AUTOPACK_LLM_API_KEY": "k"},
    )  # fmt: skip
    assert refused.exit_code == 2
    assert "autopack db upgrade" in refused.stderr


def test_an_answered_call_that_failed_verification_is_not_promising(
    cli: CliRunner, backlog: Database, llm: FakeLlmServer
) -> None:
    """The sample rule: succeeded, a clean telemetry sample, or timed out — and the triage
    output says which. A reply whose files fail verification is no clean sample."""
    add_run(backlog.engine, "run-a", 2, deliverables={0: "shared/never.py"})
    add_run(backlog.engine, "run-b", 2, deliverables={0: "shared/never.py"})
    add_run(backlog.engine, "run-c", 1)
    result = cli(
        "drain", "batch", "--database-url", backlog.target.url, "--workspace", "ws",
        "--batch-size", "3", "--max-fingerprint-repeats", "5",
        env=llm.env("anthropic"),
    )  # fmt: skip
    assert result.exit_code == 1
    assert "sample run-a: failed with a new failure; kept at normal priority" in result.stderr
    assert "sample run-b: deprioritised" in result.stderr
    assert "sample run-c: promising (succeeded)" in result.stderr


def _read_all(fd: int, until: float) -> bytes:
    chunks: list[bytes] = []
    while time.monotonic() < until:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_ctrl_c_on_a_terminal_prints_the_summary_and_the_resume_command(
    backlog: Database, llm: FakeLlmServer, workdir: Any
) -> None:
    """On a pseudo-terminal: the live display runs, and Ctrl-C prints what finished, the
    session and the exact --resume command, then exits 130."""
    add_run(backlog.engine, "run-a", 1)
    add_run(backlog.engine, "run-b", 1)
    llm.queue(good_reply(), good_reply(delay_s=60))
    master, slave = pty.openpty()
    env = {**os.environ, **llm.env("anthropic"), "TERM": "xterm", "COLUMNS": "120"}
    env.pop("NO_COLOR", None)
    env.pop("DATABASE_URL", None)
    process = subprocess.Popen(
        [
            sys.executable, "-m", "autopack", "drain", "batch", "--database-url",
            backlog.target.url, "--workspace", "ws", "--batch-size", "5",
        ],
        cwd=workdir, env=env, stdin=slave, stdout=slave, stderr=slave,
    )  # fmt: skip
    os.close(slave)
    try:
        wait_for(lambda: len(llm.requests) >= 2 and len(results(backlog.engine)) >= 1)
        time.sleep(0.5)  # a refresh or two of the live display
        process.send_signal(signal.SIGINT)
        output = _read_all(master, time.monotonic() + 30).decode("utf-8", errors="replace")
        code = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
    assert code == 130, output
    (session,) = {row.session_id for row in results(backlog.engine)}
    assert "phase in flight" in output  # the live display ran
    assert "complete: run-a / run-a-p0 — predicted" in output  # the kept line
    assert "processed 1: 1 complete" in output  # the summary of what finished
    assert f"interrupted: session {session} saved" in output
    assert f"--resume --session {session}" in output
    assert states(backlog.engine)["run-b-p0"] == "QUEUED"  # given back


def test_without_a_terminal_the_progress_is_plain_lines_and_quiet_hides_it(
    cli: CliRunner, backlog: Database, llm: FakeLlmServer
) -> None:
    add_run(backlog.engine, "run-a", 2)
    args = ("drain", "batch", "--database-url", backlog.target.url, "--workspace", "ws")
    plain = cli(*args, "--batch-size", "1", env=llm.env("anthropic"))
    assert plain.exit_code == 0, plain.stderr
    assert "complete: run-a / run-a-p0 — predicted " in plain.stderr
    assert "\x1b[" not in plain.stderr  # no live display, no cursor movement
    quiet = cli(*args, "--batch-size", "1", "--quiet", env=llm.env("anthropic"))
    assert quiet.exit_code == 0
    assert "run-a-p1 — predicted" not in quiet.stderr


def test_state_result_claim_and_link_commit_together_or_not_at_all(
    backlog: Database, llm: FakeLlmServer, drain: Drain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11 D3: a failure at the last step of the finishing transaction (the telemetry
    link) leaves no COMPLETE phase without its result, and no result without its state."""
    add_run(backlog.engine, "run-a", 1)

    def broken_link(*_args: Any) -> None:
        raise RuntimeError("the process died here")

    monkeypatch.setattr(finish_module, "link_telemetry", broken_link)
    code, _, _ = drain("run-a", "run-a-p0", command="phase")
    assert code == 70
    assert states(backlog.engine) == {"run-a-p0": "QUEUED"}  # given back, not COMPLETE
    assert results(backlog.engine) == []
    with backlog.engine.connect() as connection:
        telemetry = connection.execute(
            sa.text("SELECT count(*) FROM token_estimation_v2_events")
        ).scalar_one()
        claims = connection.execute(sa.text("SELECT count(*) FROM autopack_phase_claims"))
        assert claims.scalar_one() == 0
    assert telemetry == 1  # the reply's row was committed when it arrived


def test_waiting_on_a_live_claim_says_what_it_waits_for(
    cli: CliRunner, backlog: Database, llm: FakeLlmServer
) -> None:
    """A claim held by a live process (here: this test's own) is waited for, and the drain
    says for what, until when, and how to stop; once its lease runs out the drain ends."""
    add_run(backlog.engine, "run-a", 1)
    holder = this_process()
    expires = datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=3)
    set_phase(backlog.engine, "run-a", 0, state="EXECUTING")
    with backlog.engine.begin() as connection:
        connection.execute(
            sa.insert(table_of(PhaseClaim)).values(
                run_id="run-a",
                phase_id="run-a-p0",
                session_id="elsewhere",
                worker=f"{holder.text()}:elsewhere:1",
                previous_state="QUEUED",
                lease_expires_at=expires,
            )
        )
    result = cli(
        "drain", "batch", "--database-url", backlog.target.url, "--workspace", "ws",
        env=llm.env("anthropic"),
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert f"waiting for run-a / run-a-p0: held by {holder.host}:{holder.pid} until " in (
        result.stderr
    )
    assert "Ctrl-C stops waiting" in result.stderr
    assert states(backlog.engine) == {"run-a-p0": "EXECUTING"}  # never taken from a live holder


def test_of_two_resumes_that_read_the_same_dead_holder_only_one_takes_over(
    backlog: Database,
) -> None:
    """The compare-and-set itself: both resumes read the session while its holder was dead;
    the first writes its holder, the second's write matches nothing and is refused."""
    session = start_session(backlog.engine, kind="batch", options={}, telemetry_enabled=True)
    me = this_process()
    with backlog.engine.begin() as connection:
        connection.execute(
            sa.update(SESSIONS)
            .where(SESSIONS.c.id == session)
            .values(status="interrupted", worker=f"{me.host}:4194304:{me.machine}:1")
        )
        seen = connection.execute(sa.select(SESSIONS).where(SESSIONS.c.id == session)).one()
    take_over_session(backlog.engine, seen, f"{me.host}:1:{me.machine}:first")
    with pytest.raises(GuardError, match="taken over by another process"):
        take_over_session(backlog.engine, seen, f"{me.host}:2:{me.machine}:second")
    with backlog.engine.connect() as connection:
        row = connection.execute(sa.select(SESSIONS).where(SESSIONS.c.id == session)).one()
    assert (row.worker, row.status) == (f"{me.host}:1:{me.machine}:first", "running")
