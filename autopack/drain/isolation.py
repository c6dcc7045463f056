"""What autopack does to itself before model-written code runs (issue 11, defect 2).

The model's tests run with the operator's privileges, as in any coding agent. autopack hands
them nothing more than it must: it makes its own process non-dumpable (Linux
`prctl(PR_SET_DUMPABLE, 0)`), so a child running as the same non-root user can no longer read
`/proc/<autopack>/environ` (the API key), `…/cwd` or `…/fd` (the database). Root can read them
anyway; a drain run as root without `--sandbox bwrap` says so, once.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path
from typing import Final

from sqlalchemy.engine import Engine

_PR_SET_DUMPABLE: Final = 4
SANDBOXES: Final = ("none", "bwrap")
ROOT_WARNING: Final = (
    "running as root: the model's tests are not isolated from autopack's secrets (root can "
    "read any process's environment and open any file). Drain as an unprivileged user, or "
    "pass --sandbox bwrap"
)


def make_non_dumpable() -> bool:
    """Make this process non-dumpable (Linux); whether it worked. Idempotent."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def isolation_warning(sandbox: str) -> str | None:
    """The warning a drain prints once: as root, outside the sandbox, nothing is isolated."""
    if sandbox != "bwrap" and hasattr(os, "geteuid") and os.geteuid() == 0:
        return ROOT_WARNING
    return None


def database_files(engine: Engine) -> list[Path]:
    """The files of a SQLite database (and its journals) a sandbox must hide; [] otherwise."""
    if engine.dialect.name != "sqlite":
        return []
    with engine.connect() as connection:
        rows = connection.exec_driver_sql("PRAGMA database_list").all()
    files: list[Path] = []
    for row in rows:
        if row[2]:
            main = Path(row[2])
            files += [main, *(main.with_name(main.name + s) for s in ("-wal", "-shm", "-journal"))]
    return files


__all__ = [
    "ROOT_WARNING",
    "SANDBOXES",
    "database_files",
    "isolation_warning",
    "make_non_dumpable",
]
