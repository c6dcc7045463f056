"""Stream token_estimation_v2_events out as CSV or NDJSON, in constant memory.

Rows are read with a streaming cursor (`stream_results` + `yield_per`: a server-side cursor on
PostgreSQL, SQLite's lazy cursor) and written batch by batch, so memory does not grow with the
table (the original loaded every row). Rows come in event_id order. The format is described in
`autopack.telemetry.exchange` and docs/telemetry-export-import.md.

A large SQLite export (of a DB in WAL mode) runs on worker processes
(`autopack.telemetry.export_parallel`): the database formats most of each row as text
(`_chunk_query`), which costs far less than making a Python object of every value; the bytes
written are the same as in-process.

    from autopack.telemetry.exchange import ExportFormat
    from autopack.telemetry.export import ExportFilters, export_to_file
    result = export_to_file(db, Path("telemetry.csv"), ExportFormat.CSV, ExportFilters())
"""

from __future__ import annotations

import io
import json
import operator
import os
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from functools import reduce
from pathlib import Path
from typing import Any, TextIO

import pydantic_core
import sqlalchemy as sa
from pydantic import BaseModel

from autopack.db.engine import Database, translated_errors
from autopack.db.guards import require_non_empty
from autopack.db.models import (
    Phase,
    Run,
    TelemetryProvenance,
    TokenEstimationV2Event,
    table_of,
)
from autopack.errors import ConfigError
from autopack.estimator import COMPLEXITY_LEVELS, normalize_category
from autopack.telemetry import export_parallel, export_worker
from autopack.telemetry.exchange import (
    BOOLEAN_COLUMNS,
    CSV_COLUMNS,
    DERIVED_COLUMNS,
    EVENT_COLUMNS,
    FLOAT_COLUMNS,
    INTEGER_COLUMNS,
    NDJSON_KEYS,
    PROVENANCE_COLUMNS,
    TIMESTAMP_COLUMNS,
    ExportFormat,
    ProgressCallback,
    TelemetryTables,
    inspect_telemetry_tables,
    parse_timestamp,
)

BATCH_ROWS = 5000
PARALLEL_MIN_ROWS = 50_000
"""From this many rows on, a SQLite export runs on worker processes (with 2 or more cores):
below it, starting them costs more than it saves."""
MAX_WORKERS = 4
"""Worker processes at most (one per core): each holds a few MB and its own connection."""


@dataclass(frozen=True)
class ExportFilters:
    """Which rows to export; all filters combine with AND, repeated values with OR."""

    success_only: bool = False
    """Only builder-level successes (success = true)."""
    exclude_truncated: bool = False
    """Drop truncated calls (truncated or is_truncated_output): their actual is a lower bound."""
    run_ids: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    """Matched after normalisation: `tests` also selects rows stored as `testing`."""
    complexities: tuple[str, ...] = ()
    since: datetime | None = None
    """Inclusive lower bound on `timestamp` (naive UTC)."""
    until: datetime | None = None
    """Exclusive upper bound on `timestamp` (naive UTC)."""

    def __post_init__(self) -> None:
        for value in self.complexities:
            if value.strip().lower() not in COMPLEXITY_LEVELS:
                raise ConfigError(
                    f"unknown complexity {value!r}.",
                    hint=f"use one of {', '.join(COMPLEXITY_LEVELS)}",
                )
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ConfigError(
                f"--since {self.since.isoformat()} is not before --until {self.until.isoformat()}.",
                hint="--since is inclusive and --until exclusive, e.g. "
                "--since 2025-12-29 --until 2025-12-30 selects the 29th",
            )

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("run_ids", "categories", "complexities"):
            data[key] = list(data[key])
        for key in ("since", "until"):
            data[key] = data[key].isoformat() if data[key] is not None else None
        return data


class ExportResult(BaseModel):
    """What an export wrote."""

    format: str
    output: str | None
    """The file written, or None for stdout."""
    rows: int
    columns: list[str]
    filters: dict[str, Any]


