"""`autopack drain batch|queued|sessions`: triage order, every stop condition, dry run, workers."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

import autopack.drain.controller as controller_module
import autopack.drain.phase as phase_module
from autopack.db.engine import Database
from autopack.drain.attempt import PhaseOptions
from autopack.drain.batch import run_batch
from autopack.drain.controller import BatchOptions
from autopack.drain.selection import Filters
from autopack.drain.sessions import start_session
from autopack.drain.triage import Limits
from autopack.estimator import load_builtin_set
from autopack.llm.clients import make_client
from autopack.llm.settings import load_llm_settings
from tests.backlog_helpers import NEVER, add_run, good_reply, results, set_phase, set_run, states
from tests.builder_replies import reply_for
from tests.conftest import CliRunner, reference_seed_spec
from tests.drain_fixtures import Drain, order, spawn_batch, wait_for
from tests.fake_llm import FakeLlmServer, Reply


def test_sample_first_gives_every_run_one_phase_before_any_gets_a_second(
    cli: CliRunner, backlog: Database, llm: FakeLlmServer, drain: Drain
) -> None:
    for run in ("run-a", "run-b", "run-c"):
        add_run(backlog.engine, run, 3)
    code, doc, stderr = drain("--batch-size", "9")
    assert code == 0, stderr
    assert order(doc)[:3] == ["run-a-p0", "run-b-p0", "run-c-p0"]
    assert order(doc)[3:6] == ["run-a-p1", "run-b-p1", "run-c-p1"]
    assert doc["totals"]["succeeded"] == 9
    assert doc["totals"]["telemetry_events"] == 9
    assert all(e["telemetry_per_minute"] > 0 for e in doc["results"])
    assert llm.answered_2xx == 9
    assert set(states(backlog.engine).values()) == {"COMPLETE"}


def test_without_sample_first_no_run_is_deprioritised(
    cli: CliRunner, backlog: Database, llm: FakeLlmServer, drain: Drain
) -> None:
    add_run(backlog.engine, "run-a", 2, deliverables={0: NEVER})
    add_run(backlog.engine, "run-b", 2, deliverables={0: NEVER})
    add_run(backlog.engine, "run-c", 2)
    code, doc, _ = drain(
        "--batch-size",
        "6",
        "--max-fingerprint-repeats",
        "5",
        "--no-telemetry",
        "--no-sample-first",
        "--ignore-order",  # the group order is the point here, not run order
    )
    assert code == 1
    # Plain bucket / phase-index order: b's repeated failure does not push it back.
    assert order(doc) == ["run-a-p0", "run-b-p0", "run-c-p0", "run-a-p1", "run-b-p1", "run-c-p1"]


def test_failed_backlog_is_drained_by_failure_bucket_and_requeued(
    cli: CliRunner, backlog: Database, llm: FakeLlmServer, drain: Drain
) -> None:
    reasons = {
        "r1-timeout": "Phase timed out after 900 s",
        "r2-other": "assertion failed somewhere",
        "r3-patch": "patch did not apply",
        "r4-deliverable": "missing deliverable x.py",
        "r5-collection": "ImportError during collection",
        "r6-unknown": None,
    }
    for run, reason in reasons.items():
        add_run(backlog.engine, run, 1)
        set_phase(backlog.engine, run, 0, state="FAILED", last_failure_reason=reason)
    add_run(backlog.engine, "r7-queued", 1)
    code, doc, stderr = drain("--state", "failed", "--batch-size", "10")
    assert code == 0, stderr
    assert order(doc) == [
        "r6-unknown-p0",
        "r5-collection-p0",
        "r4-deliverable-p0",
        "r3-patch-p0",
        "r2-other-p0",
        "r1-timeout-p0",
    ]
    final = states(backlog.engine)
    assert final["r7-queued-p0"] == "QUEUED"
    assert all(final[f"{run}-p0"] == "COMPLETE" for run in reasons)


def test_default_state_is_failed_for_a_legacy_db(
    cli: CliRunner, backlog: Database, llm: FakeLlmServer
) -> None:
    add_run(backlog.engine, "run-a", 2)
    set_phase(backlog.engine, "run-a", 0, state="COMPLETE")
    set_phase(backlog.engine, "run-a", 1, state="FAILED")
    assert (
        cli("db", "stamp", "--database-url", backlog.target.url, "--role", "legacy").exit_code == 0
    )
    result = cli(
        "drain",
        "batch",
        "--database-url",
        backlog.target.url,
        "--workspace",
        "ws",
        env=llm.env("anthropic"),
    )
    assert result.exit_code == 0
    assert "draining failed phases (default for a legacy database)" in result.stderr
    assert states(backlog.engine) == {"run-a-p0": "COMPLETE", "run-a-p1": "COMPLETE"}


def test_repeated_fingerprint_deprioritises_a_run_sample(
    cli: CliRunner, backlog: Database, llm: FakeLlmServer, drain: Drain
) -> None:
    add_run(backlog.engine, "run-a", 2, deliverables={0: NEVER})
    add_run(backlog.engine, "run-b", 2, deliverables={0: NEVER})
    add_run(backlog.engine, "run-c", 2)
    code, doc, _ = drain(
        "--batch-size", "6", "--max-fingerprint-repeats", "5", "--no-telemetry", "--ignore-order"
    )
    assert code == 1
    # a fails first (new fingerprint: normal priority), b fails the same way: deprioritised,
    # so a's and c's second phases come before b's.
    assert order(doc) == ["run-a-p0", "run-b-p0", "run-c-p0", "run-a-p1", "run-c-p1", "run-b-p1"]
    fingerprints = {e["fingerprint"] for e in doc["results"] if e["fingerprint"]}
    assert len(fingerprints) == 1


def test_max_fingerprint_repeats_stops_the_run(
    cli: CliRunner, backlog: Database, llm: FakeLlmServer, drain: Drain
) -> None:
    add_run(backlog.engine, "run-bad", 4, deliverables={i: NEVER for i in range(4)})
    add_run(backlog.engine, "run-ok", 1)
    code, doc, _ = drain("--batch-size", "10", "--max-fingerprint-repeats", "2", "--ignore-order")
    assert code == 1
    assert order(doc) == ["run-bad-p0", "run-ok-p0", "run-bad-p1"]
    assert "fingerprint repeated 2" in doc["stopped_runs"]["run-bad"]
    assert states(backlog.engine)["run-bad-p2"] == "QUEUED"


def test_max_attempts_per_phase_fires_and_holds_the_run_behind_it(
    cli: CliRunner, backlog: Database, llm: FakeLlmServer, drain: Drain
) -> None:
    add_run(backlog.engine, "run-a", 2, deliverables={0: NEVER})
    set_phase(backlog.engine, "run-a", 0, state="FAILED")
    code, doc, _ = drain(
        "--state",
        "all",
        "--batch-size",
        "10",
        "--max-attempts-per-phase",
        "2",
        "--max-fingerprint-repeats",
        "9",
    )
    assert code == 1
    # p0 is tried twice, then the run stops: its later phases build on p0 and wait behind it.
    assert order(doc) == ["run-a-p0", "run-a-p0"]
    assert "used its 2 attempt(s)" in doc["stopped_runs"]["run-a"]
    assert states(backlog.engine)["run-a-p1"] == "QUEUED"


def test_a_refused_head_never_lets_later_phases_jump_the_queue(
    cli: CliRunner, backlog: Database, llm: FakeLlmServer, drain: Drain
) -> None:
    add_run(backlog.engine, "run-a", 3)
    # p0 is refused before its claim (no deliverables), so it stays QUEUED.
    set_phase(backlog.engine, "run-a", 0, scope={"paths": ["shared/"], "deliverables": []})
    code, doc, _ = drain("--batch-size", "10")
    assert code == 0
    assert order(doc) == ["run-a-p0", "run-a-p0"]
    assert states(backlog.engine) == {
        "run-a-p0": "QUEUED",
        "run-a-p1": "QUEUED",
        "run-a-p2": "QUEUED",
    }
    assert "run-a" in doc["stopped_runs"]


def test_batch_size_and_skip_run_prefix(
    cli: CliRunner, backlog: Database, llm: FakeLlmServer, drain: Drain
) -> None:
    add_run(backlog.engine, "keep-1", 2)
    add_run(backlog.engine, "skip-1", 2)
    add_run(backlog.engine, "keep-2", 2)
    code, doc, _ = drain("--batch-size", "3", "--skip-run-prefix", "skip-")
    assert code == 0
    assert len(doc["results"]) == 3
    assert not any(p.startswith("skip-") for p in order(doc))
    assert doc["stop_reason"] == "batch size 3 reached"


def test_max_consecutive_zero_yield_stops_the_session(
    cli: CliRunner, backlog: Database, llm: FakeLlmServer, drain: Drain
) -> None:
    add_run(backlog.engine, "run-a", 5)
    code, doc, _ = drain(
        "--batch-size", "10", "--no-telemetry", "--max-consecutive-zero-yield", "2"
    )
    assert code == 0
    assert len(doc["results"]) == 2
    assert "2 consecutive phases with zero telemetry" in doc["stop_reason"]
    assert doc["totals"]["zero_yield_reasons"] == {"telemetry_disabled": 2}


def test_max_total_tokens_stops_the_session(
    cli: CliRunner, backlog: Database, llm: FakeLlmServer, drain: Drain
) -> None:
    add_run(backlog.engine, "run-a", 5)
    llm.default_reply = good_reply(output_tokens=600)
    code, doc, _ = drain("--batch-size", "10", "--max-total-tokens", "1000")
    assert code == 0
    assert len(doc["results"]) == 2
    assert "max total tokens 1,000 reached" in doc["stop_reason"]


def test_run_token_cap_and_incident_token_cap(
    cli: CliRunner, backlog: Database, llm: FakeLlmServer, drain: Drain
) -> None:
    add_run(backlog.engine, "capped-run", 2)
    set_run(backlog.engine, "capped-run", token_cap=100, tokens_used=150)
    add_run(backlog.engine, "run-b", 2)
    set_phase(backlog.engine, "run-b", 0, incident_token_cap=1000, tokens_used=1200)
    code, doc, _ = drain("--batch-size", "10")
    assert code == 0
    assert order(doc) == ["run-b-p1"]
    assert "token cap 100" in doc["stopped_runs"]["capped-run"]
    assert "incident token cap 1,000" in next(iter(doc["skipped_phases"].values()))


def test_max_total_minutes_stops_the_session(
    cli: CliRunner, backlog: Database, llm: FakeLlmServer, drain: Drain
) -> None:
    add_run(backlog.engine, "run-a", 10)
    llm.default_reply = good_reply(delay_s=0.5)
    code, doc, _ = drain("--batch-size", "10", "--max-total-minutes", "0.015")
    assert code == 0
    assert 1 <= len(doc["results"]) < 10
    assert "max total time" in doc["stop_reason"]


def test_phase_timeout_and_max_timeouts_per_run(
    cli: CliRunner, backlog: Database, llm: FakeLlmServer, drain: Drain
) -> None:
    add_run(backlog.engine, "slow-run", 3)
    llm.default_reply = Reply.slow(5.0)
    code, doc, _ = drain(
        "--batch-size",
        "10",
        "--phase-timeout-seconds",
        "1",
        "--max-timeouts-per-run",
        "2",
        "--ignore-order",
        env={"AUTOPACK_LLM_MAX_RETRIES": "0"},
    )
    assert code == 1
    assert [e["outcome"] for e in doc["results"]] == ["timeout", "timeout"]
    assert doc["totals"]["timeouts"] == 2
    assert "2 timeouts" in doc["stopped_runs"]["slow-run"]
    assert states(backlog.engine) == {
        "slow-run-p0": "FAILED",
        "slow-run-p1": "FAILED",
        "slow-run-p2": "QUEUED",
    }
    assert doc["results"][0]["zero_yield_reason"] == "llm_call_failed"


def test_dry_run_selects_like_a_real_run_and_writes_nothing(
    cli: CliRunner, backlog: Database, llm: FakeLlmServer, workdir: Path, drain: Drain
) -> None:
    for run in ("run-a", "run-b"):
        add_run(backlog.engine, run, 2)
    file = backlog.target.sqlite_path
    before = file.read_bytes() if file else None
    result = cli(
        "drain",
        "batch",
        "--database-url",
        backlog.target.url,
        "--workspace",
        "ws",
        "--dry-run",
        "--batch-size",
        "3",
    )
    assert result.exit_code == 0, result.stderr
    assert "DRY RUN" in result.stderr
    assert llm.requests == []
    assert (file.read_bytes() if file else None) == before
    assert set(states(backlog.engine).values()) == {"QUEUED"}
    doc = json.loads(
        cli(
            "drain",
            "batch",
            "--database-url",
            backlog.target.url,
            "--workspace",
            "ws",
            "--dry-run",
            "--batch-size",
            "3",
            "--json",
        ).stdout
    )
    assert doc["dry_run"] is True
    assert order(doc) == ["run-a-p0", "run-b-p0", "run-a-p1"]
    code, real, _ = drain("--batch-size", "3")
    assert code == 0
    assert order(real) == order(doc)


def test_workers_drain_runs_in_parallel_and_each_run_in_order(
    cli: CliRunner, backlog: Database, llm: FakeLlmServer, drain: Drain
) -> None:
    for index in range(4):
        add_run(backlog.engine, f"run-{index}", 2)
    llm.default_reply = good_reply(delay_s=0.6)
    code, doc, stderr = drain("--batch-size", "8", "--workers", "4")
    assert code == 0, stderr
    assert doc["totals"]["succeeded"] == 8
    rows = results(backlog.engine, doc["session_id"])
    by_phase = {row.phase_id: row for row in rows}
    for index in range(4):
        first, second = by_phase[f"run-{index}-p0"], by_phase[f"run-{index}-p1"]
        assert first.finished_at <= second.started_at
    # 8 phases of 0.6 s each on 4 workers: far less than the 4.8 s a single worker needs.
    assert sum(e["duration_s"] for e in doc["results"]) > 4.0
    assert len({e["phase_id"] for e in doc["results"]}) == 8


def test_independent_phases_of_one_run_may_run_at_once(
    cli: CliRunner, backlog: Database, llm: FakeLlmServer, drain: Drain
) -> None:
    add_run(backlog.engine, "indep", 4, independent=True)
    llm.default_reply = good_reply(delay_s=0.5)
    code, doc, stderr = drain("--batch-size", "4", "--workers", "4")
    assert code == 0, stderr
    rows = results(backlog.engine, doc["session_id"])
    starts = sorted(row.started_at for row in rows)
    ends = sorted(row.finished_at for row in rows)
    assert starts[-1] < ends[0]  # all four were running at the same time


def test_drain_queued_runs_the_v4_seed_run_in_order(
    cli: CliRunner, seed_db: Database, fake_llm: FakeLlmServer, workdir: Path
) -> None:
    spec = reference_seed_spec("telemetry-collection-v4")
    for phase in spec.phases:
        fake_llm.queue(Reply.ok(reply_for(phase.scope.deliverables), output_tokens=420))
    (workdir / "ws").mkdir()
    result = cli(
        "drain",
        "queued",
        "--run-id",
        spec.run_id,
        "--batch-size",
        "10",
        "--db",
        "seed",
        "--workspace",
        "ws",
        "--json",
        env=fake_llm.env("anthropic"),
    )
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert order(doc) == [p.phase_id for p in spec.phases]
    assert doc["totals"]["telemetry_events"] == 10


def test_drain_queued_never_loops_on_a_phase_that_cannot_progress(
    cli: CliRunner, backlog: Database, llm: FakeLlmServer, drain: Drain
) -> None:
    add_run(backlog.engine, "run-a", 3, deliverables={1: NEVER})
    code, doc, _ = drain("--run-id", "run-a", command="queued")
    assert code == 1
    # p2 builds on p1, which failed: it waits, and the report says why.
    assert order(doc) == ["run-a-p0", "run-a-p1"]
    assert doc["stop_reason"] == "no eligible phase remains"
    assert "waits behind run-a-p1 (FAILED)" in doc["blocked_runs"]["run-a"]
    assert states(backlog.engine)["run-a-p2"] == "QUEUED"


def test_sessions_list_and_show(
    cli: CliRunner, backlog: Database, llm: FakeLlmServer, drain: Drain
) -> None:
    add_run(backlog.engine, "run-a", 2)
    code, doc, _ = drain("--batch-size", "2")
    assert code == 0
    listed = json.loads(
        cli("drain", "sessions", "--database-url", backlog.target.url, "--json").stdout
    )
    (row,) = listed["sessions"]
    assert row["id"] == doc["session_id"]
    assert row["status"] == "completed"
    assert row["results"] == 2
    shown = json.loads(
        cli(
            "drain", "sessions", doc["session_id"], "--database-url", backlog.target.url, "--json"
        ).stdout
    )
    assert order(shown) == order(doc)
    missing = cli("drain", "sessions", "nope", "--database-url", backlog.target.url)
    assert missing.exit_code == 2


def test_bad_options_are_refused(
    cli: CliRunner, backlog: Database, llm: FakeLlmServer, drain: Drain
) -> None:
    add_run(backlog.engine, "run-a", 1)
    assert drain("--state", "everything")[0] == 2
    assert drain("--session", "abc")[0] == 2
    assert drain("--resume", "--dry-run")[0] == 2
    assert drain("--workers", "0")[0] == 2
    code, _, stderr = drain("--resume")
    assert code == 2
    assert "there is no unfinished batch session to resume" in stderr
    assert set(states(backlog.engine).values()) == {"QUEUED"}


@pytest.mark.parametrize("how", ["kill", "interrupt", "terminate"])
def test_resume_after_a_crash_or_ctrl_c_finishes_without_duplicates(
    cli: CliRunner, backlog: Database, llm: FakeLlmServer, workdir: Path, how: str, drain: Drain
) -> None:
    for run in ("run-a", "run-b", "run-c"):
        add_run(backlog.engine, run, 2)
    llm.queue(good_reply(), good_reply(delay_s=60))
    process = spawn_batch(workdir, llm, backlog.target.url)
    try:
        wait_for(lambda: len(llm.requests) >= 2 and len(results(backlog.engine)) >= 1)
        assert states(backlog.engine)["run-b-p0"] == "EXECUTING"
        if how == "kill":
            process.kill()
        else:
            process.send_signal(signal.SIGINT if how == "interrupt" else signal.SIGTERM)
        code = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    if how == "kill":
        assert code == -signal.SIGKILL
        # The dead process still holds run-b-p0; resume gives it back at once.
        assert states(backlog.engine)["run-b-p0"] == "EXECUTING"
    else:
        # SIGTERM (systemd, docker, `timeout`) is handled as Ctrl-C is, with its own code.
        assert code == (130 if how == "interrupt" else 143), process.communicate()[1]
        assert states(backlog.engine)["run-b-p0"] == "QUEUED"
        listed = cli("drain", "sessions", "--database-url", backlog.target.url, "--json")
        assert [s["status"] for s in json.loads(listed.stdout)["sessions"]] == ["interrupted"]
    (session,) = {row.session_id for row in results(backlog.engine)}
    code, doc, stderr = drain("--resume")
    assert code == 0, stderr
    assert doc["session_id"] == session
    done = [(row.run_id, row.phase_id) for row in results(backlog.engine)]
    assert len(done) == 6
    assert len(set(done)) == 6
    assert set(states(backlog.engine).values()) == {"COMPLETE"}
    listed = json.loads(
        cli("drain", "sessions", "--database-url", backlog.target.url, "--json").stdout
    )
    assert [s["status"] for s in listed["sessions"]] == ["completed"]


def test_resume_refuses_a_session_whose_process_is_alive(
    cli: CliRunner, backlog: Database, llm: FakeLlmServer, drain: Drain
) -> None:
    add_run(backlog.engine, "run-a", 1)
    # A batch session started by this (living) process, as another terminal would see it.
    live = start_session(backlog.engine, kind="batch", options={}, telemetry_enabled=True)
    code, _, stderr = drain("--resume", "--session", live[:7])  # any unique prefix names it
    assert code == 2
    assert "still running" in stderr
    assert states(backlog.engine) == {"run-a-p0": "QUEUED"}


def test_a_phase_abandoned_before_its_claim_is_not_left_executing(
    backlog: Database, llm: FakeLlmServer, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_run(backlog.engine, "run-a", 3)
    real_preflight = phase_module._preflight

    def slow_preflight(*args: Any, **kwargs: Any) -> None:
        time.sleep(1.5)
        real_preflight(*args, **kwargs)

    monkeypatch.setattr(phase_module, "_preflight", slow_preflight)
    monkeypatch.setattr(controller_module, "ABANDON_GRACE_S", 0.0)
    options = BatchOptions(
        filters=Filters(states=("QUEUED",)),
        limits=Limits(batch_size=3, max_timeouts_per_run=None),
        phase=PhaseOptions(
            workspace=workdir / "ws",
            coefficients=load_builtin_set("default"),
            telemetry_enabled=True,
            telemetry_tables_present=True,
            phase_timeout_s=1.0,
        ),
        poll_interval_s=0.2,
    )
    with make_client(load_llm_settings(llm.env("anthropic"))) as client:
        report = run_batch(backlog.engine, client, options)
    # Every attempt the controller counted is one result row, and no phase is left EXECUTING
    # with a lease nobody renews.
    rows = results(backlog.engine, report.session_id)
    assert len(rows) == report.totals.processed
    assert "EXECUTING" not in states(backlog.engine).values()
    assert len({(r.run_id, r.phase_id, r.seq) for r in rows}) == len(rows)
