"""`telemetry export`: stream token_estimation_v2_events out as CSV, NDJSON or Parquet.

One path for every format and both backends: the rows are read by Arrow's database drivers
(ADBC: `adbc-driver-sqlite`, `adbc-driver-postgresql`) in one read transaction, so the file is
the table at one instant however long the export runs, and arrive batch by batch as Arrow
record batches, so memory stays bounded; a writer of autopack.telemetry.export_writers turns
each batch into bytes. The query comes from the column spec (autopack.telemetry.columns via
autopack.telemetry.export_query). The format is described in docs/telemetry-export-import.md.

    from autopack.telemetry import export_to
    from autopack.telemetry.columns import ExportFormat
    from autopack.telemetry.export_query import ExportFilters
    result = export_to(db, Path("telemetry.csv"), ExportFormat.CSV, ExportFilters())
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import quote

import sqlalchemy as sa
from pydantic import BaseModel

from autopack.db.engine import SQLITE_BUSY_TIMEOUT_MS, Database, translated_errors
from autopack.db.guards import require_non_empty
from autopack.db.models import Phase, Run, TokenEstimationV2Event, table_of
from autopack.errors import ConfigError
from autopack.output_file import check_output_path, open_output
from autopack.telemetry.columns import (
    RECORD_COLUMNS,
    ExportFormat,
    Kind,
    ProgressCallback,
    TelemetryTables,
    inspect_telemetry_tables,
    names_for,
    parse_timestamp,
)
from autopack.telemetry.export_query import PRIMING_MARK, ExportFilters, build_query
from autopack.telemetry.export_writers import record_schema, writer_for

if TYPE_CHECKING:
    import pyarrow as pa
    from adbc_driver_manager.dbapi import Connection as ArrowConnection

BATCH_ROWS = 8_192
"""Rows per Arrow batch read from SQLite: a few MB at a time, whatever the table's size."""
_SQLITE_BATCH_ROWS = "adbc.sqlite.query.batch_rows"


class ExportResult(BaseModel):
    """What an export wrote."""

    format: str
    output: str | None
    """The file written, or None for stdout (or another stream)."""
    rows: int
    columns: list[str]
    filters: dict[str, Any]
    replaced_invalid_text: int = 0
    """Text cells that held bytes which are not UTF-8, written with U+FFFD in their place."""


def parse_when(text: str, option: str) -> datetime:
    """An ISO date or date-time for --since/--until → naive UTC (an offset is converted)."""
    try:
        return parse_timestamp(text)
    except ValueError:
        raise ConfigError(
            f"{option} {text!r} is not a date or date-time (in range).",
            hint=f"write it as ISO 8601 in UTC, e.g. {option} 2025-12-29 or "
            f"{option} 2025-12-29T18:00",
        ) from None


def require_exportable(db: Database, *, allow_empty_db: bool) -> TelemetryTables:
    """The empty-DB guard (DESIGN §2), then the telemetry tables: refuse with exit 2."""
    runs, phases = table_of(Run), table_of(Phase)
    with translated_errors(db), db.engine.connect() as connection:
        n_runs = connection.execute(sa.select(sa.func.count()).select_from(runs)).scalar_one()
        n_phases = connection.execute(sa.select(sa.func.count()).select_from(phases)).scalar_one()
        require_non_empty(
            int(n_runs),
            int(n_phases),
            display_url=db.target.display_url,
            allow_empty=allow_empty_db,
        )
        return inspect_telemetry_tables(db, connection)


def export_to(
    db: Database,
    output: Path | BinaryIO,
    fmt: ExportFormat,
    filters: ExportFilters | None = None,
    *,
    allow_empty_db: bool = False,
    progress: ProgressCallback | None = None,
) -> ExportResult:
    """Export the matching rows into `output`: a path, or a binary stream (e.g. stdout's).

    A path that is a regular file or new is written atomically (a temporary file beside it,
    renamed at the end: an interrupted export leaves no partial file); a FIFO or a character
    device is written straight into; a symlink is followed to its target; a directory is
    refused (autopack.output_file).
    """
    filters = filters or ExportFilters()
    tables = require_exportable(db, allow_empty_db=allow_empty_db)
    if isinstance(output, Path):
        check_output_path(output, database=db.target.sqlite_path, what="exported")
        with open_output(output) as file:
            result = _export(db, file.stream, fmt, filters, tables, progress)
        return result.model_copy(update={"output": str(file.path)})
    return _export(db, output, fmt, filters, tables, progress)