def parse_when(text: str, option: str) -> datetime:
    """An ISO date or date-time for --since/--until → naive UTC (an offset is converted)."""
    try:
        return parse_timestamp(text)
    except ValueError:
        raise ConfigError(
            f"{option} {text!r} is not a date or date-time.",
            hint=f"write it as ISO 8601 in UTC, e.g. {option} 2025-12-29 or "
            f"{option} 2025-12-29T18:00",
        ) from None


def columns_for(fmt: ExportFormat) -> list[str]:
    return list(NDJSON_KEYS if fmt is ExportFormat.NDJSON else CSV_COLUMNS)


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


def count_rows(db: Database, filters: ExportFilters, tables: TelemetryTables) -> int:
    """How many rows an export with these filters writes (for the progress bar)."""
    with translated_errors(db), db.engine.connect() as connection:
        return _count(connection, filters, tables)


def _count(connection: sa.Connection, filters: ExportFilters, tables: TelemetryTables) -> int:
    events = table_of(TokenEstimationV2Event)
    conditions = _conditions(connection, filters, tables)
    query = sa.select(sa.func.count()).select_from(events).where(*conditions)
    return int(connection.execute(query).scalar_one())


def export_telemetry(
    db: Database,
    out: TextIO,
    fmt: ExportFormat,
    filters: ExportFilters,
    *,
    allow_empty_db: bool = False,
    progress: ProgressCallback | None = None,
    workers: int | None = None,
    write_to_descriptor: bool = False,
) -> ExportResult:
    """Write the matching rows to `out` (a text stream) and say how many there were.

    `workers`: None decides (worker processes for a SQLite export of at least
    PARALLEL_MIN_ROWS rows on a machine with 2 or more cores); 0 exports in this process; N
    runs N worker processes on SQLite whatever the size. Either way workers run only on a
    SQLite DB in WAL mode; PostgreSQL exports in this process.

    `write_to_descriptor`: the caller vouches that bytes written to `out`'s file descriptor
    read back as text written through `out` would: no newline translation, no write() of its
    own (e.g. a file opened with newline="", or sys.stdout on POSIX). Workers' output then
    goes there without passing through Python.
    """
    tables = require_exportable(db, allow_empty_db=allow_empty_db)
    total = count_rows(db, filters, tables) if progress is not None else None
    with translated_errors(db), db.engine.connect() as connection:
        if fmt is ExportFormat.CSV:
            export_worker.csv_writer(out).writerow(CSV_COLUMNS)
        plan = _parallel_plan(db, connection, fmt, filters, tables, workers, total)
        if plan is None:
            written = _export_in_process(connection, out, fmt, filters, tables, progress, total)
        else:
            database, query, chunks, count = plan

            def fallback(first: int, end: int) -> tuple[bytes, int]:
                text = io.StringIO()
                rows = _export_in_process(
                    connection, text, fmt, filters, tables, None, None, (first, end)
                )
                return text.getvalue().encode(), rows

            outcome = export_parallel.run_chunks(
                database,
                query,
                chunks,
                out,
                workers=count,
                fallback=fallback,
                busy_timeout_ms=_busy_timeout_ms(connection),
                progress=progress,
                total=total,
                descriptor=write_to_descriptor,
            )
            written = outcome.rows
            if outcome.rest is not None:
                done = written

                def progress_of_rest(rows: int, total: int | None) -> None:
                    assert progress is not None
                    progress(done + rows, total)

                written += _export_in_process(
                    connection,
                    out,
                    fmt,
                    filters,
                    tables,
                    progress_of_rest if progress is not None else None,
                    total,
                    outcome.rest,
                )
    out.flush()
    return ExportResult(
        format=fmt.value,
        output=None,
        rows=written,
        columns=columns_for(fmt),
        filters=filters.as_dict(),
    )


