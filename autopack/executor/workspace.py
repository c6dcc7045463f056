"""Where the builder's files may go, and writing them there atomically.

The workspace is the operator's code. A reply from the builder LLM is untrusted input, so every
path in it is checked before anything is written:

- it must be relative (no leading `/`, no drive letter), free of `..`, backslashes and NUL;
- it must lie under one of the phase's scope paths (component-wise: `src/app` does not cover
  `src/app_v2/x.py`); a scope path `.` covers the whole workspace; no scope paths, no writes;
- after following every symlink on the way (in any parent, or the file itself), the real
  destination must still lie under the workspace and under that scope path.

All files are checked before any is written. Writing then happens in two steps: every file's
content goes to a temporary file next to its destination, and only when all of them are written
does each temporary file replace its destination (`os.replace`, atomic on POSIX). A reader never
sees a half-written file, and a full disk while staging leaves the workspace untouched.

`dirty_scope_paths` tells which scope paths hold uncommitted git changes, so the caller can
refuse to overwrite an operator's work in progress.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from autopack.errors import AutopackError
from autopack.executor.git import GitError, inside_work_tree, run_git

_TEMP_SUFFIX: Final = ".autopack-tmp"
_NTFS_SHORT_GIT: Final = re.compile(r"git~\d+")

FileItem = tuple[str, str]
"""A file to write: (path relative to the workspace root, content)."""


class WorkspaceError(AutopackError):
    """Files could not be placed in the workspace (a conflict, an I/O error, git trouble)."""


class ScopeViolation(WorkspaceError):
    """A path points outside the workspace or outside the phase's scope paths."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(
            f"refused to write {path!r}: {reason}",
            hint="the builder may only write files under the phase's scope paths, "
            "as relative paths inside the workspace",
        )
        self.path = path
        self.reason = reason


def normalize_relative_path(path: str) -> str:
    """Return `path` as a clean, relative, `/`-separated path, or raise `ValueError` saying why.

    Surrounding whitespace, `.` components, a leading `./` and repeated or trailing slashes are
    dropped. Refused: an empty path, an absolute path (`/x`, `C:/x`, `//host/x`), any `..`
    component, a backslash and a NUL character. `.` alone (the workspace root) is returned as
    `.`.
    """
    text = path.strip()
    if not text:
        raise ValueError("the path is empty")
    if "\0" in text:
        raise ValueError("the path contains a NUL character")
    if "\\" in text:
        raise ValueError("the path contains a backslash")
    if text.startswith("/") or (len(text) >= 2 and text[1] == ":" and text[0].isalpha()):
        raise ValueError("absolute paths are not allowed")
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ValueError("'..' is not allowed in a path")
    return "/".join(parts) if parts else "."


def _is_within(child: str, parent: str) -> bool:
    """Whether normalised relative path `child` is `parent` or below it, component-wise."""
    if parent == ".":
        return True
    return child == parent or child.startswith(parent + "/")


def _is_within_real(child: str, parent: str) -> bool:
    """Whether absolute path `child` is `parent` or below it (both already real paths)."""
    return child == parent or child.startswith(parent.rstrip(os.sep) + os.sep)


def _names_git_metadata(relative: str) -> bool:
    """Whether any component of a relative path is git's metadata directory (or file).

    Compared the way a case-insensitive or Windows file system would see it: any case, with
    trailing dots and spaces dropped, and NTFS's short name `git~1`. Whatever the scope, a
    write there could set `core.fsmonitor` or a hook, and git would run it.
    """
    for part in relative.split("/"):
        name = part.rstrip(". ").casefold()
        if name == ".git" or _NTFS_SHORT_GIT.fullmatch(name) or name.startswith(".git:"):
            return True
    return False


_GIT_REFUSAL: Final = "it is inside git's metadata (.git), which no phase may write"


@dataclass(frozen=True, slots=True)
class _Scope:
    relative: str
    location: str
    """The scope's absolute lexical location under the real workspace root."""


@dataclass(frozen=True, slots=True)
class _Placement:
    relative: str
    destination: Path
    content: str


def _workspace_root(workspace: Path) -> Path:
    try:
        root = workspace.resolve(strict=True)
    except OSError as exc:
        raise WorkspaceError(
            f"the workspace {str(workspace)!r} does not exist",
            hint="run from the project's checkout or pass the workspace explicitly",
        ) from exc
    if not root.is_dir():
        raise WorkspaceError(f"the workspace {str(workspace)!r} is not a directory")
    return root


def _scopes(scope_paths: Sequence[str], root: Path) -> list[_Scope]:
    scopes: list[_Scope] = []
    for raw in scope_paths:
        try:
            relative = normalize_relative_path(raw)
        except ValueError as exc:
            raise ScopeViolation(raw, f"the phase's scope path is unusable: {exc}") from exc
        lexical = root if relative == "." else root / relative
        real = os.path.realpath(lexical)
        if not _is_within_real(real, str(root)):
            raise ScopeViolation(raw, "the phase's scope path leads outside the workspace")
        # A scope path that is itself a symlink to elsewhere inside the workspace would widen
        # the scope; the lexical location is the scope.
        scopes.append(_Scope(relative=relative, location=str(lexical)))
    return scopes


