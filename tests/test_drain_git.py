"""Draining into a git workspace, the aider way (issue 10, case 1), through the CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from autopack.db.engine import Database
from autopack.db.models import DrainResult, table_of
from tests.backlog_helpers import GOOD, NEVER, add_run, good_reply, states
from tests.builder_replies import reply_for
from tests.conftest import CliRunner, reference_seed_spec
from tests.drain_fixtures import Drain
from tests.fake_llm import FakeLlmServer, Reply

RESULTS = table_of(DrainResult)


@pytest.fixture
def git_home(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME without a git identity, so the fallback identity is what commits."""
    home = workdir / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in (
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "GIT_COMMITTER_NAME",
        "GIT_COMMITTER_EMAIL",
    ):
        monkeypatch.delenv(name, raising=False)
    return home


def git(workspace: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=workspace, capture_output=True, text=True, check=True)
    return done.stdout


def _init(workspace: Path) -> None:
    workspace.mkdir(exist_ok=True)
    git(workspace, "init", "-q", "-b", "main")


def test_a_v4_run_drains_into_git_one_commit_per_phase(
    cli: CliRunner, seed_db: Database, fake_llm: FakeLlmServer, workdir: Path, git_home: Path
) -> None:
    spec = reference_seed_spec("telemetry-collection-v4")
    for phase in spec.phases:
        fake_llm.queue(Reply.ok(reply_for(phase.scope.deliverables), output_tokens=420))
    workspace = workdir / "ws"
    _init(workspace)
    # The operator's own staged work: never part of autopack's commits, and left staged.
    (workspace / "notes.txt").write_text("mine\n")
    git(workspace, "add", "notes.txt")

    result = cli(
        "drain", "batch", "--db", "seed", "--workspace", "ws", "--batch-size", "10", "--json",
        env=fake_llm.env("anthropic"),
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert [e["outcome"] for e in doc["results"]] == ["complete"] * 10
    session = doc["session_id"]

    log = git(workspace, "log", "--reverse", "--format=%H%x00%an <%ae>%x00%s%x00%b%x01")
    commits = [c.strip("\n").split("\0") for c in log.split("\x01") if c.strip()]
    assert len(commits) == 10
    for (sha, author, subject, body), phase in zip(commits, spec.phases, strict=True):
        assert author == "autopack <autopack@localhost>"
        assert subject == f"autopack: {spec.run_id} / {phase.phase_id}"
        assert session in body
        files = git(workspace, "show", "--name-only", "--format=", sha).split()
        assert set(files) == set(phase.scope.deliverables)
    # Each result names its commit; the operator's staged file is still staged, and the
    # transcripts under .autopack/ are not untracked noise.
    with seed_db.engine.connect() as connection:
        recorded = connection.execute(sa.select(RESULTS.c.commit_sha).order_by(RESULTS.c.id))
        assert [row[0] for row in recorded] == [c[0] for c in commits]
    assert git(workspace, "diff", "--cached", "--name-only").split() == ["notes.txt"]
    assert git(workspace, "status", "--porcelain").splitlines() == ["A  notes.txt"]
    assert (workspace / ".autopack" / ".gitignore").read_text().splitlines()[-1] == "*"


def test_the_users_git_identity_is_used_when_there_is_one(
    backlog: Database, llm: FakeLlmServer, drain: Drain, workdir: Path, git_home: Path
) -> None:
    workspace = workdir / "ws"
    _init(workspace)
    git(workspace, "config", "user.name", "Ada Operator")
    git(workspace, "config", "user.email", "ada@example.org")
    add_run(backlog.engine, "run-a", 1)
    code, _, stderr = drain("--batch-size", "1")
    assert code == 0, stderr
    assert git(workspace, "log", "--format=%an <%ae>").strip() == "Ada Operator <ada@example.org>"


def test_a_failed_phase_rolls_its_writes_back(
    backlog: Database, llm: FakeLlmServer, drain: Drain, workdir: Path, git_home: Path
) -> None:
    workspace = workdir / "ws"
    _init(workspace)
    (workspace / "shared").mkdir()
    (workspace / GOOD).write_text("original = True\n")
    git(workspace, "add", ".")
    git(workspace, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base")
    # The reply rewrites shared/out.py, but the phase's deliverable is never written: FAILED.
    add_run(backlog.engine, "run-a", 1, deliverables={0: NEVER})
    code, doc, _ = drain("--batch-size", "1")
    assert code == 1
    assert doc["results"][0]["final_state"] == "FAILED"
    assert (workspace / GOOD).read_text() == "original = True\n"
    assert git(workspace, "status", "--porcelain") == ""
    assert len(git(workspace, "log", "--format=%H").split()) == 1


def test_no_commit_leaves_files_uncommitted_and_the_next_phase_is_not_refused(
    backlog: Database, llm: FakeLlmServer, drain: Drain, workdir: Path, git_home: Path
) -> None:
    """The dirty check protects the operator's edits only: what autopack wrote and recorded
    (its hashes) does not block the next phase of the scope."""
    workspace = workdir / "ws"
    _init(workspace)
    add_run(backlog.engine, "run-a", 2)
    code, doc, stderr = drain("--batch-size", "2", "--no-commit")
    assert code == 0, stderr
    assert [e["outcome"] for e in doc["results"]] == ["complete", "complete"]
    assert git(workspace, "status", "--porcelain", "-uall").splitlines() == [f"?? {GOOD}"]
    # An edit of the operator's is protected again.
    add_run(backlog.engine, "run-b", 1)
    (workspace / GOOD).write_text("edited = 1\n")
    code, doc, _ = drain("--batch-size", "1", "--no-commit")
    assert code == 0
    assert doc["results"][0]["outcome"] == "refused"
    assert "uncommitted changes" in doc["results"][0]["failure_reason"]
    assert states(backlog.engine)["run-b-p0"] == "QUEUED"


def test_a_recorded_phase_whose_commit_was_lost_is_committed_by_the_next_drain(
    backlog: Database, llm: FakeLlmServer, drain: Drain, workdir: Path, git_home: Path
) -> None:
    workspace = workdir / "ws"
    _init(workspace)
    add_run(backlog.engine, "run-a", 1)
    code, _, _ = drain("--batch-size", "1")
    assert code == 0
    # As if the process died between recording the result and committing: undo the commit.
    git(workspace, "update-ref", "-d", "HEAD")
    git(workspace, "rm", "-q", "--cached", GOOD)
    with backlog.engine.begin() as connection:
        connection.execute(sa.update(RESULTS).values(commit_sha=None))
    add_run(backlog.engine, "run-b", 1)
    code, _, stderr = drain("--batch-size", "1", "--run-id", "run-b")
    assert code == 0, stderr
    # run-a's files were committed before run-b was drained; run-b wrote the same bytes, so
    # it had nothing left to commit.
    subjects = git(workspace, "log", "--format=%s").splitlines()
    assert subjects == ["autopack: run-a / run-a-p0"]
    with backlog.engine.connect() as connection:
        shas = [row[0] for row in connection.execute(sa.select(RESULTS.c.commit_sha))]
    assert shas == [git(workspace, "rev-parse", "HEAD").strip(), ""]


def test_outside_git_nothing_changes(
    backlog: Database, llm: FakeLlmServer, drain: Drain, workdir: Path
) -> None:
    llm.default_reply = good_reply()
    add_run(backlog.engine, "run-a", 2)
    code, doc, _ = drain("--batch-size", "2")
    assert code == 0
    assert [e["commit_sha"] for e in doc["results"]] == [None, None]
    assert not (workdir / "ws" / ".git").exists()