def _export_in_process(
    connection: sa.Connection,
    out: TextIO,
    fmt: ExportFormat,
    filters: ExportFilters,
    tables: TelemetryTables,
    progress: ProgressCallback | None,
    total: int | None,
    id_range: tuple[int, int] | None = None,
) -> int:
    """Write the rows (those with first <= event_id < end for `id_range`); the row count."""
    query = _select(connection, fmt, filters, tables)
    if id_range is not None:
        event_id = table_of(TokenEstimationV2Event).c.event_id
        query = query.where(event_id >= id_range[0], event_id < id_range[1])
    result = connection.execution_options(stream_results=True, yield_per=BATCH_ROWS).execute(query)
    writer = export_worker.csv_writer(out) if fmt is ExportFormat.CSV else None
    deliverables = _DeliverablesCache()
    written = 0
    for partition in result.partitions():
        if writer is not None:
            writer.writerows(partition)
        else:
            out.write(_ndjson_lines(partition, deliverables))
        written += len(partition)
        if progress is not None:
            progress(written, total)
    return written


def export_to_file(
    db: Database,
    path: Path,
    fmt: ExportFormat,
    filters: ExportFilters,
    *,
    allow_empty_db: bool = False,
    progress: ProgressCallback | None = None,
    workers: int | None = None,
) -> ExportResult:
    """Export into `path`, atomically: a failed or interrupted export leaves no partial file."""
    target = check_output_path(db, path)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise _write_error(target, exc) from exc
    try:
        with open(descriptor, "w", encoding="utf-8", newline="") as handle:
            result = export_telemetry(
                db,
                handle,
                fmt,
                filters,
                allow_empty_db=allow_empty_db,
                progress=progress,
                workers=workers,
                write_to_descriptor=True,  # our own file, opened with newline=""
            )
        os.replace(temporary, target)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise _write_error(target, exc) from exc
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return result.model_copy(update={"output": str(target)})


def _write_error(target: Path, exc: OSError) -> ConfigError:
    return ConfigError(
        f"cannot write --output {target}: {exc.strerror or exc}.",
        hint="check the folder is writable and the disk has room; nothing was written",
    )


def check_output_path(db: Database, path: Path) -> Path:
    """The absolute output path, refusing a directory, a missing folder, or the DB itself."""
    target = path.expanduser().absolute()
    if target.is_dir():
        raise ConfigError(
            f"--output {target} is a directory.", hint="name a file, e.g. telemetry.csv"
        )
    if not target.parent.is_dir():
        raise ConfigError(
            f"the folder of --output {target} does not exist.",
            hint=f"create it first (mkdir -p {target.parent})",
        )
    database = db.target.sqlite_path
    if database is not None and target.resolve() in {
        database,
        *(database.with_name(database.name + suffix) for suffix in ("-wal", "-shm", "-journal")),
    }:
        raise ConfigError(
            f"--output {target} is the database being exported.",
            hint="write the export to another file",
        )
    return target


def _conditions(
    connection: sa.Connection, filters: ExportFilters, tables: TelemetryTables
) -> list[sa.ColumnElement[bool]]:
    events = table_of(TokenEstimationV2Event)
    conditions: list[sa.ColumnElement[bool]] = []
    if filters.success_only:
        conditions.append(events.c.success == sa.true())
    if filters.exclude_truncated:
        conditions.append(events.c.truncated == sa.false())
        if "is_truncated_output" in tables.event_columns:
            conditions.append(events.c.is_truncated_output == sa.false())
    if filters.run_ids:
        conditions.append(events.c.run_id.in_(filters.run_ids))
    if filters.categories:
        conditions.append(events.c.category.in_(_stored_categories(connection, filters)))
    if filters.complexities:
        wanted = sorted({value.strip().lower() for value in filters.complexities})
        conditions.append(events.c.complexity.in_(wanted))
    if filters.since is not None:
        conditions.append(events.c.timestamp >= filters.since)
    if filters.until is not None:
        conditions.append(events.c.timestamp < filters.until)
    return conditions


