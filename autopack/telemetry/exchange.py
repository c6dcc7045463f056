"""The telemetry exchange format shared by `telemetry export` and `telemetry import`.

One record per `token_estimation_v2_events` row: every column of the table (in the table's
order), then the row's provenance (`autopack_telemetry_provenance`), then derived columns. The
NDJSON form adds `deliverables` (the parsed list), so it is a superset of the original
Autopack's NDJSON export. Timestamps are ISO 8601, naive UTC, e.g. `2025-12-29T19:40:02.000000`.
In CSV an empty cell is null and booleans are `True`/`False`.
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

EVENTS_TABLE: Final = TokenEstimationV2Event.__tablename__
PROVENANCE_TABLE: Final = TelemetryProvenance.__tablename__


ProgressCallback = Callable[[int, int | None], None]
"""How export and import report progress: (work done, total or None if unknown)."""


class ExportFormat(StrEnum):
    CSV = "csv"
    NDJSON = "ndjson"


EVENT_COLUMNS: Final[tuple[str, ...]] = tuple(
    column.name for column in table_of(TokenEstimationV2Event).columns
)
"""Every column of token_estimation_v2_events, in the table's order."""

PROVENANCE_COLUMNS: Final[tuple[str, ...]] = (
    "source",
    "coefficient_set",
    "coefficient_set_hash",
    "drain_result_id",
    "sample_key",
    "source_file",
    "source_line",
)
"""The row's autopack_telemetry_provenance facts (all null for a row without provenance)."""

DERIVED_COLUMNS: Final[tuple[str, ...]] = ("category_normalized", "deliverable_bucket")
"""Computed on export: the estimation category (`testing` → `tests`) and `0`/`1`/`2-5`/`6+`."""

CSV_COLUMNS: Final[tuple[str, ...]] = EVENT_COLUMNS + PROVENANCE_COLUMNS + DERIVED_COLUMNS
NDJSON_KEYS: Final[tuple[str, ...]] = (*CSV_COLUMNS, "deliverables")

TIMESTAMP_COLUMNS: Final[tuple[str, ...]] = ("timestamp", "created_at")
BOOLEAN_COLUMNS: Final[tuple[str, ...]] = tuple(
    column.name
    for column in table_of(TokenEstimationV2Event).columns
    if isinstance(column.type, sa.Boolean)
)
INTEGER_COLUMNS: Final[tuple[str, ...]] = (
    *(
        column.name
        for column in table_of(TokenEstimationV2Event).columns
        if isinstance(column.type, sa.Integer)
    ),
    "drain_result_id",
    "source_line",
)
FLOAT_COLUMNS: Final[tuple[str, ...]] = ("smape_percent", "waste_ratio")


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

    Raises ValueError for anything else, including a time that leaves years 1-9999 in UTC.
    """
    parsed = datetime.fromisoformat(text.strip().replace(",", "."))
    if parsed.tzinfo is not None:
        try:
            parsed = parsed.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00 is before year 1 in UTC
            raise ValueError(f"{text!r} is outside the years 1-9999 in UTC") from None
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
