"""A worker process of a parallel SQLite export: turns chunks of rows into export text.

Run by `autopack.telemetry.export_parallel` as `python -P export_worker.py` (a script, not a
module of the package), it imports only the standard library and pydantic_core: a fresh
interpreter stays small, and its memory counts alongside the parent's. sqlite3 and
pydantic_core are imported once the job has come: the parent starts every worker before it
sends any job, so a worker is still at its smallest while the next one starts (a starting
process briefly shows the parent's memory as its own).

The parent writes one JSON job on stdin (see `Job`) and closes it. For each of its chunks, in
order, the worker answers one frame on stdout: a header (`FRAME`: kind, rows, payload bytes)
and the payload.

- `D` (data): the chunk's rows, formatted exactly as the in-process export writes them.
- `F` (fallback): the chunk holds something the fast path does not format exactly (a value of
  an unexpected storage class, a CSV cell that needs quoting, a database error); the parent
  exports that chunk itself, the in-process way, which also reports any real error.
- `E` (error): a bug; the payload is the traceback. The worker stops.

The database formats most of a row (the job's SQL returns text pieces; a NULL piece means a
value of an unexpected storage class); the worker fills in what SQLite cannot write exactly
(floats: SQLite prints 15 digits, not the shortest exact form) and the parsed deliverables.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import struct
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from itertools import chain, repeat
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Final, TypedDict
from urllib.parse import quote

if TYPE_CHECKING:
    import sqlite3
    from _csv import Writer

FRAME: Final = struct.Struct("<cIQ")
DATA: Final = b"D"
FALLBACK: Final = b"F"
ERROR: Final = b"E"

# What each position of a result row holds (the job's `layout`).
SQL_TEXT: Final = "sql"
"""Text the database formatted; NULL when a value had an unexpected storage class."""
CSV_CELL: Final = "csv"
"""A raw value written as csv.writer writes a cell (quoted when it must be)."""
CSV_NUMBER: Final = "csv-number"
"""A raw value, usually a float or NULL, written as csv.writer writes a cell."""
JSON_VALUE: Final = "json"
"""A raw value written as pydantic_core writes it (NDJSON floats)."""
DELIVERABLES: Final = "deliverables"
"""deliverables_json parsed, written as JSON ([] unless it holds a JSON list)."""
CODES: Final = "codes"
"""A number the database computed from several values, written as the job's text for it;
NULL when a value had an unexpected storage class."""

QUOTING_PROBE: Final = "".join(map(chr, range(0x100))) + "\u2028\u2029"
"""The characters asked of csv.writer at start-up: whether it quotes a cell holding them.
It quotes for ASCII ones only (`,`, `"`, `\\n`; `\\r` too from Python 3.13); the tests check
that it quotes for no other character."""
CACHE_LIMIT: Final = 10_000
_NULL_CELL: Final = {b"null": b""}


class Job(TypedDict):
    database: str
    busy_timeout_ms: int
    sql: str
    """The chunk query: two parameters, the first event_id and the one after the last."""
    layout: list[str]
    codes: list[list[str] | None]
    """For each CODES position, the text of each code."""
    texts: list[str]
    """The literal text around the row's values: before the first, between, after the last."""
    csv_specials_per_row: int | None
    """CSV: the commas between a row's cells and its newline. Beyond those and the ones in
    cells the worker formatted, a character csv.writer quotes for is in a cell that needed
    quoting (see `CsvRule`)."""
    chunks: list[list[int]]


class _Bounded(dict[Any, Any]):
    """A cache of formatted values: deliverables lists and CSV cells repeat across rows."""

    def __init__(self, compute: Callable[[Any], Any]) -> None:
        super().__init__()
        self._compute = compute

    def __missing__(self, key: Any) -> Any:
        if len(self) >= CACHE_LIMIT:
            self.clear()
        value = self._compute(key)
        self[key] = value
        return value


def _text(value: object) -> object:
    """A value as the in-process export sees it: text comes as UTF-8 bytes here."""
    return value.decode() if isinstance(value, bytes) else value


def csv_writer(stream: Any) -> Writer:
    """The CSV writer of every export, in-process and here: one dialect for both."""
    import csv

    return csv.writer(stream, lineterminator="\n")


