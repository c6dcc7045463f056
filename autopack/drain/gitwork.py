"""Draining into a git workspace the way aider works: one commit per completed phase.

The order is: the drain result (with the sha256 of every file written) is committed to the DB
first, then the phase's own files are committed to git, and the commit is noted on the result.
A crash in between leaves a result without a commit; the next drain into the same workspace
commits it (`commit_pending`). The recorded hashes also let the dirty check tell autopack's own
uncommitted output from the operator's edits (`own_files`). Outside a git work tree none of
this runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from autopack.db.models import DrainResult, table_of
from autopack.db.retry import run_retrying
from autopack.executor.git import GitError, commit_paths, inside_work_tree
from autopack.executor.workspace import file_sha256

RESULTS = table_of(DrainResult)
# Workers of one process share the workspace's index: one git commit at a time.
_GIT_LOCK = threading.Lock()
NOT_COMMITTED = ""
"""commit_sha of a result whose files were no longer as written (nothing of it was committed)."""


def is_git_workspace(workspace: Path) -> bool:
    return inside_work_tree(workspace.resolve())


def commit_message(run_id: str, phase_id: str, session_id: str) -> str:
    return (
        f"autopack: {run_id} / {phase_id}\n\n"
        f"Phase {phase_id} of run {run_id}, drained by autopack session {session_id}.\n"
    )


def _in_workspace(workspace: Path) -> sa.ColumnElement[bool]:
    """Results whose transcripts live in this workspace (their files were written there)."""
    prefix = str(workspace / ".autopack") + "/"
    return RESULTS.c.transcript_dir.startswith(prefix, autoescape=True)


def own_files(engine: Engine, workspace: Path) -> dict[str, str]:
    """Path → sha256 of what autopack last wrote there, over every result in this workspace."""
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(RESULTS.c.written_files)
            .where(RESULTS.c.written_files.is_not(None), _in_workspace(workspace))
            .order_by(RESULTS.c.id)
        ).all()
    files: dict[str, str] = {}
    for (written,) in rows:
        if isinstance(written, dict):
            files.update({str(k): str(v) for k, v in written.items()})
    return files


def commit_result(
    engine: Engine,
    workspace: Path,
    result_id: int,
    run_id: str,
    phase_id: str,
    session_id: str,
    written: dict[str, str],
) -> str:
    """Commit the files of one recorded result that still hold what was written; note the
    commit on the result and return it (NOT_COMMITTED when none did)."""
    unchanged = sorted(
        path for path, sha in written.items() if file_sha256(workspace / path) == sha
    )
    with _GIT_LOCK:
        sha = commit_paths(workspace, unchanged, commit_message(run_id, phase_id, session_id))
    commit = sha or NOT_COMMITTED

    def note() -> None:
        with engine.begin() as connection:
            connection.execute(
                sa.update(RESULTS).where(RESULTS.c.id == result_id).values(commit_sha=commit)
            )

    run_retrying(note, what="note the phase's commit")
    return commit


def commit_pending(
    engine: Engine, workspace: Path, log: Callable[[str], None] = lambda _m: None
) -> list[str]:
    """Commit the completed phases whose result was recorded but whose files were not committed
    (a crash between the two); return the commits made."""
    if not is_git_workspace(workspace):
        return []
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(
                RESULTS.c.id,
                RESULTS.c.run_id,
                RESULTS.c.phase_id,
                RESULTS.c.session_id,
                RESULTS.c.written_files,
            )
            .where(
                RESULTS.c.outcome == "complete",
                RESULTS.c.written_files.is_not(None),
                RESULTS.c.commit_sha.is_(None),
                _in_workspace(workspace),
            )
            .order_by(RESULTS.c.id)
        ).all()
    commits: list[str] = []
    for row in rows:
        try:
            commit = commit_result(
                engine,
                workspace,
                row.id,
                row.run_id,
                row.phase_id,
                row.session_id,
                dict(row.written_files),
            )
        except GitError as exc:
            log(f"could not commit {row.run_id} / {row.phase_id} left uncommitted: {exc.message}")
            continue
        if commit:
            commits.append(commit)
            log(f"committed {row.run_id} / {row.phase_id} (recorded earlier): {commit[:12]}")
    return commits
