"""Planning a `telemetry analyze` scan: guards, table facts, filter conditions, cell codes.

Before any scan query: `read_table_facts` applies the empty-DB guard, checks that the telemetry
table and its columns are there, and reads the cheap facts (row count, event_id range, stored
categories and complexities, columns present); `build_plan` turns the options into SQL
conditions and small integer codes for the packed cell key. The scan itself is in
autopack.telemetry.analysis_scan.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from autopack.db.engine import Database
from autopack.db.guards import require_non_empty
from autopack.db.models import Phase, Run, TokenEstimationV2Event, table_of
from autopack.errors import SchemaError
from autopack.estimator import normalize_category, normalize_complexity
from autopack.telemetry.analysis_options import AnalyzeOptions

EVENTS = table_of(TokenEstimationV2Event)


@dataclass(frozen=True)
class TableFacts:
    """What the scan needs to know of the table before reading it."""

    rows: int
    first_id: int | None
    last_id: int | None
    categories: list[str]
    complexities: list[str]
    columns: frozenset[str]


def read_table_facts(db: Database, connection: sa.Connection, allow_empty_db: bool) -> TableFacts:
    """Guards first (empty DB, telemetry table), then cheap facts: counts, ids, stored values.

    `connection` is the scan's: the facts are of the snapshot the scan reads.
    """
    inspector = sa.inspect(connection)
    tables = set(inspector.get_table_names())
    counts = {
        name: int(
            connection.execute(sa.select(sa.func.count()).select_from(table_of(model))).scalar_one()
        )
        for name, model in (("runs", Run), ("phases", Phase))
        if name in tables
    }
    require_non_empty(
        counts.get("runs", 0),
        counts.get("phases", 0),
        display_url=db.target.display_url,
        allow_empty=allow_empty_db,
    )
    if EVENTS.name not in tables:
        raise SchemaError(
            f"{db.target.display_url} has no telemetry table ({EVENTS.name}).",
            hint="it was made without the telemetry tables (the original's Alembic path); "
            "`autopack db upgrade` adds them",
        )
    columns = frozenset(c["name"] for c in inspector.get_columns(EVENTS.name))
    needed = {
        "event_id", "timestamp", "category", "complexity", "deliverable_count",
        "predicted_output_tokens", "actual_output_tokens", "selected_budget", "success",
        "truncated",
    }  # fmt: skip
    absent = sorted(needed - columns)
    if absent:
        raise SchemaError(
            f"{EVENTS.name} on {db.target.display_url} lacks columns: {', '.join(absent)}.",
            hint="this is not an Autopack telemetry table; check the target",
        )
    rows, first, last = connection.execute(
        sa.select(sa.func.count(), sa.func.min(EVENTS.c.event_id), sa.func.max(EVENTS.c.event_id))
    ).one()
    leading = {index["column_names"][0] for index in inspector.get_indexes(EVENTS.name)}
    categories = _distinct(connection, "category", indexed="category" in leading)
    complexities = _distinct(connection, "complexity", indexed="complexity" in leading)
    return TableFacts(
        rows=int(rows),
        first_id=first,
        last_id=last,
        categories=sorted(c for c in categories if c is not None),
        complexities=sorted(c for c in complexities if c is not None),
        columns=columns,
    )


def _distinct(
    connection: sa.Connection, column: Literal["category", "complexity"], *, indexed: bool
) -> list[str]:
    """The distinct values of a column. With an index, by hopping along it (a loose index
    scan): one seek per value instead of reading every entry, on SQLite and PostgreSQL alike."""
    if not indexed:
        plain = sa.select(EVENTS.c[column]).distinct().order_by(EVENTS.c[column])
        return [str(v) for v in connection.execute(plain).scalars() if v is not None]
    table = EVENTS.name
    query = sa.text(
        f"WITH RECURSIVE seen(value) AS ("
        f" SELECT min({column}) FROM {table}"
        f" UNION ALL SELECT (SELECT min({column}) FROM {table} WHERE {column} > seen.value)"
        f" FROM seen WHERE seen.value IS NOT NULL"
        f") SELECT value FROM seen WHERE value IS NOT NULL"
    )
    return [str(value) for value in connection.execute(query).scalars()]


@dataclass(frozen=True)
class Codes:
    """Raw stored values → small integer codes of their normalised labels (for the cell key)."""

    by_raw: dict[str, int]
    labels: list[str]
    """Index = code; the last label is for values not seen when planning."""

    @classmethod
    def build(
        cls, raw_values: Iterable[str | None], normalise: Callable[[str | None], str]
    ) -> Codes:
        labels: list[str] = []
        by_raw: dict[str, int] = {}
        for raw in raw_values:
            if raw is None:
                continue
            label = normalise(raw) or "(none)"
            if label not in labels:
                labels.append(label)
            by_raw[raw] = labels.index(label)
        labels.append("(other)")
        return cls(by_raw, labels)

    @property
    def size(self) -> int:
        return len(self.labels)

    def expression(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[int]:
        other = self.size - 1
        if not self.by_raw:
            return sa.literal(other, sa.Integer)
        return sa.case(self.by_raw, value=column, else_=other)


@dataclass(frozen=True)
class Plan:
    """How to read the table: the filters as SQL, the cell key's codes, the columns present."""

    conditions: list[sa.ColumnElement[bool]]
    categories: Codes
    complexities: Codes
    multiplier: float
    has_max_tokens: bool
    has_truncated_output: bool
    sqlite: bool
    time_only: bool
    """No filter but --since/--until: the timestamp index alone answers first/last."""


