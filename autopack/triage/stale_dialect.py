"""The SQL that differs between SQLite and PostgreSQL in `triage stale` (autopack.triage.stale).

Everything else in its statements is common SQL. Here: how an entry's JSON object is built
(`json_object` on SQLite, `json_build_object` on PostgreSQL), how a stored timestamp is
written as ISO 8601 in UTC and how many whole minutes it lies before `:now`, how to compare
two possibly-NULL texts, and in what collation rows are ordered (PostgreSQL: "C", the order
Python compares strings in, so the stale list's two kinds merge in the order they came in).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StaleDialect:
    json_object: str
    """The function building a JSON object from key, value, key, value, …"""
    json_false: str
    as_text: str
    """Format of an expression that reads a JSON value as text (psycopg would parse it)."""
    as_raw: str
    """Format of a text expression read for the `--json` listing: raw bytes on SQLite, where
    a text cell costs a Python decoder call (autopack.db.text_cells) and a batch of bytes is
    decoded at once; text on PostgreSQL, which never stores invalid text."""
    collate: str
    """Appended to the text keys of ORDER BY."""
    null_safe_equal: str
    """`a <this> b`: true when both are NULL or both equal."""
    postgres: bool

    def utc_text(self, stamp: str) -> str:
        """A stored naive-UTC timestamp as `datetime.isoformat()` writes it, plus `+00:00`."""
        if self.postgres:
            return (
                f"to_char({stamp}, 'YYYY-MM-DD\"T\"HH24:MI:SS') || CASE WHEN {stamp} = "
                f"date_trunc('second', {stamp}) THEN '' ELSE to_char({stamp}, '.US') END "
                "|| '+00:00'"
            )
        # SQLAlchemy's storage form, `YYYY-MM-DD HH:MM:SS[.ffffff]`, is written as it is (no
        # fraction when it is zero); another form that SQLite reads as a date (a `T`, a short
        # fraction, an offset) is normalised by it to UTC, to the millisecond.
        return (
            f"CASE WHEN {_storage_form(stamp, 19)} THEN replace({stamp}, ' ', 'T') "
            f"WHEN {_storage_form(stamp, 26)} THEN replace(CASE WHEN substr({stamp}, 21) = "
            f"'000000' THEN substr({stamp}, 1, 19) ELSE {stamp} END, ' ', 'T') "
            f"ELSE strftime('%Y-%m-%dT%H:%M:%f', {stamp}) END || '+00:00'"
        )

    def age_minutes(self, stamp: str) -> str:
        """Whole minutes from `stamp` to `:now` (rounded down; 0 if later), exactly."""
        if self.postgres:
            return (
                f"GREATEST(CAST(FLOOR(EXTRACT(EPOCH FROM (CAST(:now AS timestamp) - {stamp})) "
                "/ 60) AS bigint), 0)"
            )
        # In whole microseconds (integers, never floats) for the storage form; SQLite's own
        # reading (to the millisecond) for another form; NULL for text that is no date.
        seconds = f"CAST(strftime('%s', substr({stamp}, 1, 19)) AS INTEGER)"
        micros = (
            f"CASE WHEN {_storage_form(stamp, 19)} THEN {seconds} * 1000000 "
            f"WHEN {_storage_form(stamp, 26)} THEN {seconds} * 1000000 "
            f"+ CAST(substr({stamp}, 21) AS INTEGER) "
            f"ELSE CAST(round((julianday({stamp}) - 2440587.5) * 86400000000.0) AS INTEGER) END"
        )
        return f"max(:now_us - ({micros}), 0) / 60000000"


def _storage_form(stamp: str, length: int) -> str:
    pattern = "____-__-__ __:__:__" + (".______" if length == 26 else "")
    return f"(length({stamp}) = {length} AND {stamp} LIKE '{pattern}')"


SQLITE = StaleDialect(
    json_object="json_object",
    json_false="json('false')",
    as_text="{}",
    as_raw="CAST({} AS BLOB)",
    collate="",
    null_safe_equal="IS",
    postgres=False,
)
POSTGRESQL = StaleDialect(
    json_object="json_build_object",
    json_false="false",
    as_text="CAST({} AS text)",
    as_raw="{}",
    collate=' COLLATE "C"',
    null_safe_equal="IS NOT DISTINCT FROM",
    postgres=True,
)


def dialect_of(backend: str) -> StaleDialect:
    return POSTGRESQL if backend == "postgresql" else SQLITE
