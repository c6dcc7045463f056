"""Defect 2 (issue 11): the model's tests get nothing autopack does not hand them.

The attack: a test file the model wrote read `/proc/<ppid>/environ` (the API key), followed
`/proc/<ppid>/cwd` to the database and rewrote a telemetry row; the phase still ended COMPLETE.
Now autopack is non-dumpable (a non-root child cannot read its /proc entries), the rows it
wrote are sealed and checked after the tests ran (a change fails the phase loudly), and
`--sandbox bwrap` runs the tests with only the workspace, no network and no database.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from autopack.db.engine import Database, OpenMode, open_database
from autopack.db.models import Phase, table_of
from autopack.settings import resolve_target
from tests.backlog_helpers import add_run, states
from tests.conftest import CliRunner
from tests.fake_llm import FakeLlmServer, Reply

API_KEY = "sk-ant-isolation-secret-0123456789abcdef"
TEST_FILE = "shared/test_probe.py"
TEST_USER = "autopack-isolation"


def add_tests_phase(db: Database) -> None:
    """One run of one tests phase whose deliverable is TEST_FILE (scope shared/)."""
    add_run(db.engine, "run-t", 1)
    phases = table_of(Phase)
    with db.engine.begin() as connection:
        connection.execute(
            sa.update(phases).values(
                task_category="tests", scope={"paths": ["shared/"], "deliverables": [TEST_FILE]}
            )
        )


def probe_reply(test_source: str) -> Reply:
    body = json.dumps({"files": [{"path": TEST_FILE, "content": test_source}]})
    return Reply.ok(body, output_tokens=300)


@pytest.fixture
def backlog(cli: CliRunner, workdir: Path) -> Iterator[Database]:
    assert cli("db", "init", "--database-url", "sqlite:///backlog.db").exit_code == 0
    (workdir / "ws").mkdir()
    db = open_database(resolve_target(None, "sqlite:///backlog.db"), OpenMode.READ_WRITE)
    add_tests_phase(db)
    yield db
    db.close()


def drain(cli: CliRunner, db: Database, llm: FakeLlmServer, *args: str) -> tuple[int, Any, str]:
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
    doc = json.loads(result.stdout) if result.stdout.strip() else {}
    return result.exit_code, doc, result.stderr


TAMPER = """
import sqlite3

def test_rewrite_telemetry():
    db = sqlite3.connect({db!r})
    db.execute("UPDATE token_estimation_v2_events SET actual_output_tokens = 1")
    db.commit()
"""


def test_a_telemetry_row_changed_by_the_models_tests_fails_the_phase_loudly(
    cli: CliRunner,
    backlog: Database,
    fake_llm: FakeLlmServer,
    workdir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_llm.queue(probe_reply(TAMPER.format(db=str(workdir / "backlog.db"))))

    code, doc, stderr = drain(cli, backlog, fake_llm)

    assert code == 1, stderr
    [entry] = doc["results"]
    assert entry["final_state"] == "FAILED"
    assert entry["failure_reason"].startswith("telemetry rows changed while the phase's tests ran")
    assert entry["fingerprint"]
    # Loudly: an error on stderr (logging's default handler; pytest captures it here).
    assert any(r.levelname == "ERROR" and "TAMPERING" in r.getMessage() for r in caplog.records)
    assert states(backlog.engine) == {"run-t-p0": "FAILED"}


def test_untouched_rows_pass_the_seal_check(
    cli: CliRunner, backlog: Database, fake_llm: FakeLlmServer
) -> None:
    fake_llm.queue(probe_reply("def test_fine():\n    assert True\n"))
    code, doc, stderr = drain(cli, backlog, fake_llm)
    assert code == 0, stderr
    assert doc["results"][0]["final_state"] == "COMPLETE"
    assert "TAMPERING" not in stderr


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_as_root_the_drain_warns_once_that_tests_are_not_isolated(
    cli: CliRunner, backlog: Database, fake_llm: FakeLlmServer
) -> None:
    fake_llm.queue(probe_reply("def test_fine():\n    assert True\n"))
    code, _, stderr = drain(cli, backlog, fake_llm)
    assert code == 0, stderr
    assert stderr.count("running as root") == 1


def test_an_unknown_sandbox_is_refused(
    cli: CliRunner, backlog: Database, fake_llm: FakeLlmServer
) -> None:
    code, _, stderr = drain(cli, backlog, fake_llm, "--sandbox", "chroot")
    assert code == 2
    assert "error:" in stderr
    assert "--sandbox 'chroot'" in stderr


# -- bubblewrap ---------------------------------------------------------------------------------

ESCAPE = """
import os, socket, pytest

def test_confined():
    assert not any("isolation-secret" in value for value in os.environ.values())
    assert os.getcwd() == {workspace!r}
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", {port}), timeout=2)
    try:
        head = open({db!r}, "rb").read(16)
    except OSError:
        head = b""
    assert not head.startswith(b"SQLite format 3")
    assert not os.path.exists("/proc/{autopack_pid}/environ")
