"""Defect 5 (issue 11): no write lands under `.git/`, and git never runs a configured program.

The model once wrote `.git/config` through a phase whose scope was `.`, setting
`core.fsmonitor` to a command; the next `git status` (the dirty-scope check) ran it with
autopack's full environment and the API key leaked.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from autopack.db.engine import Database, OpenMode, open_database
from autopack.db.models import Phase, table_of
from autopack.executor.git import SAFE_CONFIG, git_environment, run_git
from autopack.executor.workspace import ScopeViolation, check_paths
from autopack.settings import resolve_target
from tests.backlog_helpers import add_run, good_reply, states
from tests.conftest import CliRunner
from tests.fake_llm import FakeLlmServer, Reply

API_KEY = "sk-ant-test-git-safety-0123456789"


def git(workspace: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=workspace,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def repo(workdir: Path) -> Path:
    workspace = workdir / "ws"
    workspace.mkdir()
    git(workspace, "init", "-q")
    (workspace / "README.md").write_text("hello\n")
    git(workspace, "add", "README.md")
    git(workspace, "commit", "-q", "-m", "init")
    return workspace


@pytest.fixture
def backlog(cli: CliRunner, workdir: Path, repo: Path) -> Iterator[Database]:
    assert cli("db", "init", "--database-url", "sqlite:///backlog.db").exit_code == 0
    db = open_database(resolve_target(None, "sqlite:///backlog.db"), OpenMode.READ_WRITE)
    add_run(db.engine, "run-a", 1)
    phases = table_of(Phase)
    with db.engine.begin() as connection:
        connection.execute(
            sa.update(phases).values(scope={"paths": ["."], "deliverables": ["shared/out.py"]})
        )
    yield db
    db.close()


def drain(cli: CliRunner, db: Database, llm: FakeLlmServer, *args: str) -> tuple[int, Any]:
    result = cli(
        "drain",
        "batch",
        "--database-url",
        db.target.url,
        "--workspace",
        "ws",
        "--json",
        "--batch-size",
        "1",
        *args,
        env={**llm.env("anthropic"), "AUTOPACK_LLM_API_KEY": API_KEY},
    )
    assert result.exit_code in (0, 1), result.stderr
    return result.exit_code, json.loads(result.stdout)


FSMONITOR = '[core]\n\tfsmonitor = "env > leak.txt; false"\n'


@pytest.mark.parametrize(
    "path",
    [
        ".git/config",
        "./.git/config",
        ".GIT/config",
        ".Git/hooks/pre-commit",
        ".git./config",
        ".git /config",
        "GIT~1/config",
        "shared/.git/config",
        "shared//.git",
    ],
)
def test_a_scope_of_dot_cannot_write_under_git(
    cli: CliRunner, backlog: Database, fake_llm: FakeLlmServer, repo: Path, path: str
) -> None:
    config_before = (repo / ".git" / "config").read_bytes()
    reply = {
        "files": [
            {"path": path, "content": FSMONITOR},
            {"path": "shared/out.py", "content": "x = 1\n"},
        ]
    }
    fake_llm.queue(Reply.ok(json.dumps(reply), output_tokens=300))

    code, doc = drain(cli, backlog, fake_llm)

    assert code == 1
    [entry] = doc["results"]
    assert entry["final_state"] == "FAILED"
    assert "git's metadata" in entry["failure_reason"]
    assert entry["fingerprint"]
    assert (repo / ".git" / "config").read_bytes() == config_before
    assert not (repo / "shared" / "out.py").exists()  # all or nothing
    assert not list(repo.rglob("leak.txt"))


def test_a_planted_symlink_to_git_is_refused(repo: Path) -> None:
    (repo / "meta").symlink_to(".git")
    with pytest.raises(ScopeViolation, match="git's metadata"):
        check_paths([("meta/config", FSMONITOR)], ["."], repo)


def test_git_status_never_runs_a_configured_fsmonitor(
    cli: CliRunner, backlog: Database, fake_llm: FakeLlmServer, repo: Path
) -> None:
    # A config an earlier compromise (or a cloned repository) left behind.
    with (repo / ".git" / "config").open("a") as handle:
        handle.write('[core]\n\tfsmonitor = "env > leak.txt; false"\n')
        handle.write("\thooksPath = hooks\n")
    fake_llm.default_reply = good_reply()

    code, doc = drain(cli, backlog, fake_llm)  # without --allow-dirty: runs git status

    assert code == 0, doc
    assert states(backlog.engine) == {"run-a-p0": "COMPLETE"}
    assert not list(repo.rglob("leak.txt"))


def test_run_git_flags_and_environment(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOPACK_LLM_API_KEY", API_KEY)
    monkeypatch.setenv("GIT_DIR", "/elsewhere")
    monkeypatch.setenv("GIT_CONFIG_PARAMETERS", "'core.fsmonitor=evil'")
    env = git_environment()
    assert API_KEY not in env.values()
    assert "GIT_DIR" not in env
    assert "GIT_CONFIG_PARAMETERS" not in env
    for setting in ("core.fsmonitor=false", "core.hooksPath=/dev/null"):
        assert setting in SAFE_CONFIG
        key, value = setting.split("=")
        result = run_git(["config", "--get", key], repo)
        assert result is not None  # git is installed where this test runs
        assert result.stdout.decode().strip() == value
    assert os.environ["AUTOPACK_LLM_API_KEY"] == API_KEY  # autopack's own is untouched