def build_plan(db: Database, facts: TableFacts, options: AnalyzeOptions) -> tuple[Plan, list[str]]:
    """The plan for these options, and warnings: a category no row has, a column missing."""
    events = EVENTS
    sqlite = db.target.backend == "sqlite"
    warnings: list[str] = []
    conditions: list[sa.ColumnElement[bool]] = []
    if options.success_only:
        conditions.append(events.c.success == sa.true())
    if options.run_ids:
        conditions.append(events.c.run_id.in_(sorted(set(options.run_ids))))
    if options.categories:
        wanted = {normalize_category(value) for value in options.categories}
        stored = [raw for raw in facts.categories if normalize_category(raw) in wanted]
        for value in sorted(wanted - {normalize_category(raw) for raw in stored}):
            warnings.append(
                f"no telemetry row has category {value!r} "
                f"(stored: {', '.join(facts.categories) or 'none'})"
            )
        conditions.append(events.c.category.in_(stored))
    if options.complexities:
        wanted = {value.strip().lower() for value in options.complexities}
        stored = [raw for raw in facts.complexities if normalize_complexity(raw) in wanted]
        conditions.append(events.c.complexity.in_(stored))
    if options.since is not None:
        conditions.append(
            _time_condition(events.c.timestamp, options.since, lower=True, sqlite=sqlite)
        )
    if options.until is not None:
        conditions.append(
            _time_condition(events.c.timestamp, options.until, lower=False, sqlite=sqlite)
        )
    has_max_tokens = "actual_max_tokens" in facts.columns
    if not has_max_tokens:
        warnings.append(
            "this database has no actual_max_tokens column (made before BUILD-142): the "
            "max_tokens-sent waste is not available"
        )
    plan = Plan(
        conditions=conditions,
        categories=Codes.build(facts.categories, normalize_category),
        complexities=Codes.build(facts.complexities, normalize_complexity),
        multiplier=options.under_multiplier,
        has_max_tokens=has_max_tokens,
        has_truncated_output="is_truncated_output" in facts.columns,
        sqlite=sqlite,
        time_only=not (options.success_only or options.run_ids or options.categories)
        and not options.complexities,
    )
    return plan, warnings


def _time_condition(
    column: sa.ColumnElement[Any], bound: datetime, *, lower: bool, sqlite: bool
) -> sa.ColumnElement[bool]:
    if sqlite:
        # SQLite stores ISO text with or without microseconds (the original wrote both);
        # a bound without trailing zeros compares right against either form.
        text = bound.isoformat(sep=" ")
        if text.endswith(".000000"):
            text = text[: -len(".000000")]
        stored = sa.type_coerce(column, sa.String)
        return stored >= text if lower else stored < text
    return column >= bound if lower else column < bound
