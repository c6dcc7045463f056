"""Kill -9 trials (issue 11, "The standing suite"): a drain is killed at a random point, then
`drain batch --resume` finishes the backlog, and the invariants of reliability_helpers hold.

Each trial: a fresh 50-phase backlog (25 runs of 2 phases; every tenth phase a tests phase
whose test sleeps, so kills land during verification too), `drain batch --workers 4` in its
own process against the fake model (reply latency aims kills at the LLM call and around the
writes that follow it), kill -9 after a random delay, then `--resume` to the end. No
fault-injection hook exists in autopack: the kill points come from timing alone.
`run_trials` returns the tally; tests/test_crash_trials.py and benchmarks/crash_trials.py
print it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from autopack.db.engine import OpenMode, open_database
from autopack.db.lifecycle import init_database
from autopack.db.models import Phase, table_of
from autopack.settings import build_target
from tests.backlog_helpers import GOOD, add_run
from tests.fake_llm import FakeLlmServer, Reply
from tests.reliability_helpers import check_invariants

RUNS, PHASES_PER_RUN, WORKERS = 25, 2, 4
SLOW_TEST = "shared/test_slow.py"
REPLY = json.dumps(
    {
        "files": [
            {"path": GOOD, "content": "x = 1\n"},
            {
                "path": SLOW_TEST,
                "content": "import time\n\n\ndef test_slow():\n    time.sleep(0.3)\n",
            },
        ]
    }
)


@dataclass
class Tally:
    trials: int = 0
    kills: int = 0
    in_flight_at_kill: int = 0
    results_at_kill: int = 0
    tests_phases_in_flight: int = 0
    finished_clean: int = 0
    failures: list[str] = field(default_factory=list)
    states: Counter[str] = field(default_factory=Counter)

    def line(self, label: str) -> str:
        return (
            f"{label}: {self.trials} trials, {self.kills} kill -9s; at the kill "
            f"{self.in_flight_at_kill} phases in flight ({self.tests_phases_in_flight} of them "
            f"tests phases), {self.results_at_kill} already recorded; after --resume "
            f"{self.finished_clean}/{self.trials} backlogs finished with every invariant; "
            f"final states {dict(self.states)}; violations: {self.failures or 'none'}"
        )


def _backlog(url: str, workdir: Path) -> None:
    target = build_target(url, source="trial", cwd=workdir)
    init_database(target, "general")
    phases = table_of(Phase)
    with open_database(target, OpenMode.READ_WRITE) as db:
        for run in range(RUNS):
            run_id = f"trial-{run:02d}"
            add_run(db.engine, run_id, PHASES_PER_RUN)
            with db.engine.begin() as connection:
                for index in range(PHASES_PER_RUN):
                    if (run * PHASES_PER_RUN + index) % 10 == 9:
                        connection.execute(
                            sa.update(phases)
                            .where(phases.c.run_id == run_id, phases.c.phase_index == index)
                            .values(
                                task_category="tests",
                                scope={"paths": ["shared/"], "deliverables": [SLOW_TEST]},
                            )
                        )


def _drain(url: str, workdir: Path, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    command = [
        sys.executable, "-m", "autopack", "drain", "batch", "--database-url", url,
        "--workspace", "ws", "--workers", str(WORKERS), "--batch-size", str(RUNS * PHASES_PER_RUN),
        "--max-fingerprint-repeats", "1000", "--json", "--quiet", *extra,
    ]  # fmt: skip
    return subprocess.Popen(
        command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _in_flight(url: str, workdir: Path) -> tuple[int, int, int]:
    """(phases EXECUTING, of which tests phases, drain results) right after the kill."""
    phases = table_of(Phase)
    target = build_target(url, source="trial", cwd=workdir)
    with open_database(target, OpenMode.READ_ONLY) as db, db.engine.connect() as connection:
        rows = connection.execute(
            sa.select(phases.c.task_category).where(phases.c.state == "EXECUTING")
        ).all()
        results = connection.exec_driver_sql("SELECT count(*) FROM autopack_drain_results").scalar()
    return len(rows), sum(row[0] == "tests" for row in rows), int(results or 0)


def one_trial(url: str, workdir: Path, rng: random.Random, tally: Tally) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "ws").mkdir(exist_ok=True)
    _backlog(url, workdir)
    with FakeLlmServer(default_reply=Reply.ok(REPLY, output_tokens=300), latency_s=0.25) as llm:
        env = {**os.environ, **llm.env("anthropic"), "NO_COLOR": "1"}
        env.pop("DATABASE_URL", None)
        process = _drain(url, workdir, env)
        # Aim from the first builder call (start-up time varies with the machine's load);
        # 50 phases take about 5 s from there.
        deadline = time.monotonic() + 60
        while not llm.requests and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 4.0))
        tally.trials += 1
        killed = process.poll() is None
        if killed:
            process.send_signal(signal.SIGKILL)
            tally.kills += 1
        process.communicate(timeout=60)
        executing, tests, results = _in_flight(url, workdir)
        tally.in_flight_at_kill += executing
        tally.tests_phases_in_flight += tests
        tally.results_at_kill += results
        # A killed session is resumed; one that finished first needs nothing more.
        finish = _drain(url, workdir, env, "--resume") if killed else None
        _, err = finish.communicate(timeout=300) if finish else ("", "")
        resumed = finish or process
        if resumed.returncode != 0:
            tally.failures.append(f"resume exited {resumed.returncode}: {err.strip()[-300:]}")
            return
        target = build_target(url, source="trial", cwd=workdir)
        with open_database(target, OpenMode.READ_ONLY) as db:
            found = check_invariants(
                db.engine, answered_calls=llm.answered_2xx, in_flight_slack=WORKERS
            )
    tally.states.update(found.states)
    problems = list(found.problems)
    if found.states["COMPLETE"] != RUNS * PHASES_PER_RUN:
        problems.append(f"backlog not finished: {dict(found.states)}")
    if problems:
        tally.failures.extend(problems)
    else:
        tally.finished_clean += 1


@contextmanager
def sqlite_urls(base: Path) -> Iterator[Callable[[int], tuple[str, Path]]]:
    yield lambda index: (
        f"sqlite:///{base / f'trial-{index:02d}' / 'backlog.db'}",
        base / f"trial-{index:02d}",
    )


@contextmanager
def postgres_urls(base_url: str, base: Path) -> Iterator[Callable[[int], tuple[str, Path]]]:
    """A fresh schema per trial (dropped afterwards) on the shared server."""
    admin_url = sa.engine.make_url(base_url).set(drivername="postgresql+psycopg")
    admin = sa.create_engine(admin_url)
    schemas: list[str] = []

    def make(index: int) -> tuple[str, Path]:
        schema = f"crash_{uuid.uuid4().hex[:10]}"
        with admin.begin() as connection:
            connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        schemas.append(schema)
        url = admin_url.update_query_dict({"options": f"-csearch_path={schema}"})
        return url.render_as_string(hide_password=False), base / f"pg-trial-{index:02d}"

    try:
        yield make
    finally:
        with admin.begin() as connection:
            for schema in schemas:
                connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()


def run_trials(make: Callable[[int], tuple[str, Path]], trials: int, seed: int) -> Tally:
    rng = random.Random(seed)
    tally = Tally()
    for index in range(trials):
        url, workdir = make(index)
        one_trial(url, workdir, rng, tally)
    return tally