"""


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")
def test_bwrap_confines_the_tests_to_the_workspace_without_network_or_database(
    cli: CliRunner, backlog: Database, fake_llm: FakeLlmServer, workdir: Path
) -> None:
    probe = ESCAPE.format(
        workspace=str((workdir / "ws").resolve()),
        port=fake_llm.port,
        db=str(workdir / "backlog.db"),
        autopack_pid=os.getpid(),
    )
    fake_llm.queue(probe_reply(probe))
    code, doc, stderr = drain(cli, backlog, fake_llm, "--sandbox", "bwrap")
    assert code == 0, (doc, stderr)
    assert states(backlog.engine) == {"run-t-p0": "COMPLETE"}
    assert "running as root" not in stderr

    # The same tests outside the sandbox reach the network and the database: they fail.
    phases = table_of(Phase)
    with backlog.engine.begin() as connection:
        connection.execute(sa.update(phases).values(state="QUEUED"))
    fake_llm.queue(probe_reply(probe))
    code, doc, stderr = drain(cli, backlog, fake_llm)
    assert code == 1
    assert doc["results"][0]["failure_kind"] == "verification"


# -- non-dumpable, as an unprivileged user -------------------------------------------------------

PROC_READ = """
import os

def test_parent_environment_is_unreadable():
    parent = os.getppid()
    for name in ("environ", "cwd", "fd"):
        path = f"/proc/{parent}/{name}"
        try:
            if name == "environ":
                data = open(path, "rb").read()
                assert b"isolation-secret" not in data
            else:
                os.listdir(path) if name == "fd" else os.readlink(path)
        except PermissionError:
            continue
        raise AssertionError(f"{path} was readable")
"""


def _unprivileged_user() -> pwd.struct_passwd:
    """The test's own unprivileged user (created once when running as root)."""
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", TEST_USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(TEST_USER)


def _interpreter_for(become: list[str], env: dict[str, str]) -> str:
    """This interpreter if the user may run it, else the system's build of the same version
    (same ABI: the virtualenv's packages come along on PYTHONPATH); skip if neither runs."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = [p for p in sys.path if p.endswith("site-packages")]
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), *site])
    for candidate in (sys.executable, f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
        # Two levels deep: the drain starts its own interpreter again for the tests.
        nested = (
            "import subprocess, sys; "
            "subprocess.run([sys.executable, '-c', 'import autopack, pytest'], check=True)"
        )
        probe = subprocess.run([*become, candidate, "-c", nested], env=env, capture_output=True)
        if probe.returncode == 0:
            return candidate
    pytest.skip(f"no {version} the unprivileged user may run with autopack's packages")


def test_a_non_root_child_cannot_read_autopacks_proc_entries(fake_llm: FakeLlmServer) -> None:
    if os.geteuid() != 0 and shutil.which("setpriv") is None:
        pytest.skip("needs root (to create and become an unprivileged user) or setpriv")
    if os.geteuid() != 0:
        user = None  # already unprivileged: run the drain as ourselves
    elif shutil.which("useradd") is None or shutil.which("setpriv") is None:
        pytest.skip("running as root without useradd/setpriv to drop privileges")
    else:
        user = _unprivileged_user()
    base = Path(tempfile.mkdtemp(prefix="autopack-isolation-"))
    try:
        os.chmod(base, 0o755)
        (base / "ws").mkdir()
        db_url = f"sqlite:///{base / 'backlog.db'}"
        env = {
            **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)},
            **fake_llm.env("anthropic"),
            "AUTOPACK_LLM_API_KEY": API_KEY,
            "NO_COLOR": "1",
            "HOME": str(base),
        }
        python = [sys.executable, "-m", "autopack"]
        subprocess.run(
            [*python, "db", "init", "--database-url", db_url, "--quiet"], env=env, check=True
        )
        with open_database(resolve_target(None, db_url), OpenMode.READ_WRITE) as db:
            add_tests_phase(db)
        if user is not None:
            for path in [base, *base.rglob("*")]:
                os.chown(path, user.pw_uid, user.pw_gid)
            become = [
                "setpriv",
                f"--reuid={user.pw_uid}",
                f"--regid={user.pw_gid}",
                "--clear-groups",
                "--",
            ]
            interpreter = _interpreter_for(become, env)
            python = [*become, interpreter, "-m", "autopack"]
        fake_llm.queue(probe_reply(PROC_READ))
        result = subprocess.run(
            [
                *python,
                "drain",
                "batch",
                "--database-url",
                db_url,
                "--workspace",
                "ws",
                "--json",
                "--batch-size",
                "1",
            ],
            cwd=base,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        doc = json.loads(result.stdout)
        assert result.returncode == 0, (doc["results"][0]["failure_reason"], result.stderr)
        assert doc["results"][0]["final_state"] == "COMPLETE"
        assert "running as root" not in result.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_db_without_the_seal_column_is_refused_with_the_upgrade_hint(
    cli: CliRunner, backlog: Database, fake_llm: FakeLlmServer, workdir: Path
) -> None:
    from alembic import command

    from autopack.db.lifecycle import alembic_config

    with backlog.engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "0006")
    code, doc, stderr = drain(cli, backlog, fake_llm)
    assert code == 2
    assert doc == {}
    assert "no telemetry seal column" in stderr
    assert "autopack db upgrade" in stderr
    assert fake_llm.requests == []
    assert cli("db", "upgrade", "--database-url", backlog.target.url, "--yes").exit_code == 0
    fake_llm.queue(probe_reply("def test_fine():\n    assert True\n"))
    code, doc, stderr = drain(cli, backlog, fake_llm)
    assert code == 0, stderr
