"""Drain fixtures shared by the drain test modules: a backlog DB on SQLite and PostgreSQL, the
fake LLM answering every phase, `autopack drain … --json` in-process, and a drain subprocess.

A plugin module (listed in tests/conftest.py's pytest_plugins), so every module gets the same
fixtures without importing them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from autopack.db.engine import Database, OpenMode, open_database
from autopack.settings import resolve_target
from tests.backlog_helpers import good_reply
from tests.conftest import CliRunner
from tests.fake_llm import FakeLlmServer


@pytest.fixture(params=["sqlite", "postgres"])
def backlog(request: pytest.FixtureRequest, cli: CliRunner, workdir: Path) -> Iterator[Database]:
    """An initialised backlog DB (role general), on SQLite and on PostgreSQL."""
    url = "sqlite:///backlog.db"
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
    assert cli("db", "init", "--database-url", url).exit_code == 0
    (workdir / "ws").mkdir()
    db = open_database(resolve_target(None, url), OpenMode.READ_WRITE)
    yield db
    db.close()


@pytest.fixture
def llm(fake_llm: FakeLlmServer) -> FakeLlmServer:
    fake_llm.default_reply = good_reply()
    return fake_llm


Drain = Callable[..., tuple[int, dict[str, Any], str]]


@pytest.fixture
def drain(cli: CliRunner, llm: FakeLlmServer, backlog: Database) -> Drain:
    """Run `autopack drain COMMAND --json …` against the backlog with the fake LLM."""

    def run(
        *args: str, env: dict[str, str] | None = None, command: str = "batch"
    ) -> tuple[int, dict[str, Any], str]:
        result = cli(
            "drain",
            command,
            "--database-url",
            backlog.target.url,
            "--workspace",
            "ws",
            "--json",
            *args,
            env={**llm.env("anthropic"), **(env or {})},
        )
        doc = json.loads(result.stdout) if result.stdout.strip() else {}
        return result.exit_code, doc, result.stderr

    return run


def order(doc: dict[str, Any]) -> list[str]:
    return [entry["phase_id"] for entry in doc["results"]]


def spawn_batch(workdir: Path, llm: FakeLlmServer, url: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, **llm.env("anthropic"), "NO_COLOR": "1"}
    env.pop("DATABASE_URL", None)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "autopack",
            "drain",
            "batch",
            "--database-url",
            url,
            "--workspace",
            "ws",
            "--batch-size",
            "6",
            *args,
        ],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)