def _place(path: str, content: str, scopes: Sequence[_Scope], root: Path) -> _Placement:
    try:
        relative = normalize_relative_path(path)
    except ValueError as exc:
        raise ScopeViolation(path, str(exc)) from exc
    if relative == ".":
        raise ScopeViolation(path, "the path names the workspace root, not a file")
    if _names_git_metadata(relative):
        raise ScopeViolation(path, _GIT_REFUSAL)
    matching = [scope for scope in scopes if _is_within(relative, scope.relative)]
    if not matching:
        if not scopes:
            raise ScopeViolation(path, "the phase has no scope paths, so nothing may be written")
        allowed = ", ".join(scope.relative for scope in scopes)
        raise ScopeViolation(path, f"it is outside the phase's scope paths ({allowed})")
    real = os.path.realpath(root / relative)
    if not _is_within_real(real, str(root)):
        raise ScopeViolation(path, "a symlink on the way leads outside the workspace")
    if not any(_is_within_real(real, scope.location) for scope in matching):
        raise ScopeViolation(path, "a symlink on the way leads outside the phase's scope")
    if _names_git_metadata(os.path.relpath(real, root).replace(os.sep, "/")):
        raise ScopeViolation(path, _GIT_REFUSAL)
    destination = Path(real)
    if destination.is_dir():
        raise WorkspaceError(f"cannot write {path!r}: a directory exists at that path")
    for parent in destination.parents:
        if parent == root:
            break
        if parent.exists() and not parent.is_dir():
            raise WorkspaceError(
                f"cannot write {path!r}: {str(parent.relative_to(root))!r} is a file, "
                "not a directory"
            )
    return _Placement(relative=relative, destination=destination, content=content)


def _plan(files: Sequence[FileItem], scope_paths: Sequence[str], root: Path) -> list[_Placement]:
    scopes = _scopes(scope_paths, root)
    placements = [_place(path, content, scopes, root) for path, content in files]
    seen: dict[Path, str] = {}
    for placement in placements:
        if placement.destination in seen:
            raise WorkspaceError(
                f"cannot write {placement.relative!r}: the reply names the same file twice "
                f"(also as {seen[placement.destination]!r})"
            )
        seen[placement.destination] = placement.relative
    for placement in placements:
        for parent in placement.destination.parents:
            if parent in seen:
                raise WorkspaceError(
                    f"cannot write {placement.relative!r}: {seen[parent]!r} is also written "
                    "as a file"
                )
    return placements


def check_paths(files: Sequence[FileItem], scope_paths: Sequence[str], workspace: Path) -> None:
    """Raise `ScopeViolation` (naming the path) unless every file may be written; write nothing.

    Also raises `WorkspaceError` when the workspace is missing, a path is given twice, a
    directory sits where a file would go, or a file sits where a directory would be needed.
    """
    _plan(files, scope_paths, _workspace_root(workspace))


def _existing_mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return None


def _stage(placement: _Placement) -> Path:
    """Write one file's content to a new temporary file beside its destination."""
    parent = placement.destination.parent
    parent.mkdir(parents=True, exist_ok=True)
    # Re-check after creating directories: a directory swapped for a symlink since the check
    # must not redirect the write.
    if os.path.realpath(placement.destination) != str(placement.destination):
        raise ScopeViolation(placement.relative, "a directory on the way changed into a symlink")
    temp = parent / f".{placement.destination.name}.{secrets.token_hex(6)}{_TEMP_SUFFIX}"
    mode = _existing_mode(placement.destination)
    # 0o666 through the umask, like any new file; an existing file keeps its permissions.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            try:
                data = placement.content.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ScopeViolation(
                    placement.relative, "its content is not valid Unicode text (a lone surrogate)"
                ) from exc
            handle.write(data)
        if mode is not None:
            os.chmod(temp, mode)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def write_files_atomically(
    files: Sequence[FileItem], scope_paths: Sequence[str], workspace: Path
) -> list[Path]:
    """Write every file (UTF-8, content as given) under the workspace; return the destinations.

    Every path is checked first (`check_paths`); if any is refused, nothing is written. Missing
    parent directories are created (they are the file's own directories under its scope path,
    plus the scope path's ancestors if the scope directory does not exist yet). Each file is
    staged as a temporary file in its destination directory; only when all are staged does each
    replace its destination with `os.replace`. A staging failure removes the temporary files
    and raises `WorkspaceError`, leaving the workspace as it was (apart from new empty
    directories). Existing files keep their permission bits; new ones get 0o666 minus the umask.
    Writing follows an in-scope symlink to its target. The returned paths are the real
    destinations, in the order of `files`.
    """
    root = _workspace_root(workspace)
    placements = _plan(files, scope_paths, root)
    staged: list[tuple[Path, _Placement]] = []
    current = ""
    try:
        for placement in placements:
            current = placement.relative
            staged.append((_stage(placement), placement))
    except OSError as exc:
        for temp, _ in staged:
            temp.unlink(missing_ok=True)
        raise WorkspaceError(
            f"could not write {current!r}: {exc.strerror or exc}",
            hint="check free disk space and permissions in the workspace",
        ) from exc
    except BaseException:
        for temp, _ in staged:
            temp.unlink(missing_ok=True)
        raise
    written: list[Path] = []
    for index, (temp, placement) in enumerate(staged):
        try:
            os.replace(temp, placement.destination)
        except OSError as exc:
            for leftover, _ in staged[index:]:
                leftover.unlink(missing_ok=True)
            raise WorkspaceError(
                f"could not replace {placement.relative!r}: {exc.strerror or exc}"
            ) from exc
        written.append(placement.destination)
    return written