class _LastWrite:
    """A stream for csv.writer that keeps only the last text written (one row)."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text = text
        return len(text)


class CsvRule:
    """How csv.writer writes a cell, asked of the csv module itself when the worker starts
    (not copied from it: Python 3.13 began to quote a cell holding `\\r`).

    `special` holds the characters csv.writer quotes a cell for, as UTF-8 (`special_bytes`
    the one-byte ones): an unquoted cell holds none, so the count of them in a chunk's text
    tells whether a cell the database wrote raw needed quoting.
    """

    def __init__(self) -> None:
        self._stream = _LastWrite()
        self._writer = csv_writer(self._stream)
        # A cell is written in a row of two, as in the export (a row of one empty cell is
        # quoted): the second cell, empty, is written as the row's tail.
        self._writer.writerow(("", ""))
        self._tail = self._stream.text
        special = [char for char in QUOTING_PROBE if self.cell_text(char) != char]
        encoded = [char.encode() for char in special]
        self.special_bytes = b"".join(e for e in encoded if len(e) == 1)
        self.special_sequences = [e for e in encoded if len(e) > 1]
        self.special = "".join(special)

    def cell_text(self, value: object) -> str:
        """The cell csv.writer writes for `value` (text, a number, or None)."""
        self._writer.writerow((value, ""))
        written = self._stream.text
        if not written.endswith(self._tail):
            raise RuntimeError(f"csv.writer wrote {written!r}, not a cell and {self._tail!r}")
        return written[: len(written) - len(self._tail)]

    def count_special(self, data: bytes) -> int:
        """How many characters csv.writer quotes for `data` holds."""
        found = len(data) - len(data.translate(None, self.special_bytes))
        for sequence in self.special_sequences:
            found += data.count(sequence)
        return found

    def cell(self, value: object) -> tuple[bytes, int]:
        """The cell for a value as it comes from the database (text as UTF-8 bytes), and how
        many characters csv.writer quotes for it holds."""
        data = self.cell_text(_text(value)).encode()
        return data, self.count_special(data)


def parse_deliverables(text: object) -> list[Any]:
    """The parsed list, or [] when the stored text is not a JSON list (as the export does)."""
    if not isinstance(text, str):
        return []
    try:
        parsed = json.loads(text)
    except ValueError:
        return []
    return parsed if isinstance(parsed, list) else []


def _to_json(value: object) -> bytes:
    import pydantic_core  # imported once the job has come (see the module's doc)

    return pydantic_core.to_json(value)


def _deliverables_json(value: object) -> bytes:
    return _to_json(parse_deliverables(_text(value)))


def _json_values(values: list[Any]) -> list[bytes] | None:
    """Each value as pydantic_core writes it, from one call for the whole list.

    Splitting the array at commas is right unless a value's JSON holds a comma (only a
    string's could): then the count comes out wrong, and None says so.
    """
    parts = _to_json(values)[1:-1].split(b",")
    if values and len(parts) == len(values):
        return parts
    return None


def _csv_numbers(values: list[Any], rule: CsvRule) -> tuple[list[bytes], int]:
    """Cells of floats (or NULLs) as csv.writer writes them: repr(), '' for NULL.

    pydantic_core's shortest form has the digits of repr() (both are the shortest string
    that reads back as the same float, the closest one if several); only the notation can
    differ: exponents (1e-07 / 1e-7, 1e-05 / 0.00001), inf and nan. Anything else (a string
    stored in a REAL column) is written cell by cell by csv.writer. Also returns how many
    characters csv.writer quotes for the cells hold.
    """
    blob = _to_json(values)
    if any(mark in blob for mark in (b'"', b"e", b"0.0000", b"N", b"I")):
        cells = [rule.cell(value) for value in values]
        return [cell for cell, _ in cells], sum(specials for _, specials in cells)
    parts = blob[1:-1].split(b",")
    return list(map(_NULL_CELL.get, parts, parts)), 0


class Formatter:
    """Formats the rows of one chunk query into export text, or says it cannot."""

    def __init__(self, job: Job) -> None:
        self.layout = job["layout"]
        self.codes = [
            None if texts is None else [text.encode() for text in texts] for texts in job["codes"]
        ]
        self.texts = [text.encode() for text in job["texts"]]
        self.specials = job["csv_specials_per_row"]
        # NDJSON needs no csv module: the worker stays smaller.
        self.csv_rule = CsvRule() if self.specials is not None else None
        self.csv_cells = _Bounded(self.csv_rule.cell) if self.csv_rule is not None else None
        self.deliverables = _Bounded(_deliverables_json)

    def format(self, rows: Sequence[tuple[Any, ...]]) -> bytes | None:
        """The chunk's text, or None when the fast path cannot format it exactly."""
        count = len(rows)
        if not count:
            return b""
        columns: list[Sequence[Any]] = list(zip(*rows, strict=True))
        json_positions: list[int] = []
        quoted = 0  # characters csv.writer quotes for, in the cells formatted here
        for position, kind in enumerate(self.layout):
            column = columns[position]
            if kind == SQL_TEXT:
                if None in column:
                    return None
            elif kind == CODES:
                texts = self.codes[position]
                if None in column or texts is None:
                    return None
                columns[position] = list(map(texts.__getitem__, column))
            elif kind == CSV_CELL:
                assert self.csv_cells is not None, "a CSV cell in an NDJSON export"
                cells = list(map(self.csv_cells.__getitem__, column))
                columns[position] = list(map(itemgetter(0), cells))
                quoted += sum(map(itemgetter(1), cells))
            elif kind == CSV_NUMBER:
                assert self.csv_rule is not None, "a CSV cell in an NDJSON export"
                columns[position], specials = _csv_numbers(list(column), self.csv_rule)
                quoted += specials
            elif kind == DELIVERABLES:
                columns[position] = list(map(self.deliverables.__getitem__, column))
            elif kind == JSON_VALUE:
                json_positions.append(position)
        if json_positions:
            parts = _json_values([value for p in json_positions for value in columns[p]])
            if parts is None:
                return None
            for k, position in enumerate(json_positions):
                columns[position] = parts[k * count : (k + 1) * count]
        data = b"".join(chain.from_iterable(zip(*self._interleaved(columns, count), strict=True)))
        if not data.isascii():
            data.decode()  # text that is not UTF-8 raises ValueError (as it does in-process)
        rule, per_row = self.csv_rule, self.specials
        if (
            rule is not None
            and per_row is not None
            and rule.count_special(data) != count * per_row + quoted
        ):
            return None  # a cell the database wrote raw needed quoting
        return data

    def _interleaved(self, columns: list[Sequence[Any]], count: int) -> list[Iterable[bytes]]:
        """Per row: texts[0], value 0, texts[1], value 1, …, texts[-1] (empty texts left out)."""
        sequences: list[Iterable[bytes]] = []
        for text, column in zip(self.texts, [*columns, None], strict=True):
            if text:
                sequences.append(repeat(text, count))
            if column is not None:
                sequences.append(column)
        return sequences