def _stored_categories(connection: sa.Connection, filters: ExportFilters) -> list[str]:
    """The stored category spellings that normalise to one of the requested categories.

    A category that is not text (a BLOB, a number, in a legacy DB) is its own spelling,
    which no requested category (text) is: it is never selected.
    """
    events = table_of(TokenEstimationV2Event)
    wanted = {normalize_category(value) for value in filters.categories}
    stored = connection.execute(sa.select(events.c.category).distinct()).scalars()
    return sorted(
        value for value in stored if isinstance(value, str) and normalize_category(value) in wanted
    )


def _select(
    connection: sa.Connection, fmt: ExportFormat, filters: ExportFilters, tables: TelemetryTables
) -> sa.Select[Any]:
    """The export query; the database formats what it can, so Python only writes rows out."""
    events = table_of(TokenEstimationV2Event)
    columns: list[sa.ColumnElement[Any]] = []
    for name in EVENT_COLUMNS:
        if name not in tables.event_columns:
            columns.append(sa.null().label(name))
        elif name in TIMESTAMP_COLUMNS:
            columns.append(_iso_timestamp(connection, events.c[name]).label(name))
        elif name in BOOLEAN_COLUMNS and fmt is ExportFormat.CSV:
            columns.append(_boolean_text(events.c[name]).label(name))
        else:
            columns.append(events.c[name])
    source: sa.FromClause = events
    if tables.has_provenance:
        provenance = table_of(TelemetryProvenance)
        source = events.outerjoin(provenance, provenance.c.event_id == events.c.event_id)
        columns.extend(provenance.c[name] for name in PROVENANCE_COLUMNS)
    else:
        columns.extend(sa.null().label(name) for name in PROVENANCE_COLUMNS)
    columns.append(_normalised_category(connection, events.c.category).label("category_normalized"))
    columns.append(deliverable_bucket_sql(events.c.deliverable_count).label("deliverable_bucket"))
    return (
        sa.select(*columns)
        .select_from(source)
        .where(*_conditions(connection, filters, tables))
        .order_by(events.c.event_id)
    )


def _parallel_plan(
    db: Database,
    connection: sa.Connection,
    fmt: ExportFormat,
    filters: ExportFilters,
    tables: TelemetryTables,
    workers: int | None,
    total: int | None,
) -> tuple[Path, export_parallel.ChunkQuery, list[tuple[int, int]], int] | None:
    """How to run this export on worker processes, or None to run it in this process."""
    database = db.target.sqlite_path  # None for PostgreSQL and in-memory SQLite
    if workers == 0 or database is None or not export_parallel.can_run_workers():
        return None
    # In a rollback-journal DB a writer waiting to commit keeps every new reader out: the
    # workers (and each chunk that falls back) would start reading later than this process
    # and fail with "database is locked", where one long read gets through. In WAL mode
    # readers never wait for writers. (Reading the mode changes nothing.)
    if connection.exec_driver_sql("PRAGMA journal_mode").scalar() != "wal":
        return None
    if workers is None:
        workers = min(export_parallel.available_cores(), MAX_WORKERS)
        if workers < 2 or not _is_large(connection, filters, tables, total):
            return None
    try:
        query = _chunk_query(connection, fmt, filters, tables)
    except sa.exc.CompileError:
        return None  # a value SQL text cannot hold (e.g. a BLOB in a filter): in-process
    if "\x00" in query.sql:
        return None  # a NUL in a filter or category value: sqlite3 refuses such SQL text
    dbapi = connection.connection.dbapi_connection
    if not isinstance(dbapi, sqlite3.Connection):
        return None
    chunks = export_parallel.plan_chunks(dbapi, export_parallel.CHUNK_ROWS)
    if not chunks:
        return None
    return database, query, chunks, workers