def _export(
    db: Database,
    out: BinaryIO,
    fmt: ExportFormat,
    filters: ExportFilters,
    tables: TelemetryTables,
    progress: ProgressCallback | None,
) -> ExportResult:
    writer = writer_for(fmt, out)
    written = 0
    replaced = 0
    with translated_errors(db), _snapshot(db) as connection:
        cursor = connection.cursor()
        if db.target.backend == "sqlite":
            cursor.adbc_statement.set_options(**{_SQLITE_BATCH_ROWS: str(BATCH_ROWS)})
        try:
            events = TokenEstimationV2Event.__tablename__
            cursor.execute(f"SELECT DISTINCT category FROM {events}")
            categories = _valid_strings(cursor.fetch_arrow_table().column(0))
            query = build_query(db.target.backend, filters, tables, categories)
            total: int | None = None
            if progress is not None:
                cursor.execute(query.count)
                total = int(cursor.fetchone()[0])  # type: ignore[index]
            cursor.execute(query.rows)
            decode = db.invalid_text.decoder()
            for batch in _batches(cursor.fetch_record_batch(), query.primed):
                fixed, invalid = _valid_text(batch, decode)
                replaced += invalid
                writer.write(fixed)
                written += fixed.num_rows
                if progress is not None:
                    progress(written, total)
        except BaseException:
            with suppress(Exception):
                writer.close()  # now, not when collected, once its stream is closed
            raise
        finally:
            cursor.close()
    writer.close()
    out.flush()
    return ExportResult(
        format=fmt.value,
        output=None,
        rows=written,
        columns=names_for(fmt),
        filters=filters.as_dict(),
        replaced_invalid_text=replaced,
    )


@contextmanager
def _snapshot(db: Database) -> Iterator[ArrowConnection]:
    """An Arrow connection inside one read-only transaction (closed, rolled back, at the end).

    SQLite is opened through a `file:…?mode=ro` URI: given a plain path the driver would create
    a missing file. PostgreSQL runs REPEATABLE READ, so every statement sees one snapshot.
    """
    target = db.target
    if target.backend == "sqlite":
        import adbc_driver_sqlite.dbapi

        if target.sqlite_path is None:
            raise ConfigError(
                "an in-memory database cannot be exported: it lives in one connection.",
                hint="export a database file (sqlite:///path.db) or a PostgreSQL database",
            )
        uri = f"file:{quote(str(target.sqlite_path))}?mode=ro"
        connection = adbc_driver_sqlite.dbapi.connect(uri, autocommit=False)
        try:
            cursor = connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.close()
            yield connection
        finally:
            connection.close()
        return
    import adbc_driver_postgresql.dbapi

    connection = adbc_driver_postgresql.dbapi.connect(_libpq_uri(target.url), autocommit=False)
    try:
        cursor = connection.cursor()
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        cursor.close()
        yield connection
    finally:
        connection.close()


def _libpq_uri(url: str) -> str:
    """The SQLAlchemy URL as libpq takes it (no `+driver`; options such as search_path kept)."""
    parsed = sa.engine.make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def _batches(reader: pa.RecordBatchReader, primed: bool) -> Iterator[pa.RecordBatch]:
    """The record batches, as the record schema: the priming row and its mark dropped, each
    column cast to its kind's type (booleans come from SQLite as 0/1)."""
    schema = record_schema()
    first = primed
    for batch in reader:
        if primed:
            if first:
                marks = batch.column(PRIMING_MARK)
                if batch.num_rows == 0 or marks[0].as_py() != 0:
                    raise RuntimeError("the export query's priming row did not come first")
                batch = batch.slice(1)
                first = False
            batch = batch.drop_columns([PRIMING_MARK])
        if batch.num_rows:
            yield batch.cast(schema, safe=True) if batch.schema != schema else batch


def _valid_text(
    batch: pa.RecordBatch, decode: Callable[[bytes], str]
) -> tuple[pa.RecordBatch, int]:
    """The batch with text that is not UTF-8 decoded by `decode` (the database's own decoder:
    replacement, and a warning naming the cell; the SQLite driver hands bytes through
    unchecked), and how many cells that changed."""
    import pyarrow as pa

    columns: list[pa.Array] = []
    changed = 0
    for spec, column in zip(RECORD_COLUMNS, batch.columns, strict=True):
        if spec.kind in (Kind.TEXT, Kind.TIMESTAMP):
            try:
                column.validate(full=True)
            except pa.ArrowInvalid:
                raw = column.view(pa.binary()).to_pylist()
                texts = [None if v is None else decode(v) for v in raw]
                changed += sum(1 for v in raw if v is not None and not _is_utf8(v))
                column = pa.array(texts, pa.string())
        columns.append(column)
    if not changed:
        return batch, 0
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema), changed


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


__all__ = ["ExportFilters", "ExportResult", "export_to", "parse_when"]


def _valid_strings(column: Any) -> list[str]:
    """The column's values that are valid UTF-8 text. A stored spelling that is not cannot be
    matched by a text literal anyway: it is written as is, with U+FFFD (see _valid_text)."""
    import pyarrow as pa

    if not (pa.types.is_string(column.type) or pa.types.is_binary(column.type)):
        # An empty table gives a column of nulls, typed by the driver's guess (int64).
        return [str(value) for value in column.to_pylist() if value is not None]
    texts: list[str] = []
    for raw in column.cast(pa.binary()).to_pylist():
        if raw is None:
            continue
        try:
            texts.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            continue
    return texts
