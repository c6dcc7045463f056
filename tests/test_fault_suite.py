"""The fault suite (issue 11, "The standing suite"): every fault ends in a retry, a FAILED
phase with a fingerprint and a reason, or (a provider failure that says nothing about the
phase, issue 10) a phase given back unchanged; no fault crashes the batch. Prints the counts.

One drain, one worker, one run per fault, so the fake model's scripted replies meet the
phases in order. The model: 429 (with and without retry-after, and exhausted), 500, 503, a
reset, a timeout, invalid JSON, an empty body, no files, the wrong files, truncation at every
deliverable boundary (and once recovered by the escalation), the poison replies of defect 7.
The environment: the disk full (an OSError injected into the workspace's rename), the SQLite
lock held past the busy timeout, PostgreSQL connections cut with pg_terminate_backend.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import autopack.db.engine as engine_module
from autopack.db.engine import Database, OpenMode, open_database
from autopack.db.models import Phase, table_of
from autopack.settings import resolve_target
from tests.backlog_helpers import add_run, good_reply
from tests.conftest import CliRunner
from tests.fake_llm import FakeLlmServer, Reply
from tests.reliability_helpers import check_invariants
from tests.test_drain_busy_db import hold_write_lock
from tests.test_poison_replies import DEEP, SURROGATE_FILE

pytestmark = pytest.mark.slow

THREE = ["shared/a.py", "shared/b.py", "shared/c.py"]
DISK_FULL = "shared/diskfull.py"


def _ndjson(paths: list[str]) -> str:
    return "\n".join(json.dumps({"path": p, "content": f"x = {i}\n"}) for i, p in enumerate(paths))


def _files(paths: list[str]) -> str:
    return json.dumps({"files": [{"path": p, "content": "x = 1\n"} for p in paths]})


# (name, deliverables, replies queued for it, expected end)
FAULTS: list[tuple[str, list[str] | None, list[Reply], str]] = [
    ("429 retry-after", None, [Reply.rate_limited("1"), good_reply()], "retried"),
    ("429 no retry-after", None, [Reply.rate_limited(None), good_reply()], "retried"),
    # 429 after the retries says nothing about the phase (issue 10): it is given back
    # unchanged, and the batch takes it up again once the provider answers.
    ("429 exhausted", None, [*[Reply.rate_limited("0")] * 3, good_reply()], "given back"),
    ("500", None, [Reply.server_error(500), good_reply()], "retried"),
    ("503", None, [Reply.server_error(503), good_reply()], "retried"),
    ("connection reset", None, [Reply.connection_reset(), good_reply()], "retried"),
    ("timeout", None, [Reply.slow(2.5), good_reply()], "retried"),
    ("invalid JSON body", None, [Reply.malformed()], "failed"),
    ("empty body", None, [Reply.raw("")], "failed"),
    ("no files", None, [Reply.ok("Sorry, I cannot do that.", output_tokens=300)], "failed"),
    ("wrong files", None, [Reply.ok(_files(["other/x.py"]), output_tokens=300)], "failed"),
    *[
        (
            f"truncated after {k} of 3 files",
            THREE,
            [Reply.cut_off(_ndjson(THREE[:k]) + '\n{"path": ', output_tokens=4000)] * 2,
            "failed",
        )
        for k in range(4)
    ],
    (
        "truncated, then escalation succeeds",
        THREE,
        [
            Reply.cut_off(_ndjson(THREE[:1]), output_tokens=4000),
            Reply.ok(_ndjson(THREE), output_tokens=600),
        ],
        "retried",
    ),
    ("lone surrogate", None, [Reply.ok(SURROGATE_FILE, output_tokens=300)], "failed"),
    ("JSON 1,000 deep", None, [Reply.ok(DEEP, output_tokens=300)], "failed"),
    ("JSON body 1,000 deep", None, [Reply.raw(DEEP)], "failed"),
    ("disk full", [DISK_FULL], [Reply.ok(_files([DISK_FULL]), output_tokens=300)], "failed"),
]


# 2xx replies whose body is no reply at all: no usage to record, so no telemetry row.
UNREADABLE = {"invalid JSON body", "empty body", "JSON body 1,000 deep"}


@pytest.fixture
def llm_env(fake_llm: FakeLlmServer) -> dict[str, str]:
    return {
        **fake_llm.env("anthropic"),
        "AUTOPACK_LLM_MAX_RETRIES": "2",
        "AUTOPACK_LLM_TIMEOUT_S": "1",
    }


def _disk_full_replace(real: Any) -> Any:
    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if str(dst).endswith(DISK_FULL):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        real(src, dst, *args, **kwargs)

    return replace


def _backlog(cli: CliRunner, url: str, workdir: Path) -> Database:
    assert cli("db", "init", "--database-url", url).exit_code == 0
    (workdir / "ws").mkdir(exist_ok=True)
    return open_database(resolve_target(None, url), OpenMode.READ_WRITE)


def test_every_fault_ends_in_a_retry_or_a_failed_phase(
    cli: CliRunner,
    fake_llm: FakeLlmServer,
    llm_env: dict[str, str],
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = _backlog(cli, "sqlite:///faults.db", workdir)
    phases = table_of(Phase)
    for index, (_, deliverables, replies, _) in enumerate(FAULTS):
        run_id = f"fault-{index:02d}"
        add_run(db.engine, run_id, 1)
        if deliverables is not None:
            with db.engine.begin() as connection:
                connection.execute(
                    sa.update(phases)
                    .where(phases.c.run_id == run_id)
                    .values(scope={"paths": ["shared/"], "deliverables": deliverables})
                )
        fake_llm.queue(*replies)
    fake_llm.default_reply = Reply.ok("unexpected extra call", output_tokens=300)
    monkeypatch.setattr(os, "replace", _disk_full_replace(os.replace))
    # The database is locked by another writer, past the busy timeout, as the drain starts.
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", 300)
    go = threading.Event()
    locker = threading.Thread(target=hold_write_lock, args=(workdir / "faults.db", 2.0, go))
    locker.start()
    go.set()
    time.sleep(0.2)

    result = cli(
        "drain",
        "batch",
        "--database-url",
        db.target.url,
        "--workspace",
        "ws",
        "--json",
        "--batch-size",
        str(len(FAULTS) + 1),  # the given-back phase is attempted twice
        "--max-fingerprint-repeats",
        "100",
        env=llm_env,
    )
    locker.join()

    assert result.exit_code == 1, result.stderr  # ran, and some phases failed
    doc = json.loads(result.stdout)
    by_run: dict[str, list[dict[str, Any]]] = {}
    for entry in doc["results"]:
        by_run.setdefault(entry["run_id"], []).append(entry)
    tally: Counter[str] = Counter()
    wrong: list[str] = []
    lines = []
    for index, (name, _, _, expected) in enumerate(FAULTS):
        attempts = by_run.get(f"fault-{index:02d}")
        if not attempts:
            wrong.append(f"{name}: never attempted")
            continue
        entry = attempts[0]
        if entry["outcome"] == "provider_unavailable":
            end = "given back"
            if entry["final_state"] == "EXECUTING" or entry["fingerprint"]:
                wrong.append(f"{name}: given back, yet left EXECUTING or fingerprinted")
            if attempts[-1]["final_state"] != "COMPLETE":
                wrong.append(f"{name}: not taken up again once the provider answered")
        elif entry["final_state"] == "COMPLETE":
            end = "retried" if entry["llm_attempts"] > 1 or entry["llm_calls"] > 1 else "clean"
        else:
            end = "failed"
            if not entry["fingerprint"]:
                wrong.append(f"{name}: FAILED without a fingerprint")
            if entry["telemetry_events"] == 0 and not entry["zero_yield_reason"]:
                wrong.append(f"{name}: no telemetry and no zero-yield reason")
        tally[end] += 1
        if end != expected:
            wrong.append(f"{name}: ended {end}, expected {expected}")
        lines.append(
            f"  {name:<38} {end:<8} {entry['failure_kind'] or '-':<13} "
            f"{entry['zero_yield_reason'] or '-'}"
        )
    unreadable = sum(name in UNREADABLE for name, _, _, _ in FAULTS)
    invariants = check_invariants(
        db.engine, answered_calls=fake_llm.answered_2xx, unreadable_bodies=unreadable
    )
    db.close()
    with capsys.disabled():
        print(f"\nfault suite (SQLite, {len(FAULTS)} faults + a locked DB at start):")
        print("\n".join(lines))
        print(f"  tally: {dict(tally)}; invariants: {invariants.problems or 'all hold'}")
    assert not wrong, wrong
    assert not invariants.problems, invariants.problems
    assert fake_llm.pending == 0  # every scripted reply was consumed, no extra call made


def test_postgres_connections_cut_mid_drain(
    cli: CliRunner,
    fake_llm: FakeLlmServer,
    llm_env: dict[str, str],
    workdir: Path,
    postgres_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = f"autopack-faults-{uuid.uuid4().hex[:8]}"
    url = sa.engine.make_url(postgres_url).update_query_dict({"application_name": app})
    url_text = url.render_as_string(hide_password=False)
    db = _backlog(cli, url_text, workdir)
    for index in range(12):
        add_run(db.engine, f"cut-{index:02d}", 1)
    db.close()
    fake_llm.default_reply = good_reply(delay_s=0.3)
    admin = sa.create_engine(sa.engine.make_url(postgres_url).set(query={}))
    stop = threading.Event()
    killed: list[int] = []

    def cutter() -> None:
        # Mid-drain: from the first builder call on. Only autopack's own backends (by
        # application_name); never the shared server.
        while not fake_llm.requests and not stop.wait(0.05):
            pass
        while not stop.wait(0.7):
            with admin.begin() as connection:
                killed.extend(
                    row[0]
                    for row in connection.execute(
                        sa.text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE application_name = :app AND pid <> pg_backend_pid()"
                        ),
                        {"app": app},
                    )
                )

    thread = threading.Thread(target=cutter, daemon=True)
    thread.start()
    try:
        result = cli(
            "drain",
            "batch",
            "--database-url",
            url_text,
            "--workspace",
            "ws",
            "--json",
            "--batch-size",
            "12",
            "--workers",
            "4",
            "--debug",
            env=llm_env,
        )
    finally:
        stop.set()
        thread.join()
        admin.dispose()
    assert result.exit_code in (0, 1), result.stderr
    with open_database(resolve_target(None, url_text), OpenMode.READ_WRITE) as check:
        invariants = check_invariants(check.engine, answered_calls=fake_llm.answered_2xx)
    with capsys.disabled():
        print(
            f"\nPostgreSQL cut: {len(killed)} backend(s) terminated; states "
            f"{dict(invariants.states)}; invariants: {invariants.problems or 'all hold'}"
        )
    assert killed, "no autopack backend was cut: the trial did not happen"
    assert not invariants.problems, invariants.problems
