"""Text cells that are not valid UTF-8: read with U+FFFD in place of the bad bytes, and said
where they are, instead of one bad byte failing every report (sqlite3's default decoding
raises, and the whole query with it).

SQLite stores whatever bytes a writer gave it; PostgreSQL refuses invalid text when it is
written, so this concerns SQLite only. Every sqlite3 connection autopack makes gets the
decoder of its Database's `InvalidTextLog` (autopack.db.engine). A bad value is located once
per Database, on a separate read-only connection (one scan of each table for that value; only
ever paid when such a value turns up) and reported through the `autopack.db` logger, which
prints on stderr unless the caller routes logging elsewhere.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

logger = logging.getLogger("autopack.db")

MAX_LOCATED = 5
"""Distinct bad values located and reported one by one; later ones are only counted."""
MAX_CELLS_PER_VALUE = 3
_CONTEXT_BYTES = 8
"""Bytes either side of the bad ones that the search looks for, so a stray continuation byte
does not match every multi-byte character of the database."""


@dataclass(frozen=True)
class TextCell:
    table: str
    rowid: int
    column: str

    def __str__(self) -> str:
        return f"{self.table}.{self.column} (rowid {self.rowid})"


class InvalidTextLog:
    """The invalid text one Database's connections met, deduplicated across its threads."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._seen: set[bytes] = set()
        self.located: dict[str, tuple[TextCell, ...]] = {}
        """Shown text (with U+FFFD) → the cells holding it (empty where the search found none)."""

    def decoder(self) -> Callable[[bytes], str]:
        """A sqlite3 text_factory: strict UTF-8 as usual, replacement and a report when not."""

        def decode(data: bytes) -> str:
            try:
                return data.decode()
            except UnicodeDecodeError as exc:
                return self._replaced(data, exc)

        return decode

    def _replaced(self, data: bytes, exc: UnicodeDecodeError) -> str:
        text = data.decode("utf-8", "replace")
        with self._lock:
            if data in self._seen:
                return text
            self._seen.add(data)
            count = len(self._seen)
        if count > MAX_LOCATED:
            if count == MAX_LOCATED + 1:
                logger.warning("warning: more text that is not UTF-8; not located one by one")
            return text
        needle = data[max(0, exc.start - _CONTEXT_BYTES) : exc.end + _CONTEXT_BYTES]
        cells = self._locate(needle)
        with self._lock:
            self.located[text] = cells
        where = ", ".join(str(cell) for cell in cells) if cells else "a computed value"
        logger.warning(
            "warning: text that is not UTF-8 in %s, read with U+FFFD for the bad bytes: %r",
            where,
            _clip(text),
        )
        return text

    def _locate(self, needle: bytes) -> tuple[TextCell, ...]:
        if self._path is None:
            return ()
        try:
            connection = sqlite3.connect(f"file:{quote(self._path.as_posix())}?mode=ro", uri=True)
        except sqlite3.Error:
            return ()
        try:
            found: list[TextCell] = []
            tables = connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            ).fetchall()
            for (table,) in tables:
                found.extend(_cells_holding(connection, str(table), needle))
                if len(found) >= MAX_CELLS_PER_VALUE:
                    break
            return tuple(found[:MAX_CELLS_PER_VALUE])
        finally:
            connection.close()


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _cells_holding(connection: sqlite3.Connection, table: str, needle: bytes) -> list[TextCell]:
    """The cells of `table` whose bytes contain `needle`: one scan of the table."""
    try:
        columns = [
            str(row[1]) for row in connection.execute(f"PRAGMA table_info({_quoted(table)})")
        ]
        if not columns:
            return []
        tests = [f"instr(CAST({_quoted(c)} AS BLOB), ?1) > 0" for c in columns]
        which = " ".join(f"WHEN {test} THEN {i}" for i, test in enumerate(tests))
        rows = connection.execute(
            f"SELECT rowid, CASE {which} END FROM {_quoted(table)} "
            f"WHERE {' OR '.join(tests)} LIMIT {MAX_CELLS_PER_VALUE}",
            (needle,),
        ).fetchall()
    except sqlite3.Error:  # e.g. a WITHOUT ROWID table: not searched
        return []
    return [TextCell(table, int(rowid), columns[int(index)]) for rowid, index in rows]


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
