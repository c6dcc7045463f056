"""Run a large SQLite export on worker processes, chunk by chunk, and write it in order.

The rows are split into event_id ranges of about `CHUNK_ROWS` rows (`plan_chunks`). Each
worker (`export_worker.py`, a fresh interpreter: a forked copy of this process would count
its memory once more) formats its share of the chunks, round robin, with its own read-only
connection; this process reads the chunks back in event_id order and writes them out. A
worker's pipe holds about one chunk; when it is full the worker waits, so no worker runs more
than a chunk or two ahead and memory stays flat. A chunk the fast path cannot format exactly
is exported here, the in-process way (`fallback`); after `FALLBACK_STREAK` such chunks in a
row, or when the workers cannot be started at all, the workers are stopped and the caller
exports the rest in-process (`Outcome.rest`). Any failure, or Ctrl-C, stops the workers
before it is raised.
"""

from __future__ import annotations

import codecs
import errno
import json
import math
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from autopack.db.models import TokenEstimationV2Event
from autopack.telemetry.exchange import ProgressCallback
from autopack.telemetry.export_worker import DATA, ERROR, FALLBACK, FRAME, Job

CHUNK_ROWS = 1024
"""Rows per chunk: ~1 MB of NDJSON, which fits the pipe (PIPE_BYTES), so a worker can leave
a whole chunk there and go on; and it holds only a few MB at a time."""
WORKER_SCRIPT = Path(__file__).with_name("export_worker.py")
PIPE_BYTES = 1 << 20
"""The pipe buffer asked for each worker: fewer wake-ups per chunk (Linux; best effort)."""

WORKER_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(8 << 20), "MALLOC_TRIM_THRESHOLD_": str(32 << 20)}
"""glibc malloc settings for a worker: each chunk's text (~1 MB) is allocated and freed in
turn; from the heap, and not handed back to the system, the same pages serve every chunk
instead of being mapped, faulted in and zeroed again each time (other C libraries ignore
these)."""

FALLBACK_STREAK = 3
"""After this many chunks in a row fall back, the rest is exported in-process: rows that
defeat the fast path usually go on doing so, and each such chunk costs a worker's work and
this process's too."""

EVENTS_TABLE = TokenEstimationV2Event.__tablename__

Fallback = Callable[[int, int], tuple[bytes, int]]
"""Exports the rows with first <= event_id < end in-process: (the text, the row count)."""


class WorkerFailed(RuntimeError):
    """A worker process broke (a bug, or it was killed): the export is abandoned."""


@dataclass(frozen=True)
class Outcome:
    """What the workers did: the rows written, and the event_id range [first, end) left for
    the caller to export in-process (None when every chunk was written)."""

    rows: int
    rest: tuple[int, int] | None


@dataclass(frozen=True)
class ChunkQuery:
    """What the workers run: the chunk query and how to turn its rows into text."""

    sql: str
    layout: list[str]
    codes: list[list[str] | None]
    texts: list[str]
    csv_specials_per_row: int | None


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def can_run_workers() -> bool:
    """Workers need POSIX pipes, an interpreter to start, the worker script on disk."""
    return os.name == "posix" and bool(sys.executable) and WORKER_SCRIPT.is_file()