def _is_large(
    connection: sa.Connection, filters: ExportFilters, tables: TelemetryTables, total: int | None
) -> bool:
    if total is not None:
        return total >= PARALLEL_MIN_ROWS
    # The whole table first: counting it is cheap, and a small table settles it.
    if _count(connection, ExportFilters(), tables) < PARALLEL_MIN_ROWS:
        return False
    return filters == ExportFilters() or _count(connection, filters, tables) >= PARALLEL_MIN_ROWS


def _busy_timeout_ms(connection: sa.Connection) -> int:
    """The workers wait for a lock as long as this connection would."""
    value = connection.exec_driver_sql("PRAGMA busy_timeout").scalar()
    return value if isinstance(value, int) else 0


def _chunk_query(
    connection: sa.Connection, fmt: ExportFormat, filters: ExportFilters, tables: TelemetryTables
) -> export_parallel.ChunkQuery:
    """The workers' query: for each row, the database writes everything it can write exactly.

    That is all but floats (SQLite prints 15 digits; Python's shortest exact form may be
    longer) and the parsed deliverables list: those come raw and the worker formats them.
    Cells come out as the in-process export writes them, for values of the column's storage
    class; any other value (a real in an INTEGER column, a BLOB) makes its text piece NULL,
    and the chunk falls back to the in-process export. CSV cells are written unquoted; the
    worker counts commas, quotes and newlines to catch one that needed quoting. SQL text is
    joined with `||`, not printf(), which would cut a text at a NUL character.
    """
    csv_format = fmt is ExportFormat.CSV
    null_text = "" if csv_format else "null"
    events = table_of(TokenEstimationV2Event)
    provenance = table_of(TelemetryProvenance) if tables.has_provenance else None
    cells: list[_Cell] = []
    raw: list[sa.ColumnElement[Any]] = []  # the values CSV cells are formatted from by workers
    for index, name in enumerate(CSV_COLUMNS):
        if csv_format:
            prefix = "," if index else ""
        else:
            prefix = ("," if index else "{") + json.dumps(name) + ":"
        stored: sa.ColumnElement[Any] | None = None
        if name in EVENT_COLUMNS and name in tables.event_columns:
            stored = events.c[name]
        elif name in PROVENANCE_COLUMNS and provenance is not None:
            stored = provenance.c[name]
        column = stored
        if name == "category_normalized":
            column = _normalised_category(connection, events.c.category)
        elif name == "deliverable_bucket":
            column = deliverable_bucket_sql(events.c.deliverable_count)
        elif name in TIMESTAMP_COLUMNS and stored is not None:
            column = _iso_timestamp(connection, stored)
        content = _chunk_cell(name, column, csv_format)
        nullable = (
            name in PROVENANCE_COLUMNS or (name in EVENT_COLUMNS and events.c[name].nullable)
        ) and isinstance(content, sa.ColumnElement)
        boolean = name in BOOLEAN_COLUMNS and stored is not None
        cells.append(
            _Cell(prefix, content, stored if nullable else None, stored if boolean else None)
        )
        if csv_format and isinstance(content, _Slot):
            raw.append(content.value)
    if raw:
        # The worker gets text as bytes, as it gets a BLOB, which csv.writer would write as
        # b'…': a BLOB in a raw value makes the last text piece NULL instead. A BLOB sorts
        # after every other value, so one comparison per value tells (NULL is no BLOB).
        empty_blob: sa.ColumnElement[Any] = sa.literal_column("x''")
        is_blob = sa.or_(*(value >= empty_blob for value in raw))
        cells.append(_Cell("", sa.case((is_blob, sa.null()), else_="")))
    if not csv_format:
        deliverables = _Slot(export_worker.DELIVERABLES, events.c.deliverables_json)
        cells.append(_Cell(',"deliverables":', deliverables))
    cells = _grouped_booleans(cells, csv_format)
    return _assemble(
        _grouped_nulls(cells, null_text, provenance),
        suffix="\n" if csv_format else "}\n",
        where=[
            events.c.event_id >= sa.literal_column("?"),
            events.c.event_id < sa.literal_column("?"),
            *_conditions(connection, filters, tables),
        ],
        source=(
            events
            if provenance is None
            else events.outerjoin(provenance, provenance.c.event_id == events.c.event_id)
        ),
        dialect=connection.dialect,
        csv_cells=len(CSV_COLUMNS) if csv_format else None,
    )


