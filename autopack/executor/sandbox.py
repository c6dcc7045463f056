"""Run verification inside bubblewrap: the workspace, the interpreter, no network, no database.

`bwrap_prefix(workspace, hidden)` is the command line to put before the pytest command. Inside:
the system directories and Python's own prefixes read-only, the workspace read-write (and the
cwd), a private /tmp, /proc and /dev of a new PID namespace (autopack's process is not visible,
so neither are its environment nor its open files), every namespace unshared (no network at
all), and each `hidden` path (the database file and its journals) covered by an empty file.
The child dies with autopack and gets a session of its own (no terminal injection).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

SYSTEM_DIRS: Final = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc")


def find_bwrap() -> str | None:
    """The bubblewrap executable on PATH, or None."""
    return shutil.which("bwrap")


def _python_dirs() -> list[str]:
    """Where the interpreter and its packages live (the venv and the Python it was made from)."""
    candidates = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    candidates.add(os.path.dirname(os.path.realpath(sys.executable)))
    return sorted(os.path.realpath(path) for path in candidates if os.path.isdir(path))


def _covers(directory: str, path: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def bwrap_prefix(bwrap: str, workspace: Path, hidden: Sequence[Path] = ()) -> list[str]:
    """The bubblewrap arguments that run a command as the module docstring says."""
    root = os.path.realpath(workspace)
    args = [bwrap, "--unshare-all", "--die-with-parent", "--new-session"]
    mounted: list[str] = []
    for directory in SYSTEM_DIRS:
        if os.path.islink(directory):
            args += ["--symlink", os.readlink(directory), directory]
        elif os.path.isdir(directory):
            args += ["--ro-bind", directory, directory]
            mounted.append(directory)
    for directory in _python_dirs():
        if not any(_covers(done, directory) for done in mounted):
            args += ["--ro-bind", directory, directory]
            mounted.append(directory)
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    args += ["--bind", root, root]
    mounted.append(root)
    for path in hidden:
        real = os.path.realpath(path)
        if os.path.exists(real) and any(_covers(done, real) for done in mounted):
            args += ["--ro-bind", "/dev/null", real]
    args += ["--setenv", "HOME", "/tmp", "--chdir", root, "--"]
    return args


__all__ = ["bwrap_prefix", "find_bwrap"]
