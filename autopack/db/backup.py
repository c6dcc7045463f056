"""Back a SQLite file up with SQLite's online backup API (safe with a live WAL, unlike a copy)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from autopack.errors import TargetError


def backup_path_for(path: Path, now: datetime | None = None) -> Path:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ")
    return path.with_name(f"{path.name}.backup-{stamp}")


def backup_sqlite(path: Path, destination: Path | None = None) -> Path:
    """Copy the database at `path` page by page into a new file; return the new file's path."""
    target = destination or backup_path_for(path)
    if target.exists():
        raise TargetError(f"backup file {target} already exists.", hint="try again in a moment")
    source = sqlite3.connect(f"file:{quote(path.as_posix())}?mode=ro", uri=True)
    try:
        copy = sqlite3.connect(target)
        try:
            source.backup(copy)
        finally:
            copy.close()
    except sqlite3.Error as exc:
        target.unlink(missing_ok=True)
        raise TargetError(
            f"could not back up {path}: {exc}.", hint="nothing was changed; check disk space"
        ) from exc
    finally:
        source.close()
    return target
