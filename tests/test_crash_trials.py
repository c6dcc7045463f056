"""Kill -9 series on SQLite and PostgreSQL (slow): see tests/crash_trials.py. Prints the tally."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.crash_trials import postgres_urls, run_trials, sqlite_urls

pytestmark = pytest.mark.slow
# 10 per backend, 20 in all, keep the slow step near 10 minutes on 2 cores;
# benchmarks/crash_trials.py runs longer series for docs/reliability.md.
TRIALS = int(os.environ.get("AUTOPACK_CRASH_TRIALS", "10"))


def test_kill_9_then_resume_on_sqlite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with sqlite_urls(tmp_path) as make:
        tally = run_trials(make, TRIALS, seed=11)
    with capsys.disabled():
        print("\n" + tally.line("crash trials, SQLite"))
    assert tally.kills >= TRIALS * 3 // 4, "most trials must kill a running drain"
    assert not tally.failures, tally.failures


def test_kill_9_then_resume_on_postgres(
    tmp_path: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = os.environ["AUTOPACK_TEST_POSTGRES_URL"]
    with postgres_urls(base, tmp_path) as make:
        tally = run_trials(make, TRIALS, seed=12)
    with capsys.disabled():
        print("\n" + tally.line("crash trials, PostgreSQL"))
    assert tally.kills >= TRIALS * 3 // 4, "most trials must kill a running drain"
    assert not tally.failures, tally.failures