def plan_chunks(connection: sqlite3.Connection, chunk_rows: int) -> list[tuple[int, int]]:
    """Half-open event_id ranges [first, end) in order, each of at most ~2 * chunk_rows rows.

    Equal ranges of ids when the ids are dense (the usual case); otherwise ranges sized from
    the id span, split where they hold too many rows and merged where they hold few, so a
    clump of ids cannot make one huge chunk.
    """

    def scalar(sql: str, *params: int) -> object:
        row = connection.execute(sql, params).fetchone()
        return row[0] if row is not None else None

    # Two queries: SQLite answers a lone min() or max() from the index, not both at once.
    first = scalar(f"SELECT min(event_id) FROM {EVENTS_TABLE}")
    last = scalar(f"SELECT max(event_id) FROM {EVENTS_TABLE}")
    total = scalar(f"SELECT count(*) FROM {EVENTS_TABLE}")
    if not isinstance(first, int) or not isinstance(last, int) or not isinstance(total, int):
        return []
    end = last + 1
    if end - first == total:
        return [(start, min(start + chunk_rows, end)) for start in range(first, end, chunk_rows)]

    def count(start: int, stop: int) -> int:
        found = scalar(
            f"SELECT count(*) FROM {EVENTS_TABLE} WHERE event_id >= ? AND event_id < ?",
            start,
            stop,
        )
        return found if isinstance(found, int) else 0

    def split(start: int, stop: int, pieces: int) -> Iterator[tuple[int, int, int]]:
        width = max(1, math.ceil((stop - start) / pieces))
        for low in range(start, stop, width):
            high = min(low + width, stop)
            rows = count(low, high)
            if rows > 2 * chunk_rows and high - low > 1:
                yield from split(low, high, math.ceil(rows / chunk_rows))
            elif rows:
                yield low, high, rows

    chunks: list[tuple[int, int]] = []
    held = 0
    for low, high, rows in split(first, end, max(1, math.ceil(total / chunk_rows))):
        if chunks and held + rows <= chunk_rows:
            chunks[-1] = (chunks[-1][0], high)
            held += rows
        else:
            chunks.append((low, high))
            held = rows
    return chunks


def run_chunks(
    database: Path,
    query: ChunkQuery,
    chunks: list[tuple[int, int]],
    out: TextIO,
    *,
    workers: int,
    fallback: Fallback,
    busy_timeout_ms: int,
    progress: ProgressCallback | None = None,
    total: int | None = None,
    descriptor: bool = False,
) -> Outcome:
    """Format `chunks` on `workers` processes and write them to `out` in order.

    `descriptor`: the caller vouches that bytes written to `out`'s file descriptor read back
    as text written through `out` would (no newline translation, no write() of its own); the
    chunks then go there directly. When the workers cannot be started, nothing is written and
    all the chunks are left to the caller (`Outcome.rest`).
    """
    workers = max(1, min(workers, len(chunks)))
    if not chunks:
        return Outcome(0, None)
    written = 0
    streak = 0  # chunks in a row that fell back
    with _started(database, query, chunks, workers, busy_timeout_ms) as processes:
        if processes is None:
            return Outcome(0, (chunks[0][0], chunks[-1][1]))
        sink = _Sink(out, descriptor)
        for index, (first, end) in enumerate(chunks):
            process = processes[index % workers]
            assert process.stdout is not None
            source = process.stdout.fileno()
            kind, rows, length = FRAME.unpack(_read_exact(source, FRAME.size, process))
            if kind == DATA:
                sink.copy_from(source, length, process)
                streak = 0
            elif kind == FALLBACK:
                streak += 1
                if streak >= FALLBACK_STREAK:
                    _stop(processes)  # before the caller goes on without them
                    return Outcome(written, (first, chunks[-1][1]))
                text, rows = fallback(first, end)
                sink.write(text)
            elif kind == ERROR:
                message = _read_exact(source, length, process).decode(errors="replace")
                raise WorkerFailed(f"an export worker failed:\n{message}")
            else:
                raise WorkerFailed(f"an export worker sent an unknown frame {kind!r}")
            written += rows
            if progress is not None:
                progress(written, total)
    return Outcome(written, None)


