"""The export's SQL: one SELECT that yields every record column, each of one type.

The query is built from the column spec (autopack.telemetry.columns), so a column is defined
once. Each column comes out of the database as one type whatever was stored (a legacy SQLite
file may hold a REAL in an INTEGER column, a BLOB in a TEXT one), because Arrow's SQLite driver
infers a column's type from the first rows it reads:

- INTEGER: integers; a REAL with a whole value as that integer; anything else is null;
- FLOAT: integers and reals as reals; anything else is null;
- BOOLEAN: 1 / 0 (true / false); anything else is null;
- TEXT: as text (a number as its text, a BLOB as its bytes, decoded later with replacement);
- TIMESTAMP: ISO 8601 text with a `T`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from autopack.db.buckets import deliverable_bucket_sql
from autopack.db.clock import utc_text
from autopack.db.models import TelemetryProvenance, TokenEstimationV2Event, table_of
from autopack.errors import ConfigError
from autopack.estimator import COMPLEXITY_LEVELS, normalize_category
from autopack.telemetry.columns import (
    RECORD_COLUMNS,
    Kind,
    Origin,
    RecordColumn,
    TelemetryTables,
)

PRIMING_VALUES: dict[Kind, Any] = {
    Kind.INTEGER: 0,
    Kind.FLOAT: 0.5,
    Kind.BOOLEAN: 0,
    Kind.TEXT: "",
    Kind.TIMESTAMP: "",
}
"""A first row of these values fixes every column's type for Arrow's SQLite driver (which
would take a column that is null in its first rows for an integer one); it is dropped."""
PRIMING_MARK = "_autopack_priming"
"""The column that tells the priming row (0) from the table's rows (1)."""


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
        for value in (*self.run_ids, *self.categories):
            if "\x00" in value:
                raise ConfigError(
                    f"filter value {value!r} holds a NUL character.",
                    hint="no run id or category holds one; check the value",
                )
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ConfigError(
                f"--since {self.since.isoformat()} is not before --until {self.until.isoformat()}.",
                hint="--since is inclusive and --until exclusive, e.g. "
                "--since 2025-12-29 --until 2025-12-30 selects the 29th",
            )

    def as_dict(self) -> dict[str, Any]:
        return {
            "success_only": self.success_only,
            "exclude_truncated": self.exclude_truncated,
            "run_ids": list(self.run_ids),
            "categories": list(self.categories),
            "complexities": list(self.complexities),
            "since": utc_text(self.since) if self.since is not None else None,
            "until": utc_text(self.until) if self.until is not None else None,
        }


@dataclass(frozen=True)
class ExportQuery:
    """The SQL text of the export (values inlined) and of its row count."""

    rows: str
    count: str
    primed: bool
    """The first row is PRIMING_VALUES, to be dropped, and column PRIMING_MARK (0 in that row
    only) comes first."""


