"""The one way autopack runs git: config that could run a program switched off, no secrets.

A workspace's `.git/config` is the operator's, but a model that once wrote into it (or a
repository cloned from anywhere) could name a program git runs on its own: `core.fsmonitor`
runs on `git status`, hooks run on commits, `core.pager`, `diff.external` and the credential
and ssh helpers run for other commands. Every git command autopack runs switches these off on
its command line (which beats every config file), and gets an environment without secrets and
without `GIT_*` variables that could point it at another repository or inject config.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from autopack.executor.scrubbed_env import child_environment

GIT_TIMEOUT_S: Final = 30.0
SAFE_CONFIG: Final[tuple[str, ...]] = (
    "core.fsmonitor=false",
    "core.hooksPath=/dev/null",
    "core.pager=cat",
    "core.sshCommand=false",
    "core.askPass=",
    "credential.helper=",
    "diff.external=",
    "protocol.ext.allow=never",
)
SAFE_FLAGS: Final[tuple[str, ...]] = tuple(
    part for setting in SAFE_CONFIG for part in ("-c", setting)
)


def git_environment() -> dict[str, str]:
    """autopack's environment minus secrets and every `GIT_*` variable, plus quiet settings."""
    env = {
        name: value for name, value in child_environment().items() if not name.startswith("GIT_")
    }
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(
        LC_ALL="C",
        GIT_OPTIONAL_LOCKS="0",
        GIT_TERMINAL_PROMPT="0",
        GIT_CONFIG_NOSYSTEM="1",
        GIT_EXTERNAL_DIFF="",
        GIT_PAGER="cat",
    )
    return env


def run_git(args: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """`git <safe -c flags> ARGS` in `cwd`, output captured, never checked.

    Raises `FileNotFoundError` when git is not installed and `subprocess.TimeoutExpired` after
    GIT_TIMEOUT_S.
    """
    return subprocess.run(
        ["git", *SAFE_FLAGS, *args],
        cwd=os.fspath(cwd),
        env=git_environment(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=GIT_TIMEOUT_S,
        check=False,
    )


__all__ = ["GIT_TIMEOUT_S", "SAFE_CONFIG", "git_environment", "run_git"]