@dataclass(frozen=True)
class _Slot:
    """A result column the worker formats (see export_worker's layout kinds)."""

    kind: str
    value: sa.ColumnElement[Any]
    codes: list[str] | None = None
    """For CODES: the text of each code."""


_Content = str | sa.ColumnElement[Any] | _Slot
"""A cell of the chunk query: literal text, SQL text, or a value the worker formats."""


@dataclass(frozen=True)
class _Cell:
    prefix: str
    """The literal text before the cell: its separator (and its key in NDJSON)."""
    content: _Content
    stored: sa.ColumnElement[Any] | None = None
    """The stored value, for a cell that may be NULL (NULL cells come in runs)."""
    boolean: sa.ColumnElement[Any] | None = None
    """The stored value, for a boolean cell (booleans side by side become one code)."""


def _chunk_cell(name: str, column: sa.ColumnElement[Any] | None, csv_format: bool) -> _Content:
    """What the chunk query holds for one cell (see _chunk_query)."""
    null = "" if csv_format else "null"
    if column is None:
        return null  # a column this DB lacks
    if name in FLOAT_COLUMNS:
        return _Slot(export_worker.CSV_NUMBER if csv_format else export_worker.JSON_VALUE, column)
    if name == "deliverables_json" and csv_format:
        return _Slot(export_worker.CSV_CELL, column)
    if name in DERIVED_COLUMNS or name in TIMESTAMP_COLUMNS:
        # The same SQL as in-process, so the same text whatever the stored value.
        return sa.func.ifnull(column, "") if csv_format else sa.func.json_quote(column)
    if name in BOOLEAN_COLUMNS:
        if csv_format:
            return sa.func.ifnull(_boolean_text(column), "")
        # In-process, Python's bool() of the value: exact here for 0, 1 and NULL.
        return sa.case(
            (column.is_(None), "null"),
            (column == sa.true(), "true"),
            (column == sa.false(), "false"),
        )
    if name in INTEGER_COLUMNS:
        # Not `column IS CAST(column AS INTEGER)`: a REAL -2**63 passes that, and SQLite
        # would print it with 15 digits.
        return sa.case({"integer": column, "null": null}, value=sa.func.typeof(column))
    if csv_format:
        return sa.case((column.is_(sa.cast(column, sa.String)), sa.func.ifnull(column, "")))
    return sa.func.json_quote(column)  # text; NULL is null, a BLOB is an error (fallback)


NULL_RUN = 3
"""Runs of this many nullable cells get a shortcut for when all of them are NULL."""


