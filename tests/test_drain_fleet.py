"""A fleet on PostgreSQL: two `autopack drain batch` processes × 4 workers share one backlog."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

from autopack.db.engine import OpenMode, open_database
from autopack.settings import resolve_target
from tests.backlog_helpers import add_run, good_reply, results, states
from tests.conftest import CliRunner
from tests.fake_llm import FakeLlmServer

RUNS, PHASES_PER_RUN = 60, 5


def test_two_processes_execute_every_phase_exactly_once(
    cli: CliRunner, postgres_url: str, fake_llm: FakeLlmServer, workdir: Path
) -> None:
    assert cli("db", "init", "--database-url", postgres_url).exit_code == 0
    (workdir / "ws").mkdir()
    with open_database(resolve_target(None, postgres_url), OpenMode.READ_WRITE) as db:
        for index in range(RUNS):
            add_run(db.engine, f"fleet-{index:03d}", PHASES_PER_RUN)
        fake_llm.default_reply = good_reply(delay_s=0.02)
        env = {**os.environ, **fake_llm.env("anthropic"), "NO_COLOR": "1"}
        env.pop("DATABASE_URL", None)
        command = [
            sys.executable,
            "-m",
            "autopack",
            "drain",
            "batch",
            "--database-url",
            postgres_url,
            "--workspace",
            "ws",
            "--state",
            "queued",
            "--batch-size",
            "1000",
            "--workers",
            "4",
            "--max-fingerprint-repeats",
            "1000",
            "--json",
            "--quiet",
        ]
        processes = [
            subprocess.Popen(
                command,
                cwd=workdir,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        outputs = [p.communicate(timeout=600) for p in processes]
        for process, (out, err) in zip(processes, outputs, strict=True):
            assert process.returncode == 0, err
            assert json.loads(out)["totals"]["failed"] == 0
        total = RUNS * PHASES_PER_RUN
        rows = results(db.engine)
        done = Counter((row.run_id, row.phase_id) for row in rows)
        assert len(done) == total
        assert set(done.values()) == {1}
        assert fake_llm.answered_2xx == total
        assert set(states(db.engine).values()) == {"COMPLETE"}
        # Both processes took part, and no run ever had two phases running at once.
        assert len({row.session_id for row in rows}) == 2
        by_run: dict[str, list[tuple[datetime, datetime, str]]] = defaultdict(list)
        for row in rows:
            by_run[row.run_id].append((row.started_at, row.finished_at, row.phase_id))
        for attempts in by_run.values():
            attempts.sort()
            assert [a[2] for a in attempts] == sorted(a[2] for a in attempts)
            for (_, finished, _), (started, _, _) in itertools.pairwise(attempts):
                assert finished <= started
