"""Writing an `--output` file without destroying what the path points at.

- a regular file, or a path that does not exist yet: written to a hidden temporary file beside
  it (`.NAME.PID.RANDOM.tmp`) and renamed over it at the end, so an interrupted or failed write
  leaves the old file as it was and no partial file;
- a symlink: followed, and its target written as above (the link stays a link);
- a character device (`/dev/null`) or a FIFO: written straight into, never replaced;
- a directory, a block device or a socket: refused (exit 2).

A temporary file left by a process that was killed (kill -9 runs no cleanup) names its owner's
pid; the next write into the same folder removes those whose owner is gone.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from autopack.errors import ConfigError

_TEMPORARY = re.compile(r"^\..+\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")


@dataclass(frozen=True)
class OutputFile:
    path: Path
    """The file written: the output path with symlinks followed."""
    stream: BinaryIO


def check_output_path(path: Path, *, database: Path | None, what: str) -> Path:
    """The destination (symlinks followed), or a ConfigError before anything is written.

    `database`: the SQLite file being read, which (with its -wal, -shm and -journal files) is
    never a destination; `what`: how the error names it (`exported`, `analysed`).
    """
    destination = path.expanduser().absolute().resolve()
    try:
        mode: int | None = destination.stat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise ConfigError(
            f"cannot use --output {path}: {exc.strerror or exc}.",
            hint="check the path and its permissions",
        ) from exc
    if mode is not None and stat.S_ISDIR(mode):
        raise ConfigError(f"--output {path} is a directory.", hint="name a file in it")
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
        raise ConfigError(
            f"--output {path} is neither a file, a character device nor a FIFO.",
            hint="name a regular file (it is replaced atomically), or a FIFO or device",
        )
    if not destination.parent.is_dir():
        raise ConfigError(
            f"the folder of --output {path} does not exist.",
            hint=f"create it first (mkdir -p {destination.parent})",
        )
    if database is not None:
        forbidden = {database, *(Path(f"{database}{s}") for s in ("-wal", "-shm", "-journal"))}
        if destination in forbidden:
            raise ConfigError(
                f"--output {path} is the database being {what}.",
                hint="write to another file",
            )
    return destination


@contextmanager
def open_output(path: Path) -> Iterator[OutputFile]:
    """A binary stream into `path` (see the module docstring); the caller checked the path
    with check_output_path. Replaced only if the block ends without an exception."""
    destination = path.expanduser().absolute().resolve()
    try:
        mode = destination.stat().st_mode
    except FileNotFoundError:
        mode = stat.S_IFREG
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        try:
            stream = open(destination, "wb")  # noqa: SIM115 (closed below)
        except OSError as exc:
            raise _write_error(path, exc) from exc
        try:
            yield OutputFile(destination, stream)
        finally:
            with suppress(OSError):
                stream.close()
        return
    remove_stale_temporaries(destination.parent)
    temporary = destination.with_name(
        f".{destination.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    )
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    try:
        with open(descriptor, "wb") as stream:
            yield OutputFile(destination, stream)
        os.replace(temporary, destination)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    finally:
        # Also on Ctrl-C or SIGTERM turned into an exception: never a half-written file.
        temporary.unlink(missing_ok=True)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove temporary files of ours in `folder` whose owner process is gone; those removed."""
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if match is None or _alive(int(match["pid"])):
            continue
        with suppress(OSError):
            if stat.S_ISREG(entry.lstat().st_mode):
                entry.unlink()
                removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # another user's process, or a number we cannot ask about: leave it
    return True


def _write_error(path: Path, exc: OSError) -> ConfigError:
    return ConfigError(
        f"cannot write --output {path}: {exc.strerror or exc}.",
        hint="check the folder is writable and the disk has room; nothing was written",
    )
