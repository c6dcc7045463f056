"""The SQL scan behind `telemetry analyze`: every count, sum, extreme and exact quantile.

`scan_events(db, options)` checks the target and plans the filters
(autopack.telemetry.analysis_plan), reads `token_estimation_v2_events` and returns an
`EventScan`, from which autopack.telemetry.analyze assembles the report.

How it stays fast on millions of rows without building a row object: ONE query per event_id
range, a `GROUP BY` over a packed integer cell key (category code, complexity code, deliverable
count clipped at 6, success, truncated, underestimated), gives every count, sum and extreme.
Exact medians and p90s come from *brackets* (autopack.telemetry.analysis_quantiles): a stride
sample of ~40,000 event ids tells where each quantile roughly lies; the same query counts the
rows below each bracket and returns only the rows inside one (a few per cent, as exact integers
in a JSON aggregate), which are then sorted in Python. A quantile that falls outside its
bracket (very unlikely) is recomputed from the whole column, so the figures are always exact.
Tables of up to `DIRECT_LIMIT` rows skip the sample and read every value. On a file database
every query of the scan runs in ONE read transaction (autopack.db.transaction.engine_snapshot),
so the figures are of one instant even while a drain writes telemetry.
"""

from __future__ import annotations

import json
import math
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from typing import Any, Final, TypeVar

import sqlalchemy as sa

from autopack.db.buckets import deliverable_bucket
from autopack.db.engine import Database
from autopack.db.transaction import engine_snapshot
from autopack.telemetry.analysis_options import AnalyzeOptions
from autopack.telemetry.analysis_plan import EVENTS, Plan, build_plan, read_table_facts
from autopack.telemetry.analysis_quantiles import (
    Bracket,
    place_brackets,
    quantile_of_sorted,
    resolve_quantile,
)
from autopack.telemetry.analysis_report import METRICS, MetricName

DIRECT_LIMIT: Final = 100_000
"""Up to this many table rows, every value is read and no sample is taken."""
SAMPLE_SIZE: Final = 40_000
"""Rows in the stride sample that places the quantile brackets on bigger tables."""
ID_CHUNK: Final = 500
DELIVERABLE_CLIP: Final = 6
"""Deliverable counts are grouped as 0..6 (6 meaning 6 or more) before bucketing."""
UNKNOWN_DELIVERABLES: Final = DELIVERABLE_CLIP + 1
"""The slot of a null or negative count: the `unknown` bucket (autopack.db.buckets)."""
DELIVERABLE_SLOTS: Final = DELIVERABLE_CLIP + 2

_T = TypeVar("_T")


# --------------------------------------------------------------------------------------------
# The rows: the cell key and the metrics, in SQL and, bit for bit, in Python