def _grouped_booleans(cells: list[_Cell], csv_format: bool) -> list[_Cell]:
    """Booleans side by side as one integer code (one base-3 digit each), which the worker
    looks up: SQLite computes a number for far less than it joins text.

    A digit is 1 for 1, 0 for 0, 2 for anything else in CSV (the in-process `True`/`False`
    /empty); in NDJSON 2 is NULL only, and any other value makes the code NULL (fallback).
    """
    words = ("False", "True", "") if csv_format else ("false", "true", "null")

    def digit(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        other: Any = 2 if csv_format else sa.case((column.is_(None), 2))
        return sa.case({1: 1, 0: 0}, value=sa.type_coerce(column, sa.Integer), else_=other)

    def combine(run: list[_Cell]) -> _Cell:
        stored = [cell.boolean for cell in run if cell.boolean is not None]
        code = reduce(
            operator.add, [digit(c) * 3**i if i else digit(c) for i, c in enumerate(stored)]
        )
        texts = [
            "".join(cell.prefix + words[value // 3**i % 3] for i, cell in enumerate(run))
            for value in range(3 ** len(run))
        ]
        return _Cell("", _Slot(export_worker.CODES, code, texts))

    return _runs_combined(
        cells, member=lambda cell: cell.boolean is not None, shortest=2, combine=combine
    )


def _grouped_nulls(cells: list[_Cell], null_text: str, provenance: sa.Table | None) -> list[_Cell]:
    """Runs of nullable cells as one cell: a constant when all of them are NULL.

    They often are (provenance of a row the original wrote, the optional columns), and a
    constant costs SQLite nothing per row while each cell costs a little.
    """

    def combine(run: list[_Cell]) -> _Cell:
        stored = [cell.stored for cell in run if cell.stored is not None]
        provenance_columns = (
            {provenance.c[name] for name in PROVENANCE_COLUMNS}
            if (provenance is not None)
            else set()
        )
        if provenance is not None and set(stored) == provenance_columns:
            # All provenance facts are NULL exactly when the row has no provenance.
            all_null: sa.ColumnElement[bool] = provenance.c.event_id.is_(None)
        else:
            all_null = sa.and_(*(column.is_(None) for column in stored))
        parts: list[str | sa.ColumnElement[Any]] = []
        for cell in run:
            assert isinstance(cell.content, sa.ColumnElement)
            parts.extend((cell.prefix, cell.content))
        constant = "".join(cell.prefix + null_text for cell in run)
        content = sa.case((all_null, sa.literal(constant, sa.String)), else_=_concatenated(parts))
        return _Cell("", content)

    return _runs_combined(
        cells, member=lambda cell: cell.stored is not None, shortest=NULL_RUN, combine=combine
    )


def _runs_combined(
    cells: list[_Cell],
    *,
    member: Callable[[_Cell], bool],
    shortest: int,
    combine: Callable[[list[_Cell]], _Cell],
) -> list[_Cell]:
    """`cells`, with every run of at least `shortest` consecutive members made one cell."""
    grouped: list[_Cell] = []
    run: list[_Cell] = []

    def flush() -> None:
        if len(run) < shortest:
            grouped.extend(run)
        else:
            grouped.append(combine(list(run)))
        run.clear()

    for cell in cells:
        if member(cell):
            run.append(cell)
        else:
            flush()
            grouped.append(cell)
    flush()
    return grouped


def _assemble(
    cells: list[_Cell],
    *,
    suffix: str,
    where: list[sa.ColumnElement[bool]],
    source: sa.FromClause,
    dialect: sa.Dialect,
    csv_cells: int | None,
) -> export_parallel.ChunkQuery:
    """Group the cells into result columns: runs of SQL text joined with `||`, raw values.

    Literal text at either end of a run of SQL text is left to the worker, not the SQL.
    """
    columns: list[sa.ColumnElement[Any]] = []
    layout: list[str] = []
    codes: list[list[str] | None] = []
    texts: list[str] = []
    pending = ""  # literal text since the last result column
    run: list[str | sa.ColumnElement[Any]] = []

    def add(value: sa.ColumnElement[Any], kind: str, texts_of_codes: list[str] | None) -> None:
        nonlocal pending
        texts.append(pending)
        pending = ""
        columns.append(value)
        layout.append(kind)
        codes.append(texts_of_codes)

    def flush() -> None:
        nonlocal pending
        at = [i for i, part in enumerate(run) if not isinstance(part, str)]
        if not at:
            pending += "".join(str(part) for part in run)
        else:
            pending += "".join(str(part) for part in run[: at[0]])
            add(_concatenated(run[at[0] : at[-1] + 1]), export_worker.SQL_TEXT, None)
            pending += "".join(str(part) for part in run[at[-1] + 1 :])
        run.clear()

    for cell in cells:
        run.append(cell.prefix)
        if isinstance(cell.content, _Slot):
            flush()
            add(cell.content.value, cell.content.kind, cell.content.codes)
        else:
            run.append(cell.content)
    run.append(suffix)
    flush()
    texts.append(pending)
    query = (
        sa.select(*columns)
        .select_from(source)
        .where(*where)
        .order_by(table_of(TokenEstimationV2Event).c.event_id)
    )
    return export_parallel.ChunkQuery(
        sql=str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True})),
        layout=layout,
        codes=codes,
        texts=texts,
        csv_specials_per_row=csv_cells,
    )


