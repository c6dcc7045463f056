"""Every git command autopack runs goes through `run_git`: no hooks, no fsmonitor, no secrets.

A workspace's `.git/config` may have been written by someone else (or, before the workspace
was hardened, by a model): `core.fsmonitor` and hooks are commands git runs on its own. So every
call disables them on the command line, and runs with an allowlisted environment: no secrets (API
keys, DB URLs with passwords), no variables that would point git at another repository or
inject configuration. On top of this, `commit_paths` commits exactly a phase's own files, the
way aider commits its edits.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from autopack.errors import AutopackError

GIT_TIMEOUT_S: Final = 30.0
# Options that make git run nothing but itself, whatever the repository's config says.
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
SAFE_OPTIONS: Final[tuple[str, ...]] = tuple(
    part for setting in SAFE_CONFIG for part in ("-c", setting)
)
# The only variables git gets: enough to find itself, the user's config and identity.
# An allowlist, so no API key, DB URL or config-injecting GIT_* variable can reach git or
# anything a repository's config might make it run.
_PASSED: Final = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "XDG_CONFIG_HOME",
        "TMPDIR",
        "TZ",
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "GIT_COMMITTER_NAME",
        "GIT_COMMITTER_EMAIL",
    }
)
FALLBACK_NAME: Final = "autopack"
FALLBACK_EMAIL: Final = "autopack@localhost"


class GitError(AutopackError):
    """A git command failed where autopack needed it to succeed."""


def git_environment() -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name in _PASSED}
    env["LC_ALL"] = "C"
    env["GIT_OPTIONAL_LOCKS"] = "0"
    env["GIT_TERMINAL_PROMPT"] = "0"
    return env


def run_git(
    args: Sequence[str], cwd: Path, *, extra_options: Sequence[str] = ()
) -> subprocess.CompletedProcess[bytes] | None:
    """Run `git <safe options> <extra_options> <args>` in `cwd`; None when git is not installed."""
    try:
        return subprocess.run(
            ["git", *SAFE_OPTIONS, *extra_options, *args],
            cwd=cwd,
            env=git_environment(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError:
        return None
    except subprocess.TimeoutExpired as exc:
        raise GitError(
            f"git {args[0]} did not answer within {GIT_TIMEOUT_S:.0f} s in {str(cwd)!r}"
        ) from exc


def _stderr_line(result: subprocess.CompletedProcess[bytes]) -> str:
    lines = result.stderr.decode("utf-8", errors="replace").strip().splitlines()
    return lines[-1] if lines else f"exit code {result.returncode}"


def inside_work_tree(root: Path) -> bool:
    """A `.git` directory or file (worktrees, submodules) in the workspace or above it."""
    return any((directory / ".git").exists() for directory in (root, *root.parents))


def _config(root: Path, key: str) -> str:
    result = run_git(["config", "--get", key], root)
    if result is None or result.returncode != 0:
        return ""
    return result.stdout.decode("utf-8", errors="replace").strip()


def identity_options(root: Path) -> list[str]:
    """The user's git identity if one is configured, else `autopack <autopack@localhost>`."""
    options: list[str] = []
    if not _config(root, "user.name"):
        options += ["-c", f"user.name={FALLBACK_NAME}"]
    if not _config(root, "user.email"):
        options += ["-c", f"user.email={FALLBACK_EMAIL}"]
    return options


def commit_paths(root: Path, paths: Sequence[str], message: str) -> str | None:
    """Commit exactly `paths` (workspace-relative) to the current branch; return the commit.

    `git add` then `git commit --only -- paths`: whatever else the operator has staged stays
    staged and out of this commit. None when there is nothing to commit (the files already
    match HEAD). Raises GitError when git refuses.
    """
    if not paths:
        return None
    ignored = run_git(["check-ignore", "--no-index", "-z", "--", *paths], root)
    if ignored is not None and ignored.returncode == 0:
        skip = set(ignored.stdout.decode("utf-8", errors="surrogateescape").split("\0"))
        paths = [path for path in paths if path not in skip]  # the operator ignores them
        if not paths:
            return None
    pathspec = ["--", *paths]
    added = run_git(["add", *pathspec], root)
    if added is None:
        return None
    if added.returncode != 0:
        raise GitError(f"git add failed in {str(root)!r}: {_stderr_line(added)}")
    changed = run_git(["diff", "--cached", "--quiet", "HEAD", *pathspec], root)
    head_exists = run_git(["rev-parse", "--verify", "--quiet", "HEAD"], root)
    if (
        changed is not None
        and changed.returncode == 0
        and head_exists is not None
        and head_exists.returncode == 0
    ):
        return None  # the files are committed as they are
    committed = run_git(
        ["commit", "--no-verify", "--only", "-m", message, *pathspec],
        root,
        extra_options=identity_options(root),
    )
    if committed is None:
        return None
    if committed.returncode != 0:
        raise GitError(f"git commit failed in {str(root)!r}: {_stderr_line(committed)}")
    head = run_git(["rev-parse", "HEAD"], root)
    if head is None or head.returncode != 0:
        return None
    return head.stdout.decode("ascii", errors="replace").strip()
