"""Writers of exported telemetry: Arrow record batches (of `record_schema()`) in, bytes out.

Each writes what the column spec (autopack.telemetry.columns) says:

- CSV (RFC 4180, by pyarrow's CSV writer): a header row, then one row per record; text cells
  are always quoted (`""` is an empty text), a null is an empty unquoted cell, booleans are
  `true`/`false`, floats are the shortest text that reads back as the same float.
- NDJSON: one JSON object per line, keys in column order, then `deliverables`. pyarrow has no
  JSON writer, so each line is assembled column-wise with Arrow's compute functions.
- Parquet: the record schema, timestamps as `timestamp[us]` (naive UTC), for pandas, polars
  or DuckDB.

CSV and NDJSON write timestamps as the `--json` documents do: RFC 3339 with `+00:00`.
"""

from __future__ import annotations

import json
from functools import cache
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from autopack.telemetry.columns import (
    DELIVERABLES_KEY,
    RECORD_COLUMNS,
    ExportFormat,
    Kind,
    RecordColumn,
)

if TYPE_CHECKING:
    import pyarrow as pa


class RecordWriter(Protocol):
    def write(self, batch: pa.RecordBatch) -> None: ...

    def close(self) -> None: ...


@cache
def record_schema() -> pa.Schema:
    """The Arrow schema of a record batch: one field per record column, typed by its kind."""
    import pyarrow as pa

    types = {
        Kind.INTEGER: pa.int64(),
        Kind.FLOAT: pa.float64(),
        Kind.BOOLEAN: pa.bool_(),
        Kind.TEXT: pa.string(),
        Kind.TIMESTAMP: pa.string(),
    }
    return pa.schema([pa.field(column.name, types[column.kind]) for column in RECORD_COLUMNS])


def writer_for(fmt: ExportFormat, out: BinaryIO) -> RecordWriter:
    if fmt is ExportFormat.CSV:
        return CsvWriter(out)
    if fmt is ExportFormat.NDJSON:
        return NdjsonWriter(out)
    return ParquetWriter(out)


class CsvWriter:
    def __init__(self, out: BinaryIO) -> None:
        import pyarrow.csv

        options = pyarrow.csv.WriteOptions(quoting_style="needed")
        self._writer = pyarrow.csv.CSVWriter(out, record_schema(), write_options=options)

    def write(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(_with_utc_offsets(batch))

    def close(self) -> None:
        self._writer.close()


# A timestamp as the query yields it (naive UTC, autopack's storage form with a `T`); the text
# writers add the offset, so an export's timestamps read as the `--json` documents' do
# (autopack.db.clock.utc_text). Text that is no such timestamp (a legacy oddity) is left as is.
_NAIVE_TIMESTAMP = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?$"
UTC_OFFSET = "+00:00"


def utc_timestamps(texts: pa.Array) -> pa.Array:
    """Naive-UTC timestamp texts with `+00:00` appended; nulls and other text unchanged."""
    import pyarrow.compute as pc

    naive = pc.fill_null(pc.match_substring_regex(texts, _NAIVE_TIMESTAMP), False)
    return pc.if_else(naive, pc.binary_join_element_wise(texts, UTC_OFFSET, ""), texts)


def _with_utc_offsets(batch: pa.RecordBatch) -> pa.RecordBatch:
    import pyarrow as pa

    columns = [
        utc_timestamps(batch.column(c.name)) if c.kind is Kind.TIMESTAMP else batch.column(c.name)
        for c in RECORD_COLUMNS
    ]
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema)


class ParquetWriter:
    def __init__(self, out: BinaryIO) -> None:
        import pyarrow as pa
        import pyarrow.parquet

        self._timestamps = [c.name for c in RECORD_COLUMNS if c.kind is Kind.TIMESTAMP]
        base = record_schema()
        self._schema = pa.schema(
            [
                pa.field(f.name, pa.timestamp("us")) if f.name in self._timestamps else f
                for f in base
            ]
        )
        self._writer = pyarrow.parquet.ParquetWriter(out, self._schema)

    def write(self, batch: pa.RecordBatch) -> None:
        import pyarrow as pa

        columns = [
            _timestamps_of(batch.column(name)) if name in self._timestamps else batch.column(name)
            for name in batch.schema.names
        ]
        self._writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=self._schema))

    def close(self) -> None:
        self._writer.close()