def _flag(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
    """1 where the condition holds, else 0 (NULL included)."""
    return sa.case((condition, 1), else_=0)


def _truncated_flag(plan: Plan) -> sa.ColumnElement[int]:
    """1 for a truncated row: either flag set (an old row may hold NULL in one of them)."""
    flag = EVENTS.c.truncated == sa.true()
    if plan.has_truncated_output:
        flag = sa.or_(flag, EVENTS.c.is_truncated_output == sa.true())
    return _flag(flag)


def _float(column: sa.ColumnElement[Any]) -> sa.ColumnElement[float]:
    """An integer as an IEEE double (× a float parameter: REAL on SQLite, float8 on PostgreSQL,
    never PostgreSQL's NUMERIC), cheaper for SQLite than a CAST."""
    return column * sa.literal(1.0, sa.Float)


def _base(plan: Plan) -> sa.Subquery:
    """Level 1: the filtered rows' raw values, the cell key without its last two flags, and
    the truncation flag (computed once here; level 2 uses it four times)."""
    events = EVENTS
    clipped = sa.case(
        (events.c.deliverable_count.is_(None), UNKNOWN_DELIVERABLES),
        (events.c.deliverable_count < 0, UNKNOWN_DELIVERABLES),
        (events.c.deliverable_count >= DELIVERABLE_CLIP, DELIVERABLE_CLIP),
        else_=events.c.deliverable_count,
    )
    cell = (
        (
            plan.categories.expression(events.c.category) * plan.complexities.size
            + plan.complexities.expression(events.c.complexity)
        )
        * DELIVERABLE_SLOTS
        + clipped
    ) * 8 + sa.cast(events.c.success, sa.Integer) * 4  # success is NOT NULL
    ceiling: sa.ColumnElement[Any] = (
        events.c.actual_max_tokens if plan.has_max_tokens else sa.null()
    )
    query = sa.select(
        cell.label("cell"),
        _truncated_flag(plan).label("t"),
        events.c.predicted_output_tokens.label("p"),
        events.c.actual_output_tokens.label("a"),
        events.c.selected_budget.label("sel"),
        ceiling.label("mx"),
    ).where(*plan.conditions)
    return _coroutine(plan, query)


def _coroutine(plan: Plan, query: sa.Select[Any]) -> sa.Subquery:
    if plan.sqlite:
        # LIMIT -1 keeps SQLite from flattening the subquery into the query above it, so each
        # expression is computed once per row rather than once per place that uses it.
        query = query.limit(-1)
    return query.subquery()


def _source(plan: Plan) -> sa.Subquery:
    """Level 2: the packed cell key, raw values and the metrics of every filtered row.

    Metrics are NULL on truncated rows and where undefined. The arithmetic is done in IEEE
    doubles in the same order as `_row_metrics`, so a value recomputed in Python is
    bit-for-bit the value the database compared against a bracket.
    """
    base = _base(plan)
    actual, predicted, budget, ceiling = base.c.a, base.c.p, base.c.sel, base.c.mx
    actual_f, predicted_f = _float(actual), _float(predicted)
    clean = base.c.t == 0
    under = _flag(actual_f > predicted_f * sa.literal(plan.multiplier, sa.Float))
    return _coroutine(
        plan,
        sa.select(
            (base.c.cell + base.c.t * 2 + under).label("key"),
            predicted.label("p"),
            actual.label("a"),
            budget.label("sel"),
            ceiling.label("mx"),
            sa.case(
                (
                    sa.and_(clean, actual > 0, predicted > 0),
                    sa.literal(200.0, sa.Float)
                    * sa.func.abs(actual_f - predicted_f)
                    / (actual_f + predicted_f),
                )
            ).label("smape"),
            sa.case((sa.and_(clean, actual > 0, predicted > 0), predicted_f / actual_f)).label(
                "waste_predicted"
            ),
            sa.case((sa.and_(clean, actual > 0, budget > 0), _float(budget) / actual_f)).label(
                "waste_selected_budget"
            ),
            sa.case((sa.and_(clean, actual > 0, ceiling > 0), _float(ceiling) / actual_f)).label(
                "waste_max_tokens"
            ),
        ),
    )


def _pair_values(metric: MetricName, pairs: Iterable[Sequence[int]]) -> list[float]:
    """The metric of each (input, actual) pair, as `_row_metrics` computes it (a hot loop)."""
    if metric == "smape":
        return [200.0 * abs(a - p) / (a + p) for p, a in pairs]
    return [x / a for x, a in pairs]


METRIC_INPUT: Final[dict[MetricName, str]] = {
    "smape": "p",
    "waste_predicted": "p",
    "waste_selected_budget": "sel",
    "waste_max_tokens": "mx",
}
"""Each metric is a function of (this column, actual)."""


def _row_metrics(
    predicted: int, actual: int, budget: int | None, ceiling: int | None
) -> tuple[float | None, float | None, float | None, float | None]:
    """The metrics of one non-truncated row, exactly as `_source` computes them."""
    if actual <= 0:
        return None, None, None, None
    smape = waste = None
    if predicted > 0:
        smape = 200.0 * abs(actual - predicted) / (actual + predicted)
        waste = predicted / actual
    by_budget = budget / actual if budget is not None and budget > 0 else None
    by_ceiling = ceiling / actual if ceiling is not None and ceiling > 0 else None
    return smape, waste, by_budget, by_ceiling


# --------------------------------------------------------------------------------------------
# The pass: one GROUP BY per event_id range gives every figure but the quantiles' neighbours


@dataclass
class Cell:
    """Counts and sums of one cell (a packed key): what strata and coverage need."""

    rows: int = 0
    predicted_sum: int = 0
    actual_sum: int = 0
    smape_n: int = 0
    smape_sum: float = 0.0
    waste_n: int = 0
    waste_sum: float = 0.0

    def add(self, other: Cell) -> None:
        self.rows += other.rows
        self.predicted_sum += other.predicted_sum
        self.actual_sum += other.actual_sum
        self.smape_n += other.smape_n
        self.smape_sum += other.smape_sum
        self.waste_n += other.waste_n
        self.waste_sum += other.waste_sum


@dataclass(frozen=True)
class CellKey:
    category: str
    complexity: str
    deliverables: int
    """Clipped to 0..DELIVERABLE_CLIP, or UNKNOWN_DELIVERABLES for a null or negative count."""
    success: bool
    truncated: bool
    underestimated: bool

    @property
    def bucket(self) -> str:
        if self.deliverables == UNKNOWN_DELIVERABLES:
            return deliverable_bucket(None)
        return deliverable_bucket(self.deliverables)


def _decode(plan: Plan, key: int) -> CellKey:
    flags, rest = key % 8, key // 8
    deliverables, rest = rest % DELIVERABLE_SLOTS, rest // DELIVERABLE_SLOTS
    complexity, category = rest % plan.complexities.size, rest // plan.complexities.size
    return CellKey(
        category=plan.categories.labels[category],
        complexity=plan.complexities.labels[complexity],
        deliverables=deliverables,
        success=bool(flags & 4),
        truncated=bool(flags & 2),
        underestimated=bool(flags & 1),
    )


@dataclass
class _Overall:
    """Figures over all cells: extremes, the two other waste sums, bracket counts and values."""

    smape_min: float | None = None
    smape_max: float | None = None
    first: datetime | None = None
    last: datetime | None = None
    n: dict[str, int] = field(default_factory=dict)
    sums: dict[str, float] = field(default_factory=dict)
    below: list[int] = field(default_factory=list)
    """Per bracket: rows whose value lies below the bracket."""
    inside: list[array[float]] = field(default_factory=list)
    """Per bracket: the values inside it (unsorted)."""

    def add(self, other: _Overall) -> None:
        self.smape_min = _pick(min, self.smape_min, other.smape_min)
        self.smape_max = _pick(max, self.smape_max, other.smape_max)
        self.first = _pick(min, self.first, other.first)
        self.last = _pick(max, self.last, other.last)
        for name, value in other.n.items():
            self.n[name] = self.n.get(name, 0) + value
        for name, total in other.sums.items():
            self.sums[name] = self.sums.get(name, 0.0) + total
        self.below = [a + b for a, b in zip(self.below, other.below, strict=True)]
        for mine, theirs in zip(self.inside, other.inside, strict=True):
            mine.extend(theirs)


def _pick(choose: Callable[[_T, _T], _T], first: _T | None, second: _T | None) -> _T | None:
    if first is None:
        return second
    if second is None:
        return first
    return choose(first, second)


def _bracket_condition(source: sa.Subquery, bracket: Bracket) -> sa.ColumnElement[bool]:
    value = source.c[bracket.metric]
    parts: list[sa.ColumnElement[bool]] = []
    # A comparison with NULL is never true, so a bounded bracket needs no NULL test.
    if bracket.lo is not None:
        parts.append(value >= sa.literal(bracket.lo, sa.Float))
    if bracket.hi is not None:
        parts.append(value <= sa.literal(bracket.hi, sa.Float))
    return sa.and_(*parts) if parts else value.is_not(None)


def _json_rows(plan: Plan, *columns: sa.ColumnElement[Any]) -> sa.FunctionElement[Any]:
    """An aggregate that collects rows as one JSON array of arrays (exact integers, where a
    float would be printed with 15 digits and no longer match the value compared in SQL)."""
    if plan.sqlite:
        return sa.func.json_group_array(sa.func.json_array(*columns))
    return sa.func.json_agg(sa.func.json_build_array(*columns))


def _parse_json_rows(value: object) -> list[list[Any]]:
    if value is None:
        return []
    parsed = json.loads(value) if isinstance(value, str | bytes) else value
    assert isinstance(parsed, list)
    return parsed


_EXTRA_WASTES: Final[tuple[MetricName, ...]] = ("waste_selected_budget", "waste_max_tokens")


def _below_counter(value: sa.ColumnElement[float], lows: Sequence[float]) -> sa.ColumnElement[int]:
    """One integer per row that, summed, packs the count of rows below each of up to two
    ascending bounds into 32 bits apiece (one aggregate instead of one per bound)."""
    assert len(lows) <= 2, "two 32-bit counters fill a 64-bit integer"
    weights = [sum(1 << (32 * j) for j in range(i, len(lows))) for i in range(len(lows))]
    whens = [
        (value < sa.literal(low, sa.Float), weight)
        for low, weight in zip(lows, weights, strict=True)
    ]
    return sa.case(*whens, else_=0)


def _unpack_counts(total: int, size: int) -> list[int]:
    return [(total >> (32 * j)) & 0xFFFFFFFF for j in range(size)]


def _grouped_scan(
    connection: sa.Connection, plan: Plan, brackets: Sequence[Bracket]
) -> tuple[dict[int, Cell], _Overall]:
    """One GROUP BY over the packed cell key: per-cell counts and sums for strata and coverage,
    and per-cell pieces of the overall figures (merged here), including, per bracket, the rows
    below it and the values inside it (sent as exact integers, recomputed in Python)."""
    source = _source(plan)
    c = source.c
    # waste_predicted is defined exactly where smape is, so count(smape) counts both.
    columns: list[sa.ColumnElement[Any]] = [
        c.key,
        sa.func.count(),
        sa.func.sum(c.p),
        sa.func.sum(c.a),
        sa.func.count(c.smape),
        sa.func.sum(c.smape),
        sa.func.sum(c.waste_predicted),
        sa.func.min(c.smape),
        sa.func.max(c.smape),
    ]
    for name in _EXTRA_WASTES:
        columns += [sa.func.count(c[name]), sa.func.sum(c[name])]
    # Per metric: its brackets with a lower bound (ascending), and all of its brackets.
    bounded: dict[MetricName, list[int]] = {}
    grouped: dict[MetricName, list[int]] = {}
    for index, bracket in enumerate(brackets):
        grouped.setdefault(bracket.metric, []).append(index)
        if bracket.lo is not None:
            bounded.setdefault(bracket.metric, []).append(index)
    for metric, indexes in bounded.items():
        indexes.sort(key=lambda i: brackets[i].lo or 0.0)
        lows = [brackets[i].lo or 0.0 for i in indexes]
        columns.append(sa.func.sum(_below_counter(c[metric], lows)))
    for metric, indexes in grouped.items():
        inside = sa.or_(*(_bracket_condition(source, brackets[i]) for i in indexes))
        columns.append(_json_rows(plan, c[METRIC_INPUT[metric]], c.a).filter(inside))
    cells: dict[int, Cell] = {}
    overall = _Overall(below=[0] * len(brackets), inside=[array("d") for _ in brackets])
    for row in connection.execute(sa.select(*columns).group_by(c.key)):
        fields = iter(row)
        key, rows, p_sum, a_sum, n, s_sum, w_sum, s_min, s_max = (next(fields) for _ in range(9))
        cells[int(key)] = Cell(
            rows=int(rows),
            predicted_sum=int(p_sum or 0),
            actual_sum=int(a_sum or 0),
            smape_n=int(n),
            smape_sum=float(s_sum or 0.0),
            waste_n=int(n),
            waste_sum=float(w_sum or 0.0),
        )
        in_cell = _Overall(smape_min=s_min, smape_max=s_max, below=[0] * len(brackets))
        for name in _EXTRA_WASTES:
            in_cell.n[name] = int(next(fields))
            in_cell.sums[name] = float(next(fields) or 0.0)
        for indexes in bounded.values():
            counts = _unpack_counts(int(next(fields) or 0), len(indexes))
            for index, count in zip(indexes, counts, strict=True):
                in_cell.below[index] = count
        in_cell.inside = [array("d") for _ in brackets]
        overall.add(in_cell)
        for metric, indexes in grouped.items():
            values = _pair_values(metric, _parse_json_rows(next(fields)))
            for index in indexes:
                low, high = brackets[index].bounds
                overall.inside[index].extend([v for v in values if low <= v <= high])
    if not plan.time_only:
        # Apart, without the per-row expressions: carrying the timestamp text through the
        # GROUP BY's sorter would cost more than this plain scan.
        times = sa.select(sa.func.min(EVENTS.c.timestamp), sa.func.max(EVENTS.c.timestamp)).where(
            *plan.conditions
        )
        overall.first, overall.last = connection.execute(times).one()
    else:
        overall.first, overall.last = _time_range(connection, plan)
    return cells, overall


def _time_range(connection: sa.Connection, plan: Plan) -> tuple[datetime | None, datetime | None]:
    """First and last timestamp when only time bounds filter: one index seek each (a query
    asking for both at once would read the whole index)."""
    first = sa.select(sa.func.min(EVENTS.c.timestamp)).where(*plan.conditions)
    last = sa.select(sa.func.max(EVENTS.c.timestamp)).where(*plan.conditions)
    return connection.execute(first).scalar(), connection.execute(last).scalar()


# --------------------------------------------------------------------------------------------
# The sample that places the brackets, and the exact fallback when one misses


def _sample_ids(first_id: int, last_id: int) -> list[int]:
    """About SAMPLE_SIZE evenly spaced event ids: a deterministic stride sample."""
    step = max(1, (last_id - first_id + 1) // SAMPLE_SIZE)
    return list(range(first_id, last_id + 1, step))


def _sample(
    connection: sa.Connection, plan: Plan, ids: Sequence[int]
) -> dict[MetricName, list[float]]:
    """Metric values of the rows with these event ids that pass the filters (unsorted)."""
    clean = _truncated_flag(plan) == 0
    ceiling = EVENTS.c.actual_max_tokens if plan.has_max_tokens else sa.null()
    values: dict[MetricName, list[float]] = {name: [] for name in METRICS}
    for start in range(0, len(ids), ID_CHUNK):
        query = sa.select(
            EVENTS.c.predicted_output_tokens,
            EVENTS.c.actual_output_tokens,
            EVENTS.c.selected_budget,
            ceiling,
        ).where(EVENTS.c.event_id.in_(ids[start : start + ID_CHUNK]), clean, *plan.conditions)
        for row in connection.execute(query):
            for name, value in zip(METRICS, _row_metrics(*row), strict=True):
                if value is not None:
                    values[name].append(value)
    return values


def _all_values(connection: sa.Connection, plan: Plan, metric: MetricName) -> list[float]:
    """Every value of one metric, sorted (the exact fallback when a bracket missed)."""
    source = _source(plan)
    query = sa.select(source.c.p, source.c.a, source.c.sel, source.c.mx).where(
        source.c[metric].is_not(None)
    )
    index = METRICS.index(metric)
    collected: array[float] = array("d")
    result = connection.execution_options(stream_results=True, yield_per=10_000).execute(query)
    for row in result:
        value = _row_metrics(*row)[index]
        if value is not None:
            collected.append(value)
    return sorted(collected)


# --------------------------------------------------------------------------------------------
# The scan


@dataclass(frozen=True)
class EventScan:
    """What the scan read: per-cell counts and sums, and the overall figures, all exact."""

    table_rows: int
    """Rows in token_estimation_v2_events before any filter."""
    cells: list[tuple[CellKey, Cell]]
    """One entry per non-empty cell of the filtered rows."""
    counts: dict[MetricName, int]
    """Per metric, the rows where it is defined."""
    sums: dict[MetricName, float]
    quantiles: dict[tuple[str, Fraction], float | None]
    """(metric, quantile) → value, for every quantile in QUANTILES."""
    smape_min: float | None
    smape_max: float | None
    first_timestamp: datetime | None
    last_timestamp: datetime | None
    warnings: list[str]
    """What planning found worth saying (an unknown category, a column missing)."""


def scan_events(db: Database, options: AnalyzeOptions) -> EventScan:
    """Guard the target, then read every figure of the filtered telemetry rows, all from one
    read transaction.

    Raises GuardError for an empty DB (0 runs, 0 phases) unless `options.allow_empty_db`, and
    SchemaError when the DB has no telemetry table or lacks one of its columns.
    """
    with engine_snapshot(db) as connection:
        facts = read_table_facts(db, connection, options.allow_empty_db)
        plan, warnings = build_plan(db, facts, options)
        sampled: dict[MetricName, list[float]] | None = None
        if facts.rows > DIRECT_LIMIT and facts.first_id is not None and facts.last_id is not None:
            sampled = _sample(connection, plan, _sample_ids(facts.first_id, facts.last_id))
            for values in sampled.values():
                values.sort()
        brackets = place_brackets(sampled)
        cells, overall = _grouped_scan(connection, plan, brackets)
        decoded = [(_decode(plan, key), cell) for key, cell in cells.items()]
        counts: dict[MetricName, int] = {
            "smape": sum(cell.smape_n for _, cell in decoded),
            "waste_predicted": sum(cell.waste_n for _, cell in decoded),
            **{name: overall.n.get(name, 0) for name in _EXTRA_WASTES},
        }
        sums: dict[MetricName, float] = {
            "smape": math.fsum(c.smape_sum for _, c in decoded),
            "waste_predicted": math.fsum(c.waste_sum for _, c in decoded),
            **{name: overall.sums.get(name, 0.0) for name in _EXTRA_WASTES},
        }
        quantiles = _quantiles(connection, plan, brackets, counts, overall.below, overall.inside)
    return EventScan(
        table_rows=facts.rows,
        cells=decoded,
        counts=counts,
        sums=sums,
        quantiles=quantiles,
        smape_min=overall.smape_min,
        smape_max=overall.smape_max,
        first_timestamp=overall.first,
        last_timestamp=overall.last,
        warnings=warnings,
    )


def _quantiles(
    connection: sa.Connection,
    plan: Plan,
    brackets: Sequence[Bracket],
    counts: dict[MetricName, int],
    below: Sequence[int],
    inside: Sequence[array[float]],
) -> dict[tuple[str, Fraction], float | None]:
    found: dict[tuple[str, Fraction], float | None] = {}
    missed: dict[MetricName, list[Fraction]] = {}
    for bracket, n_below, values in zip(brackets, below, inside, strict=True):
        ok, value = resolve_quantile(
            counts[bracket.metric], bracket.quantile, n_below, sorted(values)
        )
        if ok:
            found[(bracket.metric, bracket.quantile)] = value
        else:
            missed.setdefault(bracket.metric, []).append(bracket.quantile)
    for metric, wanted in missed.items():
        everything = _all_values(connection, plan, metric)
        for quantile in wanted:
            found[(metric, quantile)] = quantile_of_sorted(everything, quantile)
    return found