def write_all(descriptor: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view) :]


def connect(database: str, busy_timeout_ms: int) -> sqlite3.Connection:
    """A read-only connection: mode=ro can neither create nor change the file."""
    import sqlite3

    uri = f"file:{quote(database)}?mode=ro"
    connection = sqlite3.connect(uri, uri=True, isolation_level=None)
    connection.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    # Text as UTF-8 bytes: it goes out as bytes, so decoding it would be wasted work.
    connection.text_factory = bytes
    return connection


def run(job: Job, descriptor: int) -> None:
    import sqlite3

    formatter = Formatter(job)
    connection: sqlite3.Connection | None = None
    try:
        connection = connect(job["database"], job["busy_timeout_ms"])
        # One read transaction: every chunk of this worker sees the same snapshot.
        connection.execute("BEGIN")
    except sqlite3.Error:
        if connection is not None:
            connection.close()
        connection = None  # every chunk falls back: the parent reports the error, if any
    try:
        for first, end in job["chunks"]:
            rows: list[Any] = []
            data: bytes | None = None
            try:
                if connection is not None:
                    rows = connection.execute(job["sql"], (first, end)).fetchall()
                    data = formatter.format(rows)
            except (sqlite3.Error, ValueError):
                # ValueError: text that is not UTF-8, or a value pydantic_core can't write.
                data = None  # the parent formats this range itself, and reports any error
            if data is None:
                write_all(descriptor, FRAME.pack(FALLBACK, 0, 0))
            else:
                write_all(descriptor, FRAME.pack(DATA, len(rows), len(data)))
                write_all(descriptor, data)
            del rows, data  # before the next chunk's rows arrive: one chunk at a time
    finally:
        if connection is not None:
            connection.close()


def _silence_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main() -> int:
    # The parent stops the workers itself (Ctrl-C included); a worker says nothing on stderr.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Nothing here makes reference cycles; the collector would only rescan the rows.
    gc.disable()
    descriptor = sys.stdout.fileno()
    try:
        job: Job = json.loads(sys.stdin.buffer.read())
        run(job, descriptor)
    except BrokenPipeError:
        # The parent stopped reading (it is cleaning up): leave quietly.
        _silence_stdout()
        return 0
    except Exception:
        message = traceback.format_exc().encode()
        try:
            write_all(descriptor, FRAME.pack(ERROR, 0, len(message)) + message)
        except BrokenPipeError:
            _silence_stdout()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