@contextmanager
def _started(
    database: Path,
    query: ChunkQuery,
    chunks: list[tuple[int, int]],
    workers: int,
    busy_timeout_ms: int,
) -> Iterator[list[subprocess.Popen[bytes]] | None]:
    """The running workers, or None when they cannot be started (too many open files or
    processes: EMFILE, EAGAIN…); on leaving, however it happens, none is left running."""
    processes: list[subprocess.Popen[bytes]] = []
    try:
        started = True
        try:
            for _ in range(workers):
                processes.append(_start_worker())
        except OSError:
            # A limit of this machine, not an error of the export: the caller exports
            # in-process instead (the finally below stops the workers already started).
            started = False
        if not started:
            yield None
            return
        # All started before any job is sent: a job larger than a pipe's buffer waits for
        # its worker to read it, and the others start meanwhile.
        for number, process in enumerate(processes):
            job: Job = {
                "database": str(database),
                "busy_timeout_ms": busy_timeout_ms,
                "sql": query.sql,
                "layout": query.layout,
                "codes": query.codes,
                "texts": query.texts,
                "csv_specials_per_row": query.csv_specials_per_row,
                "chunks": [list(chunk) for chunk in chunks[number::workers]],
            }
            _send(process, job)
        yield processes
        for process in processes:
            process.wait()
    finally:
        _stop(processes)
        for process in processes:
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()


def _start_worker() -> subprocess.Popen[bytes]:
    # -P: the script's folder (autopack/telemetry) must not shadow modules it imports.
    # A session of its own: Ctrl-C reaches only this process, which then stops the workers.
    # close_fds=False: Python opens files non-inheritable anyway, and closing every possible
    # descriptor takes the child milliseconds, during which it still shares this process's
    # memory (vfork) and shows it as its own RSS.
    process = subprocess.Popen(
        [sys.executable, "-P", str(WORKER_SCRIPT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        bufsize=0,
        close_fds=False,
        start_new_session=True,
        env={**os.environ, **WORKER_MALLOC},
    )
    assert process.stdout is not None
    with suppress(ImportError, AttributeError, OSError):  # the default size works too
        import fcntl

        fcntl.fcntl(process.stdout.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    return process


def _send(process: subprocess.Popen[bytes], job: Job) -> None:
    assert process.stdin is not None
    try:
        process.stdin.write(json.dumps(job).encode())
        process.stdin.close()
    except BrokenPipeError:
        raise WorkerFailed(f"an export worker exited at start (status {process.wait()})") from None


def _read_exact(source: int, length: int, process: subprocess.Popen[bytes]) -> bytes:
    buffer = bytearray(length)
    view = memoryview(buffer)
    done = 0
    while done < length:
        got = os.readv(source, [view[done:]])
        if got == 0:
            raise _ended(process)
        done += got
    return bytes(buffer)


def _ended(process: subprocess.Popen[bytes]) -> WorkerFailed:
    status = process.wait()
    return WorkerFailed(f"an export worker stopped before its chunks were done (status {status})")


class _Sink:
    """Writes the chunks: straight to the output's file descriptor when the caller says it
    may (and the stream is UTF-8), moving worker output there without copying it through
    Python where Linux allows (splice); otherwise through the text stream."""

    def __init__(self, out: TextIO, descriptor: bool) -> None:
        self._out = out
        self._fd = _utf8_descriptor(out) if descriptor else None
        self._splice = self._fd is not None and hasattr(os, "splice")
        if self._fd is not None:
            out.flush()  # what was written through `out` (the CSV header) comes first

    def write(self, data: bytes) -> None:
        if self._fd is None:
            self._out.write(data.decode())
            return
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def copy_from(self, source: int, length: int, process: subprocess.Popen[bytes]) -> None:
        if self._splice and self._fd is not None:
            try:
                while length:
                    moved = os.splice(source, self._fd, length)
                    if moved == 0:
                        raise _ended(process)
                    length -= moved
                return
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise
                self._splice = False  # e.g. a terminal or an O_APPEND file: copy the rest
        self.write(_read_exact(source, length, process))


def _utf8_descriptor(out: TextIO) -> int | None:
    """The file descriptor behind `out` if it has one and writes UTF-8."""
    try:
        descriptor = out.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    encoding = getattr(out, "encoding", None)
    if not isinstance(encoding, str) or codecs.lookup(encoding).name != "utf-8":
        return None
    return descriptor
