"""Undo a failed phase's writes: its files go back to what they held before the phase.

Taken just before the files are written (the paths are already checked by then), restored when
the phase ends FAILED in a git workspace, so the next attempt starts from a clean scope rather
than from the half-working output of the last one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from autopack.executor.workspace import normalize_relative_path


@dataclass(frozen=True)
class Snapshot:
    root: Path
    before: dict[str, bytes | None] = field(default_factory=dict)
    """Workspace-relative path → its bytes before the phase (None: it did not exist)."""


def take_snapshot(paths: Iterable[str], workspace: Path) -> Snapshot:
    root = workspace.resolve()
    before: dict[str, bytes | None] = {}
    for raw in paths:
        try:
            relative = normalize_relative_path(raw)
        except ValueError:
            continue  # such a path is refused before anything is written
        try:
            before[relative] = (root / relative).read_bytes()
        except FileNotFoundError:
            before[relative] = None
        except OSError:
            continue  # unreadable: the write will fail on it too
    return Snapshot(root, before)


def restore(snapshot: Snapshot) -> list[str]:
    """Put every snapshotted file back as it was; return the paths changed back."""
    restored: list[str] = []
    for relative, content in snapshot.before.items():
        path = snapshot.root / relative
        try:
            if content is None:
                if path.is_file() or path.is_symlink():
                    path.unlink()
                    restored.append(relative)
                continue
            if path.is_file() and path.read_bytes() == content:
                continue
            temp = path.with_name(f".{path.name}.autopack-restore")
            temp.write_bytes(content)
            os.replace(temp, path)
            restored.append(relative)
        except OSError:
            continue  # best effort: what could not be restored stays visible in git status
    return restored
