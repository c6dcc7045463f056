"""The columns of an exported telemetry record, defined once for every writer and the importer.

One record per `token_estimation_v2_events` row: every column of the table (in the table's
order), then the row's provenance (`autopack_telemetry_provenance`), then derived columns.
`RECORD_COLUMNS` says, for each, where it comes from and what kind of value it holds; the CSV,
NDJSON and Parquet writers (autopack.telemetry.export_writers) and the importer
(autopack.telemetry.import_sources) all read it from here. NDJSON adds `deliverables` (the
parsed list), so it is a superset of the original Autopack's NDJSON export. Timestamps are ISO
8601, naive UTC, e.g. `2025-12-29T19:40:02.000000`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final

import sqlalchemy as sa

from autopack.db.engine import Database
from autopack.db.models import TelemetryProvenance, TokenEstimationV2Event, table_of
from autopack.errors import SchemaError
from autopack.telemetry.choices import ExportFormat as ExportFormat  # also imported from here

EVENTS_TABLE: Final = TokenEstimationV2Event.__tablename__
PROVENANCE_TABLE: Final = TelemetryProvenance.__tablename__


ProgressCallback = Callable[[int, int | None], None]
"""How export and import report progress: (work done, total or None if unknown)."""


class Kind(StrEnum):
    """What a column holds, which decides how each writer writes it and the importer reads it."""

    INTEGER = "integer"
    FLOAT = "float"
    BOOLEAN = "boolean"
    TEXT = "text"
    TIMESTAMP = "timestamp"


class Origin(StrEnum):
    EVENT = "event"
    """A column of token_estimation_v2_events."""
    PROVENANCE = "provenance"
    """A fact of autopack_telemetry_provenance (null for a row without provenance)."""
    DERIVED = "derived"
    """Computed on export from the row (never imported)."""


@dataclass(frozen=True)
class RecordColumn:
    name: str
    kind: Kind
    origin: Origin


def _kind_of(column: sa.Column[object]) -> Kind:
    if isinstance(column.type, sa.Boolean):
        return Kind.BOOLEAN
    if isinstance(column.type, sa.Integer):
        return Kind.INTEGER
    if isinstance(column.type, sa.Float):
        return Kind.FLOAT
    if isinstance(column.type, sa.DateTime):
        return Kind.TIMESTAMP
    return Kind.TEXT


RECORD_COLUMNS: Final[tuple[RecordColumn, ...]] = (
    *(
        RecordColumn(column.name, _kind_of(column), Origin.EVENT)
        for column in table_of(TokenEstimationV2Event).columns
    ),
    RecordColumn("source", Kind.TEXT, Origin.PROVENANCE),
    RecordColumn("coefficient_set", Kind.TEXT, Origin.PROVENANCE),
    RecordColumn("coefficient_set_hash", Kind.TEXT, Origin.PROVENANCE),
    RecordColumn("drain_result_id", Kind.INTEGER, Origin.PROVENANCE),
    RecordColumn("sample_key", Kind.TEXT, Origin.PROVENANCE),
    RecordColumn("source_file", Kind.TEXT, Origin.PROVENANCE),
    RecordColumn("source_line", Kind.INTEGER, Origin.PROVENANCE),
    # The estimation category (`testing` → `tests`), and the deliverable-count bucket.
    RecordColumn("category_normalized", Kind.TEXT, Origin.DERIVED),
    RecordColumn("deliverable_bucket", Kind.TEXT, Origin.DERIVED),
)

DELIVERABLES_KEY: Final = "deliverables"
"""NDJSON only: `deliverables_json` parsed (`[]` when it is not a JSON list)."""

COLUMNS_BY_NAME: Final[dict[str, RecordColumn]] = {c.name: c for c in RECORD_COLUMNS}
RECORD_NAMES: Final[tuple[str, ...]] = tuple(c.name for c in RECORD_COLUMNS)
EVENT_COLUMNS: Final[tuple[str, ...]] = tuple(
    c.name for c in RECORD_COLUMNS if c.origin is Origin.EVENT
)
PROVENANCE_COLUMNS: Final[tuple[str, ...]] = tuple(
    c.name for c in RECORD_COLUMNS if c.origin is Origin.PROVENANCE
)


def names_for(fmt: ExportFormat) -> list[str]:
    """The columns (keys) of one record in this format, in order."""
    if fmt is ExportFormat.NDJSON:
        return [*RECORD_NAMES, DELIVERABLES_KEY]
    return list(RECORD_NAMES)


@dataclass(frozen=True)
class TelemetryTables:
    """What the database holds of the telemetry schema."""

    event_columns: frozenset[str]
    """The columns token_estimation_v2_events has (an old DB may lack later ones)."""
    has_provenance: bool


def inspect_telemetry_tables(db: Database, connection: sa.Connection) -> TelemetryTables:
    """The telemetry schema, or a SchemaError (exit 2) when the DB has no telemetry table."""
    inspector = sa.inspect(connection)
    if not inspector.has_table(EVENTS_TABLE):
        raise SchemaError(
            f"{db.target.display_url} has no telemetry table ({EVENTS_TABLE}).",
            hint="a DB made by the original's Alembic path lacks it: add it with "
            "`autopack db upgrade` (a backup is made first)",
        )
    columns = frozenset(column["name"] for column in inspector.get_columns(EVENTS_TABLE))
    return TelemetryTables(columns, inspector.has_table(PROVENANCE_TABLE))


def parse_timestamp(text: str) -> datetime:
    """ISO 8601 text (with `T` or a blank; an offset is converted) → naive UTC datetime.

    ValueError for text that is not one, or whose UTC time is out of datetime's range (e.g.
    `0001-01-01T00:00:00+05:00`).
    """
    parsed = datetime.fromisoformat(text.strip().replace(",", "."))
    if parsed.tzinfo is not None:
        try:
            parsed = parsed.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:
            raise ValueError(f"{text.strip()!r} is out of range in UTC") from None
    return parsed


def parse_bool(value: object) -> bool | None:
    """A boolean cell or JSON value: true/false (any case), 1/0; empty or null is None."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text == "":
        return None
    if text in ("true", "1", "t", "yes"):
        return True
    if text in ("false", "0", "f", "no"):
        return False
    raise ValueError(f"{value!r} is not a boolean")
