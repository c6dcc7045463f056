"""`db upgrade` under kills and concurrency (issue 11, defects 13 and 14): a file named like a
backup is always a whole backup, and a second upgrade waits and then has nothing to do."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from alembic import command

from autopack.db.engine import OpenMode, open_database
from autopack.db.lifecycle import alembic_config
from autopack.db.names import HEAD_REVISION
from autopack.db.upgrade_lock import WAITING, upgrade_lock
from autopack.settings import build_target
from tests.conftest import CliRunner, build_original_db

# Run `autopack db upgrade` in a child whose online backup dies after two pages, as a kill -9
# would: os._exit runs no cleanup. The fault is injected into sqlite3 here, in the test.
KILLED_MID_BACKUP = textwrap.dedent(
    """
    import os, sqlite3, sys

    real_connect = sqlite3.connect

    class DiesMidBackup:
        def __init__(self, connection):
            self._connection = connection

        def backup(self, target, **_options):
            def progress(status, remaining, total):
                if total - remaining >= 2:
                    os._exit(137)

            real_target = getattr(target, "_connection", target)
            self._connection.backup(real_target, pages=1, progress=progress)

        def __getattr__(self, name):
            return getattr(self._connection, name)

    sqlite3.connect = lambda *a, **k: DiesMidBackup(real_connect(*a, **k))

    from autopack.cli.app import main
    sys.exit(main(sys.argv[1:]))
    """
)


def _child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)} | {"NO_COLOR": "1"}


def _rows(path: Path) -> dict[str, int]:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        names = [
            n for (n,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        return {n: connection.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}
    finally:
        connection.close()


def test_a_backup_killed_mid_copy_leaves_no_file_named_like_a_backup(
    cli: CliRunner, workdir: Path
) -> None:
    path = workdir / "autopack_legacy.db"
    build_original_db(path)
    before = _rows(path)
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_MID_BACKUP, "db", "upgrade", "--db", "legacy", "--yes"],
        cwd=workdir,
        env=_child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == 137, killed.stderr
    names = [p.name for p in workdir.iterdir()]
    assert not [n for n in names if ".backup-" in n], names
    assert [n for n in names if ".incomplete-backup-" in n]  # the copy was cut mid-way
    assert _rows(path) == before  # the DB itself was not touched

    upgraded = cli("db", "upgrade", "--db", "legacy", "--yes", "--json")
    assert upgraded.exit_code == 0, upgraded.stderr
    backup = Path(json.loads(upgraded.stdout)["backup_path"])
    assert _rows(backup) == before  # whole
    names = [p.name for p in workdir.iterdir()]
    assert not [n for n in names if ".incomplete-backup-" in n], names  # swept under the lock


def _old_database(url: str, workdir: Path, cli: CliRunner) -> None:
    """A DB that needs an upgrade that creates tables (the concurrent failure's trigger)."""
    if url.startswith("sqlite"):
        build_original_db(workdir / "autopack_legacy.db")
        return
    assert cli("db", "init", "--database-url", url).exit_code == 0
    target = build_target(url, source="test", cwd=workdir)
    with open_database(target, OpenMode.READ_WRITE) as db, db.engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "0001")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_concurrent_upgrades_are_serialised_and_the_second_has_nothing_to_do(
    cli: CliRunner, workdir: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    if backend == "postgres":
        url: str = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite:///{workdir / 'autopack_legacy.db'}"
    _old_database(url, workdir, cli)
    target = build_target(url, source="test", cwd=workdir)
    children: list[tuple[subprocess.Popen[str], Path]] = []
    upgrade = [sys.executable, "-m", "autopack", "db", "upgrade", "--yes", "--json"]
    with open_database(target, OpenMode.READ_WRITE) as db, upgrade_lock(db):
        # Both children plan the same upgrade, then wait on the lock this test holds.
        for n in range(2):
            err = workdir / f"upgrade-{n}.err"
            child = subprocess.Popen(
                [*upgrade, "--database-url", url],
                cwd=workdir,
                env=_child_env(),
                stdout=subprocess.PIPE,
                stderr=err.open("w"),
                text=True,
            )
            children.append((child, err))
        deadline = time.monotonic() + 120
        while not all(WAITING in err.read_text() for _, err in children):
            assert time.monotonic() < deadline, [err.read_text() for _, err in children]
            assert all(child.poll() is None for child, _ in children)
            time.sleep(0.1)
    documents = []
    for child, err in children:
        out, _ = child.communicate(timeout=120)
        assert child.returncode == 0, err.read_text()
        assert "already exists" not in err.read_text()
        documents.append(json.loads(out))
    assert sorted(doc["changed"] for doc in documents) == [False, True]
    assert all(doc["revision"] == HEAD_REVISION for doc in documents)
    check = cli("db", "check", "--database-url", url)
    assert check.exit_code == 0, check.stderr