def _concatenated(parts: Sequence[str | sa.ColumnElement[Any]]) -> sa.ColumnElement[Any]:
    """parts joined with `||` (adjacent literals merged first): NULL if any part is NULL."""
    merged: list[str | sa.ColumnElement[Any]] = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        elif not (isinstance(part, str) and part == ""):
            merged.append(part)
    elements = [
        sa.literal(part, sa.String) if isinstance(part, str) else sa.type_coerce(part, sa.String)
        for part in merged
    ]
    return reduce(operator.add, elements)


def _iso_timestamp(
    connection: sa.Connection, column: sa.ColumnElement[Any]
) -> sa.ColumnElement[str]:
    """`YYYY-MM-DDTHH:MM:SS.ffffff`: SQLite holds that text with a blank; PostgreSQL formats it."""
    if connection.dialect.name == "postgresql":
        return sa.func.to_char(column, 'YYYY-MM-DD"T"HH24:MI:SS.US')
    return sa.func.replace(sa.type_coerce(column, sa.String), " ", "T")


def _boolean_text(column: sa.ColumnElement[Any]) -> sa.ColumnElement[str]:
    return sa.case((column == sa.true(), "True"), (column == sa.false(), "False"), else_=None)


def _normalised_category(
    connection: sa.Connection, column: sa.ColumnElement[Any]
) -> sa.ColumnElement[str]:
    """normalize_category() applied in SQL: a CASE over the spellings this DB actually holds.

    A category that is not text (a BLOB, a number, in a legacy DB) is left as it is.
    """
    events = table_of(TokenEstimationV2Event)
    stored = connection.execute(sa.select(events.c.category).distinct()).scalars().all()
    changed = {value: normalize_category(value) for value in stored if isinstance(value, str)}
    whens = [(column == raw, key) for raw, key in sorted(changed.items()) if key != raw]
    if not whens:
        return sa.type_coerce(column, sa.String)
    return sa.case(*whens, else_=column)


def deliverable_bucket_sql(column: sa.ColumnElement[Any]) -> sa.ColumnElement[str]:
    """deliverable_count_bucket() in SQL (null for a null or negative count)."""
    return sa.case(
        (column.is_(None), None),
        (column < 0, None),
        (column == 0, "0"),
        (column == 1, "1"),
        (column <= 5, "2-5"),
        else_="6+",
    )


def _ndjson_lines(rows: Sequence[sa.Row[Any]], deliverables: _DeliverablesCache) -> str:
    lines: list[str] = []
    for row in rows:
        record = dict(zip(CSV_COLUMNS, row, strict=True))
        record["deliverables"] = deliverables.parse(record["deliverables_json"])
        lines.append(pydantic_core.to_json(record).decode())
        lines.append("\n")
    return "".join(lines)


class _DeliverablesCache:
    """Parsed deliverables lists, remembered while the same texts repeat (retries share them)."""

    def __init__(self, limit: int = 10_000) -> None:
        self._limit = limit
        self._parsed: dict[str, list[Any]] = {}

    def parse(self, text: object) -> list[Any]:
        """The parsed list, or [] when the stored text is not a JSON list (as the original did)."""
        if not isinstance(text, str):
            return []
        cached = self._parsed.get(text)
        if cached is not None:
            return cached
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = []
        if not isinstance(parsed, list):
            parsed = []
        if len(self._parsed) >= self._limit:
            self._parsed.clear()
        self._parsed[text] = parsed
        return parsed
