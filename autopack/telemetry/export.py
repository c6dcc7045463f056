"""Stream token_estimation_v2_events out as CSV or NDJSON, in constant memory.

Rows are read with a streaming cursor (`stream_results` + `yield_per`: a server-side cursor on
PostgreSQL, SQLite's lazy cursor) and written batch by batch, so memory does not grow with the
table (the original loaded every row). Rows come in event_id order. The format is described in
`autopack.telemetry.exchange` and docs/telemetry-export-import.md.

    from autopack.telemetry.exchange import ExportFormat
    from autopack.telemetry.export import ExportFilters, export_to_file
    result = export_to_file(db, Path("telemetry.csv"), ExportFormat.CSV, ExportFilters())
"""

from __future__ import annotations

import csv
import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
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
from autopack.telemetry.exchange import (
    BOOLEAN_COLUMNS,
    CSV_COLUMNS,
    EVENT_COLUMNS,
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
    events = table_of(TokenEstimationV2Event)
    with translated_errors(db), db.engine.connect() as connection:
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
) -> ExportResult:
    """Write the matching rows to `out` (a text stream) and say how many there were."""
    tables = require_exportable(db, allow_empty_db=allow_empty_db)
    total = count_rows(db, filters, tables) if progress is not None else None
    written = 0
    with translated_errors(db), db.engine.connect() as connection:
        query = _select(connection, fmt, filters, tables)
        result = connection.execution_options(stream_results=True, yield_per=BATCH_ROWS).execute(
            query
        )
        writer = csv.writer(out, lineterminator="\n") if fmt is ExportFormat.CSV else None
        deliverables = _DeliverablesCache()
        if writer is not None:
            writer.writerow(CSV_COLUMNS)
        for partition in result.partitions():
            if writer is not None:
                writer.writerows(partition)
            else:
                out.write(_ndjson_lines(partition, deliverables))
            written += len(partition)
            if progress is not None:
                progress(written, total)
    out.flush()
    return ExportResult(
        format=fmt.value,
        output=None,
        rows=written,
        columns=columns_for(fmt),
        filters=filters.as_dict(),
    )


def export_to_file(
    db: Database,
    path: Path,
    fmt: ExportFormat,
    filters: ExportFilters,
    *,
    allow_empty_db: bool = False,
    progress: ProgressCallback | None = None,
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
                db, handle, fmt, filters, allow_empty_db=allow_empty_db, progress=progress
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
    """The stored category spellings that normalise to one of the requested categories."""
    events = table_of(TokenEstimationV2Event)
    wanted = {normalize_category(value) for value in filters.categories}
    stored = connection.execute(sa.select(events.c.category).distinct()).scalars()
    return sorted(value for value in stored if normalize_category(value) in wanted)


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
    """normalize_category() applied in SQL: a CASE over the spellings this DB actually holds."""
    events = table_of(TokenEstimationV2Event)
    stored = connection.execute(sa.select(events.c.category).distinct()).scalars().all()
    changed = {value: normalize_category(value) for value in stored if value is not None}
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