def build_query(
    dialect_name: str,
    filters: ExportFilters,
    tables: TelemetryTables,
    stored_categories: Iterable[object],
) -> ExportQuery:
    """The export and count queries for this backend, from the column spec.

    `stored_categories`: the distinct categories the table holds (read in the export's own
    transaction), for the normalised category and the --category filter.
    """
    events = table_of(TokenEstimationV2Event)
    provenance = table_of(TelemetryProvenance) if tables.has_provenance else None
    categories = sorted({value for value in stored_categories if isinstance(value, str)})
    on_sqlite = dialect_name == "sqlite"
    values = [
        _value(column, events, provenance, tables, categories, on_sqlite).label(column.name)
        for column in RECORD_COLUMNS
    ]
    source: sa.FromClause = events
    if provenance is not None:
        source = events.outerjoin(provenance, provenance.c.event_id == events.c.event_id)
    conditions = _conditions(filters, tables, categories)
    rows = sa.select(*values).select_from(source).where(*conditions).order_by(events.c.event_id)
    count = sa.select(sa.func.count()).select_from(events).where(*conditions)
    dialect: sa.Dialect = (
        sqlite.dialect() if on_sqlite else postgresql.dialect()  # type: ignore[no-untyped-call]
    )
    if on_sqlite:
        priming = sa.select(
            sa.literal(0).label(PRIMING_MARK),
            *(sa.literal(PRIMING_VALUES[c.kind]).label(c.name) for c in RECORD_COLUMNS),
        )
        ordered = rows.add_columns(sa.literal(1).label(PRIMING_MARK)).subquery()
        main = sa.select(ordered.c[PRIMING_MARK], *(ordered.c[c.name] for c in RECORD_COLUMNS))
        # SQLite runs a UNION ALL side after side, the right side streaming in rowid order (no
        # sort of the whole table); the reader checks the priming row came first.
        compound = sa.union_all(priming, main)
        return ExportQuery(_compiled(compound, dialect), _compiled(count, dialect), primed=True)
    return ExportQuery(_compiled(rows, dialect), _compiled(count, dialect), primed=False)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _compiled(statement: sa.ClauseElement, dialect: sa.Dialect) -> str:
    return str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def _value(
    column: RecordColumn,
    events: sa.Table,
    provenance: sa.Table | None,
    tables: TelemetryTables,
    categories: list[str],
    on_sqlite: bool,
) -> sa.ColumnElement[Any]:
    if column.name == "category_normalized":
        return _typed(_normalised_category(events.c.category, categories), Kind.TEXT, on_sqlite)
    if column.name == "deliverable_bucket":
        return deliverable_bucket_sql(events.c.deliverable_count)
    stored: sa.ColumnElement[Any] | None = None
    if column.origin is Origin.EVENT and column.name in tables.event_columns:
        stored = events.c[column.name]
    elif column.origin is Origin.PROVENANCE and provenance is not None:
        stored = provenance.c[column.name]
    if stored is None:
        return sa.null()  # a column this DB lacks
    return _typed(stored, column.kind, on_sqlite)


def _typed(value: sa.ColumnElement[Any], kind: Kind, on_sqlite: bool) -> sa.ColumnElement[Any]:
    """The value as one type (see the module docstring)."""
    if not on_sqlite:
        if kind is Kind.TIMESTAMP:
            return sa.func.to_char(value, 'YYYY-MM-DD"T"HH24:MI:SS.US')
        return value
    # Simple CASEs on typeof(): SQLite evaluates typeof() once per cell, not once per branch.
    storage = sa.func.typeof(value)
    raw = sa.type_coerce(value, sa.Integer)
    if kind is Kind.INTEGER:
        whole = sa.case((raw == sa.cast(raw, sa.Integer), sa.cast(raw, sa.Integer)))
        return sa.case({"integer": raw, "real": whole}, value=storage)
    if kind is Kind.FLOAT:
        real = sa.cast(value, sa.Float)
        return sa.case({"integer": real, "real": real}, value=storage)
    if kind is Kind.BOOLEAN:
        bit = sa.case({1: 1, 0: 0}, value=raw)
        return sa.case({"integer": bit, "real": bit}, value=storage)
    text = sa.cast(sa.type_coerce(value, sa.String), sa.Text)
    if kind is Kind.TIMESTAMP:
        return sa.func.replace(text, " ", "T")
    return text


def _normalised_category(
    column: sa.ColumnElement[Any], categories: list[str]
) -> sa.ColumnElement[Any]:
    """normalize_category() in SQL: a CASE over the spellings this DB holds."""
    # A spelling with a NUL cannot be written into SQL text: it is left as it is.
    whens = [
        (column == raw, normalize_category(raw))
        for raw in categories
        if normalize_category(raw) != raw and "\x00" not in raw
    ]
    if not whens:
        return column
    return sa.case(*whens, else_=column)


def _conditions(
    filters: ExportFilters, tables: TelemetryTables, categories: list[str]
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
        wanted = {normalize_category(value) for value in filters.categories}
        # A stored spelling with a NUL cannot be written into SQL text; no filter names one.
        spellings = [c for c in categories if normalize_category(c) in wanted and "\x00" not in c]
        conditions.append(events.c.category.in_(spellings))
    if filters.complexities:
        wanted_levels = sorted({value.strip().lower() for value in filters.complexities})
        conditions.append(events.c.complexity.in_(wanted_levels))
    if filters.since is not None:
        conditions.append(events.c.timestamp >= filters.since)
    if filters.until is not None:
        conditions.append(events.c.timestamp < filters.until)
    return conditions