def _timestamps_of(texts: pa.Array) -> pa.Array:
    """ISO 8601 text as timestamp[us]; text that is no timestamp (a legacy oddity) is null."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        return pc.cast(texts, pa.timestamp("us"))
    except pa.ArrowInvalid:
        from autopack.telemetry.columns import parse_timestamp

        values: list[Any] = []
        for text in texts.to_pylist():
            try:
                values.append(None if text is None else parse_timestamp(text))
            except ValueError:
                values.append(None)
        return pa.array(values, pa.timestamp("us"))


class NdjsonWriter:
    """One JSON object per line, assembled column by column (no Python object per value)."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._deliverables: dict[str, str] = {}

    def write(self, batch: pa.RecordBatch) -> None:
        import pyarrow.compute as pc

        pieces: list[Any] = []
        for index, column in enumerate(RECORD_COLUMNS):
            key = ("{" if index == 0 else ",") + json.dumps(column.name) + ":"
            _append(pieces, key)
            for piece in _json_values(column, batch.column(column.name)):
                _append(pieces, piece)
        _append(pieces, "," + json.dumps(DELIVERABLES_KEY) + ":")
        pieces.append(self._parsed_deliverables(batch.column("deliverables_json")))
        _append(pieces, "}\n")
        lines = pc.binary_join_element_wise(*pieces, "")
        if len(lines):
            self._out.write(_joined_bytes(lines))

    def _parsed_deliverables(self, texts: pa.Array) -> pa.Array:
        """`deliverables_json` parsed, as JSON text: `[]` when it is not a JSON list. Parsed
        once per distinct text (retries and siblings share them)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        encoded = pc.dictionary_encode(texts)
        distinct = encoded.dictionary.to_pylist()
        rendered = pa.array([self._deliverables_of(text) for text in distinct], pa.string())
        return pc.fill_null(pc.take(rendered, encoded.indices), "[]")

    def _deliverables_of(self, text: str) -> str:
        cached = self._deliverables.get(text)
        if cached is None:
            try:
                value = json.loads(text)
            except (ValueError, RecursionError):
                value = []
            if not isinstance(value, list):
                value = []
            cached = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
            if len(self._deliverables) >= 10_000:
                self._deliverables.clear()
            self._deliverables[text] = cached
        return cached

    def close(self) -> None:
        self._out.flush()


_CONTROL = [chr(code) for code in range(0x20)]
_CONTROL_PATTERN = "[\\x00-\\x1f]"
_ESCAPED_PATTERN = '[\\x00-\\x1f"\\\\]'
"""A character JSON text must escape: a control character, a quote or a backslash."""


def _append(pieces: list[Any], piece: str | pa.Array) -> None:
    """Add a piece of the line; adjacent literal texts become one (fewer inputs to join)."""
    if isinstance(piece, str) and pieces and isinstance(pieces[-1], str):
        pieces[-1] += piece
    else:
        pieces.append(piece)


def _json_values(column: RecordColumn, values: pa.Array) -> list[str | pa.Array]:
    """Each value as JSON text (`null`, a number, `true`/`false`, or a quoted string), as the
    pieces of the line: a column without nulls gets its quotes as literal pieces, which spares
    a pass over it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if column.kind in (Kind.INTEGER, Kind.BOOLEAN):
        return [_or_null(pc.cast(values, pa.string()))]
    if column.kind is Kind.FLOAT:
        finite = pc.is_finite(values)
        text = pc.cast(values, pa.string())
        if not pc.all(finite).as_py():
            text = pc.if_else(finite, text, None)  # JSON has no NaN or infinity
        return [_or_null(text)]
    text = utc_timestamps(values) if column.kind is Kind.TIMESTAMP else values
    # Most columns (timestamps, names, states) never hold a character JSON escapes: one scan
    # of the batch spares them the replacing passes.
    if pc.any(pc.match_substring_regex(text, _ESCAPED_PATTERN)).as_py():
        text = pc.replace_substring(text, "\\", "\\\\")
        text = pc.replace_substring(text, '"', '\\"')
        if pc.any(pc.match_substring_regex(text, _CONTROL_PATTERN)).as_py():
            for char in _CONTROL:
                text = pc.replace_substring(text, char, json.dumps(char)[1:-1])
    if text.null_count == 0:
        return ['"', text, '"']
    return [pc.fill_null(pc.binary_join_element_wise('"', text, '"', ""), "null")]


def _or_null(text: pa.Array) -> pa.Array:
    import pyarrow.compute as pc

    return pc.fill_null(text, "null") if text.null_count else text


def _joined_bytes(lines: pa.Array) -> pa.Buffer:
    """The texts of a string array without nulls, back to back (no copy)."""
    import pyarrow as pa

    _validity, offsets_buffer, data = lines.buffers()
    offsets = pa.Array.from_buffers(
        pa.int32(), len(lines) + 1, [None, offsets_buffer], offset=lines.offset
    )
    start, end = offsets[0].as_py(), offsets[-1].as_py()
    return data.slice(start, end - start)
