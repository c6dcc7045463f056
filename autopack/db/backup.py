"""Back a SQLite file up with SQLite's online backup API (safe with a live WAL, unlike a copy).

The copy is written under a name that does not look like a backup and renamed only once it is
complete and on disk, so a file named `*.backup-*` is always a whole backup: a kill or a full
disk mid-copy leaves at most an `*.incomplete-backup-*` file, which the next upgrade removes.
"""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from autopack.errors import TargetError

BACKUP_MARK = ".backup-"
INCOMPLETE_MARK = ".incomplete-backup-"


def backup_path_for(path: Path, now: datetime | None = None) -> Path:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ")
    return path.with_name(f"{path.name}{BACKUP_MARK}{stamp}")


def incomplete_path_for(target: Path) -> Path:
    """Where the copy grows until it is whole: never a name that matches `*.backup-*`."""
    if BACKUP_MARK in target.name:
        return target.with_name(target.name.replace(BACKUP_MARK, INCOMPLETE_MARK, 1))
    return target.with_name(f"{target.name}{INCOMPLETE_MARK}copy")


def remove_incomplete_backups(path: Path) -> list[Path]:
    """Delete the leftovers of backups of `path` that were killed mid-copy. Only call this
    while holding the upgrade lock (autopack.db.upgrade_lock): no live backup is then running."""
    leftovers = sorted(path.parent.glob(f"{path.name}{INCOMPLETE_MARK}*"))
    for leftover in leftovers:
        leftover.unlink(missing_ok=True)
    return leftovers


def backup_sqlite(path: Path, destination: Path | None = None) -> Path:
    """Copy the database at `path` page by page into a new file; return the new file's path."""
    target = destination or backup_path_for(path)
    partial = incomplete_path_for(target)
    if target.exists() or partial.exists():
        raise TargetError(f"backup file {target} already exists.", hint="try again in a moment")
    source = sqlite3.connect(f"file:{quote(path.as_posix())}?mode=ro", uri=True)
    try:
        copy = sqlite3.connect(partial)
        try:
            source.backup(copy)
        finally:
            copy.close()
        _fsync(partial)
        partial.rename(target)
        _fsync(target.parent)  # the rename itself survives a power loss
    except (sqlite3.Error, OSError) as exc:
        partial.unlink(missing_ok=True)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise TargetError(
            f"could not back up {path}: {reason}.", hint="nothing was changed; check disk space"
        ) from exc
    finally:
        source.close()
    return target


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