def _changed_paths(porcelain: bytes) -> list[str]:
    """Repository-relative paths from `git status --porcelain -z` output, renames' both sides."""
    entries = porcelain.decode("utf-8", errors="surrogateescape").split("\0")
    paths: list[str] = []
    index = 0
    while index < len(entries):
        entry = entries[index]
        index += 1
        if len(entry) < 4:
            continue
        paths.append(entry[3:])
        if entry[0] in "RC":
            if index < len(entries) and entries[index]:
                paths.append(entries[index])
            index += 1
    return paths


def file_sha256(path: Path) -> str | None:
    """The sha256 of a file's bytes; None when it is not a readable regular file."""
    try:
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return None


def dirty_scope_paths(
    scope_paths: Sequence[str], workspace: Path, ours: Mapping[str, str] | None = None
) -> list[str]:
    """The scope paths (as given, in order) holding uncommitted git changes.

    Runs `git status --porcelain -z --untracked-files=all -- <scope paths>` in the workspace:
    tracked files modified, staged, deleted or renamed, and untracked files (ignored files are
    not changes) all count. Returns `[]` when the workspace is not inside a git work tree or
    git is not installed, so there is nothing to protect. Any other git failure raises
    `WorkspaceError`, because guessing "clean" could overwrite an operator's work. Scope paths
    that cannot be a workspace path (absolute, `..`) raise `ScopeViolation`.

    `ours` maps workspace-relative paths to the sha256 of what autopack last wrote there: a
    changed file still holding exactly those bytes is autopack's recorded output, not an edit
    of the operator's, and does not make its scope dirty.
    """
    if not scope_paths:
        return []
    root = _workspace_root(workspace)
    if not inside_work_tree(root):
        return []  # nothing to protect, and no git process per phase
    normalized: list[tuple[str, str]] = []
    for raw in scope_paths:
        try:
            normalized.append((raw, normalize_relative_path(raw)))
        except ValueError as exc:
            raise ScopeViolation(raw, f"the phase's scope path is unusable: {exc}") from exc
    pathspecs = [relative for _, relative in normalized]
    try:
        status = run_git(
            ["status", "--porcelain", "-z", "--untracked-files=all", "--", *pathspecs], root
        )
    except GitError as exc:
        raise WorkspaceError(exc.message) from exc
    if status is None:
        return []
    if status.returncode != 0:
        message = status.stderr.decode("utf-8", errors="replace").strip()
        if "not a git repository" in message:
            return []
        first = message.splitlines()[0] if message else f"exit code {status.returncode}"
        raise WorkspaceError(
            f"git status failed in {str(root)!r}: {first}",
            hint="fix the repository (or its safe.directory setting) so local changes can be "
            "checked, or pass --allow-dirty",
        )
    changed = _changed_paths(status.stdout)
    if not changed:
        return []
    prefix = _repository_prefix(root)
    relative_changes = [
        relative
        for relative in (path[len(prefix) :] for path in changed if path.startswith(prefix))
        if not _is_ours(relative, root, ours)
    ]
    return [
        raw
        for raw, relative in normalized
        if any(_is_within(change.rstrip("/"), relative) for change in relative_changes)
    ]


def _is_ours(relative: str, root: Path, ours: Mapping[str, str] | None) -> bool:
    recorded = (ours or {}).get(relative)
    return recorded is not None and file_sha256(root / relative) == recorded


def _repository_prefix(root: Path) -> str:
    """The workspace's path inside its repository (`""` at the top, else ending in `/`)."""
    result = run_git(["rev-parse", "--show-prefix"], root)
    if result is None or result.returncode != 0:
        return ""
    return result.stdout.decode("utf-8", errors="surrogateescape").strip()


__all__ = [
    "FileItem",
    "ScopeViolation",
    "WorkspaceError",
    "check_paths",
    "dirty_scope_paths",
    "file_sha256",
    "normalize_relative_path",
    "write_files_atomically",
]
