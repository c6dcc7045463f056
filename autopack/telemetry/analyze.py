"""Analyse token-estimation telemetry from the database: risk, cost, accuracy and coverage.

`analyze_telemetry(db, options)` reads `token_estimation_v2_events` (never log files, as the
original's V3 analyzer did) and returns an `AnalysisReport`:

- Tier 1 (risk, the tuning gates): underestimation rate (actual > predicted × multiplier),
  truncation rate and success rate over all analysed rows, judged against the runbook's targets
  (underestimation ≤ 5 %, truncation ≤ 2 %);
- Tier 2 (cost): the three waste ratios (predicted, selected budget and max_tokens sent, each
  over actual), with median, p90 and mean, over non-truncated rows;
- SMAPE mean, median, min and max over non-truncated rows; truncated rows apart, as lower bounds;
- the same rates stratified by normalised category, complexity and deliverable-count bucket;
- coverage of clean samples against the seeding goal (autopack.telemetry.coverage).

How it stays fast on millions of rows without building a row object: ONE query per event_id
range, a `GROUP BY` over a packed integer cell key (category code, complexity code, deliverable
count clipped at 6, success, truncated, underestimated), gives every count, sum and extreme.
Exact medians and p90s come from *brackets*: a stride sample of ~40,000 event ids tells where
each quantile roughly lies; the same query counts the rows below each bracket and returns only
the rows inside one (a few per cent, as exact integers in a JSON aggregate), which are then
sorted in Python. A quantile that falls outside its bracket (very unlikely) is recomputed from
the whole column, so the figures are always exact. Tables of up to `DIRECT_LIMIT` rows skip the
sample and read every value. On a file database the event_id ranges are scanned by parallel
connections, one per CPU (SQLite releases the GIL while it works).
"""

from __future__ import annotations

import json
import math
import os
from array import array
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from functools import partial
from typing import Any, Final, Literal, TypeVar

import sqlalchemy as sa
from pydantic import BaseModel

from autopack.db.engine import Database, translated_errors
from autopack.db.guards import require_non_empty
from autopack.db.models import Phase, Run, TokenEstimationV2Event, table_of, utc_now
from autopack.errors import ConfigError, SchemaError
from autopack.estimator import (
    COMPLEXITY_LEVELS,
    deliverable_count_bucket,
    normalize_category,
    normalize_complexity,
)
from autopack.telemetry.coverage import (
    DEFAULT_MIN_TOTAL,
    REQUIRED_BUCKETS,
    REQUIRED_CATEGORIES,
    REQUIRED_COMPLEXITIES,
    CoverageReport,
    assess_coverage,
)

UNDERESTIMATION_TARGET: Final = 0.05
"""The runbook's gate: at most 5 % of calls may need more than predicted × multiplier."""
TRUNCATION_TARGET: Final = 0.02
"""The runbook's gate: at most 2 % of calls may hit max_tokens."""
WASTE_P90_GUIDE: Final = 3.0
"""The original analyzer's secondary (informational) target: p90 of predicted/actual < 3×."""

MEDIAN: Final = Fraction(1, 2)
P90: Final = Fraction(9, 10)

DIRECT_LIMIT: Final = 100_000
"""Up to this many table rows, every value is read and no sample is taken."""
SAMPLE_SIZE: Final = 40_000
"""Rows in the stride sample that places the quantile brackets on bigger tables."""
PARALLEL_MIN_ROWS: Final = 100_000
"""From this many table rows on, a file database is scanned by parallel connections."""
MAX_WORKERS: Final = 4
BRACKET_SIGMAS: Final = 4.0
"""Half-width of a bracket in standard errors of the sample quantile's rank."""
MIN_BRACKET_SAMPLE: Final = 200
"""A metric with fewer sampled values gets no bracket: all of its values are read."""
ID_CHUNK: Final = 500
DELIVERABLE_CLIP: Final = 6
"""Deliverable counts are grouped as 0..6 (6 meaning 6 or more) before bucketing."""

ALL_ROWS: Final = "all analysed rows"
NON_TRUNCATED: Final = "non-truncated analysed rows"
TRUNCATED_ROWS: Final = "truncated analysed rows (actual is a lower bound)"

DEFINITIONS: Final[dict[str, str]] = {
    "median": "true median: the middle value, or the mean of the two middle values when n is even",
    "p90": (
        "the 'exclusive' quantile of Python's statistics.quantiles, as the original analyzer "
        "had it: with the n values sorted as x1..xn and h = 0.9·(n+1) clamped to [1, n], "
        "p90 = x⌊h⌋ + (h − ⌊h⌋)·(x⌊h⌋+1 − x⌊h⌋); with fewer than 10 values it is the maximum"
    ),
    "smape": (
        "200·|actual − predicted| / (actual + predicted), in %, for non-truncated rows with "
        "actual > 0 and predicted > 0"
    ),
    "underestimated": "actual > predicted × under_multiplier",
    "truncated": (
        "truncated or is_truncated_output: the call hit max_tokens, so its actual is only a lower "
        "bound; such rows are left out of SMAPE and waste and reported apart"
    ),
    "success": (
        "builder-level success: the reply parsed into a usable change set — not the phase's "
        "final state"
    ),
    "categories": (
        "categories normalised with autopack.estimator.normalize_category (tests = testing, "
        "docs = documentation, implementation = IMPLEMENT_FEATURE); complexities with "
        "normalize_complexity; deliverable buckets 0, 1, 2-5, 6+"
    ),
}

MetricName = Literal["smape", "waste_predicted", "waste_selected_budget", "waste_max_tokens"]
METRICS: Final[tuple[MetricName, ...]] = (
    "smape",
    "waste_predicted",
    "waste_selected_budget",
    "waste_max_tokens",
)
WASTE_DEFINITIONS: Final[dict[MetricName, str]] = {
    "waste_predicted": "predicted / actual",
    "waste_selected_budget": "selected_budget / actual",
    "waste_max_tokens": "max_tokens sent (actual_max_tokens) / actual",
}
WASTE_POPULATIONS: Final[dict[MetricName, str]] = {
    "waste_predicted": f"{NON_TRUNCATED} with actual > 0 and predicted > 0",
    "waste_selected_budget": f"{NON_TRUNCATED} with actual > 0 and a known selected_budget (> 0)",
    "waste_max_tokens": f"{NON_TRUNCATED} with actual > 0 and a recorded actual_max_tokens",
}
QUANTILES: Final[dict[MetricName, tuple[Fraction, ...]]] = {
    "smape": (MEDIAN,),
    "waste_predicted": (MEDIAN, P90),
    "waste_selected_budget": (MEDIAN, P90),
    "waste_max_tokens": (MEDIAN, P90),
}

_T = TypeVar("_T")


# --------------------------------------------------------------------------------------------
# Options


def parse_time_bound(value: str, option: str) -> datetime:
    """An ISO 8601 date or date-time as naive UTC (a bare date is its midnight; `Z` allowed)."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ConfigError(
            f"{option} {value!r} is not an ISO 8601 date or date-time.",
            hint=f"e.g. {option} 2025-12-29 or {option} 2025-12-29T14:00:00Z (naive = UTC)",
        ) from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


@dataclass(frozen=True)
class AnalyzeOptions:
    """Which rows to analyse and how; filters combine with AND, repeated values with OR."""

    success_only: bool = False
    """Only builder-level successes (success = true)."""
    run_ids: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    """Matched after normalisation: `tests` also selects rows stored as `testing`."""
    complexities: tuple[str, ...] = ()
    """low, medium, high or maintenance; matched against normalised stored values."""
    since: datetime | None = None
    """Inclusive lower bound on `timestamp` (naive UTC)."""
    until: datetime | None = None
    """Exclusive upper bound on `timestamp` (naive UTC)."""
    under_multiplier: float = 1.0
    stratify: bool = False
    coverage_goal: int = DEFAULT_MIN_TOTAL
    allow_empty_db: bool = False

    def __post_init__(self) -> None:
        if not math.isfinite(self.under_multiplier) or self.under_multiplier <= 0:
            raise ConfigError(
                f"--under-multiplier {self.under_multiplier} must be a positive number.",
                hint="e.g. --under-multiplier 1.0 (actual > predicted) or 1.2 (20 % tolerance)",
            )
        if self.coverage_goal < 1:
            raise ConfigError(
                f"--coverage-goal {self.coverage_goal} must be at least 1.",
                hint=f"the runbook's goal is {DEFAULT_MIN_TOTAL} clean samples",
            )
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


# --------------------------------------------------------------------------------------------
# The report


class Filters(BaseModel):
    success_only: bool
    run_ids: list[str]
    categories: list[str]
    """As given; matched after normalisation."""
    complexities: list[str]
    since: datetime | None
    until: datetime | None


class TargetCheck(BaseModel):
    """One Tier-1 rate: count of rows out of rows, against its target (a maximum), if any."""

    count: int
    rows: int
    rate: float | None
    target: float | None
    met: bool | None
    """None when there is no target or no row."""


class Tier1(BaseModel):
    population: str
    rows: int
    under_multiplier: float
    underestimation: TargetCheck
    truncation: TargetCheck
    success: TargetCheck


class WasteStats(BaseModel):
    metric: str
    definition: str
    population: str
    n: int
    mean: float | None
    median: float | None
    p90: float | None
    p90_guide: float | None = None
    """An informational (not gating) ceiling for p90: 3× for predicted / actual."""


class SmapeStats(BaseModel):
    population: str
    n: int
    mean: float | None
    median: float | None
    min: float | None
    max: float | None


class TokenMeans(BaseModel):
    population: str
    rows: int
    predicted_mean: float | None
    actual_mean: float | None
    """For truncated rows, a lower bound."""


class TruncatedStats(TokenMeans):
    underestimated: int
    underestimated_rate: float | None


class Stratum(BaseModel):
    value: str
    rows: int
    success: int
    truncated: int
    underestimated: int
    success_rate: float
    truncation_rate: float
    underestimation_rate: float
    smape_n: int
    smape_mean: float | None
    """Over the stratum's non-truncated rows."""
    waste_mean: float | None
    """predicted / actual, over the stratum's non-truncated rows."""


class Strata(BaseModel):
    population: str
    note: str
    by_category: list[Stratum]
    by_complexity: list[Stratum]
    by_deliverable_bucket: list[Stratum]


VerdictStatus = Literal["within_targets", "tuning_needed", "no_samples"]


class Verdict(BaseModel):
    status: VerdictStatus
    summary: str
    reasons: list[str]
    actions: list[str]


class AnalysisReport(BaseModel):
    generated_at: datetime
    filters: Filters
    under_multiplier: float
    table_rows: int
    """Rows in token_estimation_v2_events before any filter."""
    rows: int
    """Rows analysed (after the filters)."""
    first_timestamp: datetime | None
    last_timestamp: datetime | None
    tier1: Tier1
    waste: list[WasteStats]
    smape: SmapeStats
    non_truncated: TokenMeans
    truncated: TruncatedStats
    strata: Strata | None
    coverage: CoverageReport
    verdict: Verdict
    next_steps: list[str]
    definitions: dict[str, str]
    warnings: list[str]

    @property
    def targets_met(self) -> bool:
        return self.verdict.status == "within_targets"


# --------------------------------------------------------------------------------------------
# Planning: filters, category codes, columns present


@dataclass(frozen=True)
class _Codes:
    """Raw stored values → small integer codes of their normalised labels (for the cell key)."""

    by_raw: dict[str, int]
    labels: list[str]
    """Index = code; the last label is for values not seen when planning."""

    @classmethod
    def build(
        cls, raw_values: Iterable[str | None], normalise: Callable[[str | None], str]
    ) -> _Codes:
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
class _Plan:
    conditions: list[sa.ColumnElement[bool]]
    categories: _Codes
    complexities: _Codes
    multiplier: float
    has_max_tokens: bool
    has_truncated_output: bool
    sqlite: bool
    time_only: bool
    """No filter but --since/--until: the timestamp index alone answers first/last."""


@dataclass(frozen=True)
class _Bracket:
    """A value range [lo, hi] (None = unbounded) expected to hold one quantile's ranks."""

    metric: MetricName
    quantile: Fraction
    lo: float | None
    hi: float | None

    @property
    def bounds(self) -> tuple[float, float]:
        return (
            -math.inf if self.lo is None else self.lo,
            math.inf if self.hi is None else self.hi,
        )


_EVENTS = table_of(TokenEstimationV2Event)


def _flag(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
    """1 where the condition holds, else 0 (NULL included)."""
    return sa.case((condition, 1), else_=0)


def _truncated_flag(plan: _Plan) -> sa.ColumnElement[int]:
    """1 for a truncated row: either flag set (an old row may hold NULL in one of them)."""
    flag = _EVENTS.c.truncated == sa.true()
    if plan.has_truncated_output:
        flag = sa.or_(flag, _EVENTS.c.is_truncated_output == sa.true())
    return _flag(flag)


def _float(column: sa.ColumnElement[Any]) -> sa.ColumnElement[float]:
    """An integer as an IEEE double (× a float parameter: REAL on SQLite, float8 on PostgreSQL,
    never PostgreSQL's NUMERIC), cheaper for SQLite than a CAST."""
    return column * sa.literal(1.0, sa.Float)


def _base(plan: _Plan, id_range: tuple[int, int] | None) -> sa.Subquery:
    """Level 1: the filtered rows' raw values, the cell key without its last two flags, and
    the truncation flag (computed once here; level 2 uses it four times)."""
    events = _EVENTS
    clipped = sa.case(
        (events.c.deliverable_count <= 0, 0),
        (events.c.deliverable_count >= DELIVERABLE_CLIP, DELIVERABLE_CLIP),
        else_=events.c.deliverable_count,
    )
    cell = (
        (
            plan.categories.expression(events.c.category) * plan.complexities.size
            + plan.complexities.expression(events.c.complexity)
        )
        * (DELIVERABLE_CLIP + 1)
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
    if id_range is not None:
        query = query.where(events.c.event_id.between(*id_range))
    return _coroutine(plan, query)


def _coroutine(plan: _Plan, query: sa.Select[Any]) -> sa.Subquery:
    if plan.sqlite:
        # LIMIT -1 keeps SQLite from flattening the subquery into the query above it, so each
        # expression is computed once per row rather than once per place that uses it.
        query = query.limit(-1)
    return query.subquery()


def _source(plan: _Plan, id_range: tuple[int, int] | None) -> sa.Subquery:
    """Level 2: the packed cell key, raw values and the metrics of every filtered row.

    Metrics are NULL on truncated rows and where undefined. The arithmetic is done in IEEE
    doubles in the same order as `_row_metrics`, so a value recomputed in Python is
    bit-for-bit the value the database compared against a bracket.
    """
    base = _base(plan, id_range)
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


# --------------------------------------------------------------------------------------------
# The pass: one GROUP BY per event_id range gives every figure but the quantiles' neighbours


@dataclass
class _Cell:
    """Counts and sums of one cell (a packed key): what strata and coverage need."""

    rows: int = 0
    predicted_sum: int = 0
    actual_sum: int = 0
    smape_n: int = 0
    smape_sum: float = 0.0
    waste_n: int = 0
    waste_sum: float = 0.0

    def add(self, other: _Cell) -> None:
        self.rows += other.rows
        self.predicted_sum += other.predicted_sum
        self.actual_sum += other.actual_sum
        self.smape_n += other.smape_n
        self.smape_sum += other.smape_sum
        self.waste_n += other.waste_n
        self.waste_sum += other.waste_sum


@dataclass(frozen=True)
class _CellKey:
    category: str
    complexity: str
    deliverables: int
    """Clipped to 0..DELIVERABLE_CLIP."""
    success: bool
    truncated: bool
    underestimated: bool

    @property
    def bucket(self) -> str:
        return deliverable_count_bucket(self.deliverables)


def _decode(plan: _Plan, key: int) -> _CellKey:
    flags, rest = key % 8, key // 8
    deliverables, rest = rest % (DELIVERABLE_CLIP + 1), rest // (DELIVERABLE_CLIP + 1)
    complexity, category = rest % plan.complexities.size, rest // plan.complexities.size
    return _CellKey(
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


@dataclass
class _Part:
    """What one event_id range contributes."""

    cells: dict[int, _Cell]
    overall: _Overall


def _bracket_condition(source: sa.Subquery, bracket: _Bracket) -> sa.ColumnElement[bool]:
    value = source.c[bracket.metric]
    parts: list[sa.ColumnElement[bool]] = []
    # A comparison with NULL is never true, so a bounded bracket needs no NULL test.
    if bracket.lo is not None:
        parts.append(value >= sa.literal(bracket.lo, sa.Float))
    if bracket.hi is not None:
        parts.append(value <= sa.literal(bracket.hi, sa.Float))
    return sa.and_(*parts) if parts else value.is_not(None)


def _json_rows(plan: _Plan, *columns: sa.ColumnElement[Any]) -> sa.FunctionElement[Any]:
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


def _query_part(
    connection: sa.Connection,
    plan: _Plan,
    brackets: Sequence[_Bracket],
    id_range: tuple[int, int] | None,
) -> _Part:
    """One GROUP BY over the packed cell key: per-cell counts and sums for strata and coverage,
    and per-cell pieces of the overall figures (merged here), including, per bracket, the rows
    below it and the values inside it (sent as exact integers, recomputed in Python)."""
    source = _source(plan, id_range)
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
    cells: dict[int, _Cell] = {}
    overall = _Overall(below=[0] * len(brackets), inside=[array("d") for _ in brackets])
    for row in connection.execute(sa.select(*columns).group_by(c.key)):
        fields = iter(row)
        key, rows, p_sum, a_sum, n, s_sum, w_sum, s_min, s_max = (next(fields) for _ in range(9))
        cells[int(key)] = _Cell(
            rows=int(rows),
            predicted_sum=int(p_sum or 0),
            actual_sum=int(a_sum or 0),
            smape_n=int(n),
            smape_sum=float(s_sum or 0.0),
            waste_n=int(n),
            waste_sum=float(w_sum or 0.0),
        )
        part = _Overall(smape_min=s_min, smape_max=s_max, below=[0] * len(brackets))
        for name in _EXTRA_WASTES:
            part.n[name] = int(next(fields))
            part.sums[name] = float(next(fields) or 0.0)
        for indexes in bounded.values():
            counts = _unpack_counts(int(next(fields) or 0), len(indexes))
            for index, count in zip(indexes, counts, strict=True):
                part.below[index] = count
        part.inside = [array("d") for _ in brackets]
        overall.add(part)
        for metric, indexes in grouped.items():
            values = _pair_values(metric, _parse_json_rows(next(fields)))
            for index in indexes:
                low, high = brackets[index].bounds
                overall.inside[index].extend([v for v in values if low <= v <= high])
    if not plan.time_only:
        # Apart, without the per-row expressions: carrying the timestamp text through the
        # GROUP BY's sorter would cost more than this plain scan.
        times = sa.select(sa.func.min(_EVENTS.c.timestamp), sa.func.max(_EVENTS.c.timestamp)).where(
            *plan.conditions
        )
        if id_range is not None:
            times = times.where(_EVENTS.c.event_id.between(*id_range))
        overall.first, overall.last = connection.execute(times).one()
    return _Part(cells, overall)


def _time_range(connection: sa.Connection, plan: _Plan) -> tuple[datetime | None, datetime | None]:
    """First and last timestamp when only time bounds filter: one index seek each (a query
    asking for both at once would read the whole index)."""
    first = sa.select(sa.func.min(_EVENTS.c.timestamp)).where(*plan.conditions)
    last = sa.select(sa.func.max(_EVENTS.c.timestamp)).where(*plan.conditions)
    return connection.execute(first).scalar(), connection.execute(last).scalar()


# --------------------------------------------------------------------------------------------
# Brackets: where the quantiles lie


def _sample_ids(first_id: int, last_id: int) -> list[int]:
    """About SAMPLE_SIZE evenly spaced event ids: a deterministic stride sample."""
    step = max(1, (last_id - first_id + 1) // SAMPLE_SIZE)
    return list(range(first_id, last_id + 1, step))


def _sample(
    connection: sa.Connection, plan: _Plan, ids: Sequence[int]
) -> dict[MetricName, list[float]]:
    """Metric values of the rows with these event ids that pass the filters (unsorted)."""
    clean = _truncated_flag(plan) == 0
    ceiling = _EVENTS.c.actual_max_tokens if plan.has_max_tokens else sa.null()
    values: dict[MetricName, list[float]] = {name: [] for name in METRICS}
    for start in range(0, len(ids), ID_CHUNK):
        query = sa.select(
            _EVENTS.c.predicted_output_tokens,
            _EVENTS.c.actual_output_tokens,
            _EVENTS.c.selected_budget,
            ceiling,
        ).where(_EVENTS.c.event_id.in_(ids[start : start + ID_CHUNK]), clean, *plan.conditions)
        for row in connection.execute(query):
            for name, value in zip(METRICS, _row_metrics(*row), strict=True):
                if value is not None:
                    values[name].append(value)
    return values


def _brackets(sampled: dict[MetricName, list[float]] | None) -> list[_Bracket]:
    """One bracket per (metric, quantile); unbounded when there is no usable sample."""
    brackets: list[_Bracket] = []
    for metric in METRICS:
        values = sampled.get(metric, []) if sampled is not None else []
        for quantile in QUANTILES[metric]:
            if len(values) < MIN_BRACKET_SAMPLE:
                brackets.append(_Bracket(metric, quantile, None, None))
                continue
            q = float(quantile)
            size = len(values)
            spread = BRACKET_SIGMAS * math.sqrt(q * (1 - q) / size) + 2 / size
            low = math.floor((q - spread) * (size - 1))
            high = math.ceil((q + spread) * (size - 1))
            brackets.append(
                _Bracket(
                    metric,
                    quantile,
                    values[low] if low > 0 else None,
                    values[high] if high < size - 1 else None,
                )
            )
    return brackets


def _quantile_ranks(n: int, quantile: Fraction) -> tuple[int, Fraction]:
    """(j, f) such that the quantile of n sorted values x[0..n-1] is x[j] + f·(x[j+1] − x[j]).

    The "exclusive" definition of Python's `statistics.quantiles` (the original analyzer's):
    the 1-based position h = q·(n+1), clamped to [1, n]. Exact for any n (no float ranks).
    """
    position = min(max(quantile * (n + 1), Fraction(1)), Fraction(n))
    whole = math.floor(position)
    return whole - 1, position - whole


def quantile_of_sorted(values: Sequence[float], quantile: Fraction) -> float | None:
    """A quantile of already sorted values, by the definition in `_quantile_ranks`.

    The 1/2 quantile is the true median (the mean of the two middle values when n is even);
    the 9/10 quantile of fewer than 10 values is the maximum, as the original analyzer had it.
    """
    if not values:
        return None
    index, fraction = _quantile_ranks(len(values), quantile)
    return _interpolate(values[index], values[index + 1] if fraction else None, fraction)


def _interpolate(low: float, high: float | None, fraction: Fraction) -> float:
    if high is None or fraction == 0:
        return low
    if fraction == MEDIAN:
        return (low + high) / 2
    return low + float(fraction) * (high - low)


def _resolve(
    n: int, quantile: Fraction, below: int, inside: Sequence[float]
) -> tuple[bool, float | None]:
    """(found, value) from the rows below a bracket and the sorted values inside it."""
    if n == 0:
        return True, None
    index, fraction = _quantile_ranks(n, quantile)
    last = index + 1 if fraction else index
    if not (below <= index and last - below < len(inside)):
        return False, None
    high = inside[last - below] if fraction else None
    return True, _interpolate(inside[index - below], high, fraction)


def _all_values(connection: sa.Connection, plan: _Plan, metric: MetricName) -> list[float]:
    """Every value of one metric, sorted (the exact fallback when a bracket missed)."""
    source = _source(plan, None)
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
# Running the passes


def _id_ranges(first: int | None, last: int | None, parts: int) -> list[tuple[int, int] | None]:
    if first is None or last is None or parts <= 1:
        return [None]
    size = (last - first + 1 + parts - 1) // parts
    return [(start, min(last, start + size - 1)) for start in range(first, last + 1, size)]


def _parallel(
    db: Database, tasks: Sequence[Callable[[sa.Connection], _T]], workers: int
) -> list[_T]:
    def run(task: Callable[[sa.Connection], _T]) -> _T:
        with translated_errors(db), db.engine.connect() as connection:
            return task(connection)

    if workers <= 1:
        return [run(task) for task in tasks]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="autopack-analyze") as pool:
        return list(pool.map(run, tasks))


@dataclass(frozen=True)
class _TableFacts:
    rows: int
    first_id: int | None
    last_id: int | None
    categories: list[str]
    complexities: list[str]
    columns: frozenset[str]


def _table_facts(db: Database, allow_empty_db: bool) -> _TableFacts:
    """Guards first (empty DB, telemetry table), then cheap facts: counts, ids, stored values."""
    with translated_errors(db), db.engine.connect() as connection:
        inspector = sa.inspect(connection)
        tables = set(inspector.get_table_names())
        counts = {
            name: int(
                connection.execute(
                    sa.select(sa.func.count()).select_from(table_of(model))
                ).scalar_one()
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
        if _EVENTS.name not in tables:
            raise SchemaError(
                f"{db.target.display_url} has no telemetry table ({_EVENTS.name}).",
                hint="it was made without the telemetry tables (the original's Alembic path); "
                "`autopack db upgrade` adds them",
            )
        columns = frozenset(c["name"] for c in inspector.get_columns(_EVENTS.name))
        needed = {
            "event_id", "timestamp", "category", "complexity", "deliverable_count",
            "predicted_output_tokens", "actual_output_tokens", "selected_budget", "success",
            "truncated",
        }  # fmt: skip
        absent = sorted(needed - columns)
        if absent:
            raise SchemaError(
                f"{_EVENTS.name} on {db.target.display_url} lacks columns: {', '.join(absent)}.",
                hint="this is not an Autopack telemetry table; check the target",
            )
        rows, first, last = connection.execute(
            sa.select(
                sa.func.count(), sa.func.min(_EVENTS.c.event_id), sa.func.max(_EVENTS.c.event_id)
            )
        ).one()
        leading = {index["column_names"][0] for index in inspector.get_indexes(_EVENTS.name)}
        categories = _distinct(connection, "category", indexed="category" in leading)
        complexities = _distinct(connection, "complexity", indexed="complexity" in leading)
    return _TableFacts(
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
        plain = sa.select(_EVENTS.c[column]).distinct().order_by(_EVENTS.c[column])
        return [str(v) for v in connection.execute(plain).scalars() if v is not None]
    table = _EVENTS.name
    query = sa.text(
        f"WITH RECURSIVE seen(value) AS ("
        f" SELECT min({column}) FROM {table}"
        f" UNION ALL SELECT (SELECT min({column}) FROM {table} WHERE {column} > seen.value)"
        f" FROM seen WHERE seen.value IS NOT NULL"
        f") SELECT value FROM seen WHERE value IS NOT NULL"
    )
    return [str(value) for value in connection.execute(query).scalars()]


def _plan(db: Database, facts: _TableFacts, options: AnalyzeOptions) -> tuple[_Plan, list[str]]:
    events = _EVENTS
    sqlite = db.engine.dialect.name == "sqlite"
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
    plan = _Plan(
        conditions=conditions,
        categories=_Codes.build(facts.categories, normalize_category),
        complexities=_Codes.build(facts.complexities, normalize_complexity),
        multiplier=options.under_multiplier,
        has_max_tokens=has_max_tokens,
        has_truncated_output="is_truncated_output" in facts.columns,
        sqlite=sqlite,
        time_only=not (options.success_only or options.run_ids or options.categories)
        and not options.complexities,
    )
    return plan, warnings


def _workers(db: Database, rows: int) -> int:
    if db.target.in_memory or rows < PARALLEL_MIN_ROWS:
        return 1
    try:
        cores = len(os.sched_getaffinity(0))  # the CPUs this process may run on
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cores))


def analyze_telemetry(db: Database, options: AnalyzeOptions | None = None) -> AnalysisReport:
    """Analyse the telemetry of `db` (opened read-only is enough); see the module docstring.

    Raises GuardError for an empty DB (0 runs, 0 phases) unless `options.allow_empty_db`, and
    SchemaError when the DB has no telemetry table. Zero matching rows give a report whose
    verdict is `no_samples`.
    """
    options = options or AnalyzeOptions()
    facts = _table_facts(db, options.allow_empty_db)
    plan, warnings = _plan(db, facts, options)
    workers = _workers(db, facts.rows)
    ranges = _id_ranges(facts.first_id, facts.last_id, workers)
    sampled: dict[MetricName, list[float]] | None = None
    if facts.rows > DIRECT_LIMIT and facts.first_id is not None and facts.last_id is not None:
        ids = _sample_ids(facts.first_id, facts.last_id)
        share = -(-len(ids) // workers)
        pieces = [ids[start : start + share] for start in range(0, len(ids), share)]
        sampled = {name: [] for name in METRICS}
        for piece in _parallel(db, [partial(_sample, plan=plan, ids=p) for p in pieces], workers):
            for name, values in piece.items():
                sampled[name].extend(values)
        for values in sampled.values():
            values.sort()
    brackets = _brackets(sampled)
    tasks = [
        partial(_query_part, plan=plan, brackets=brackets, id_range=id_range) for id_range in ranges
    ]
    cells: dict[int, _Cell] = {}
    overall = _Overall(below=[0] * len(brackets), inside=[array("d") for _ in brackets])
    for part in _parallel(db, tasks, workers):
        for key, cell in part.cells.items():
            cells.setdefault(key, _Cell()).add(cell)
        overall.add(part.overall)
    decoded = [(_decode(plan, key), cell) for key, cell in cells.items()]
    counts: dict[MetricName, int] = {
        "smape": sum(cell.smape_n for _, cell in decoded),
        "waste_predicted": sum(cell.waste_n for _, cell in decoded),
        **{name: overall.n.get(name, 0) for name in _EXTRA_WASTES},
    }
    if plan.time_only:
        overall.first, overall.last = _parallel(db, [partial(_time_range, plan=plan)], 1)[0]
    quantiles = _quantiles(db, plan, brackets, counts, overall.below, overall.inside)
    return _assemble(options, facts, plan, decoded, overall, counts, quantiles, warnings)


def _quantiles(
    db: Database,
    plan: _Plan,
    brackets: Sequence[_Bracket],
    counts: dict[MetricName, int],
    below: Sequence[int],
    inside: Sequence[array[float]],
) -> dict[tuple[str, Fraction], float | None]:
    found: dict[tuple[str, Fraction], float | None] = {}
    missed: dict[MetricName, list[Fraction]] = {}
    for bracket, n_below, values in zip(brackets, below, inside, strict=True):
        ok, value = _resolve(counts[bracket.metric], bracket.quantile, n_below, sorted(values))
        if ok:
            found[(bracket.metric, bracket.quantile)] = value
        else:
            missed.setdefault(bracket.metric, []).append(bracket.quantile)
    for metric, wanted in missed.items():
        everything = _parallel(db, [partial(_all_values, plan=plan, metric=metric)], 1)[0]
        for quantile in wanted:
            found[(metric, quantile)] = quantile_of_sorted(everything, quantile)
    return found


# --------------------------------------------------------------------------------------------
# Assembling the report


def _rate(count: int, rows: int) -> float | None:
    return count / rows if rows else None


def _check(count: int, rows: int, target: float | None) -> TargetCheck:
    rate = _rate(count, rows)
    met = None if rate is None or target is None else rate <= target
    return TargetCheck(count=count, rows=rows, rate=rate, target=target, met=met)


def _mean(total: float, n: int) -> float | None:
    return total / n if n else None


def _strata(
    decoded: Sequence[tuple[_CellKey, _Cell]],
    label: Callable[[_CellKey], str],
    order: Sequence[str],
) -> list[Stratum]:
    groups: dict[str, list[tuple[_CellKey, _Cell]]] = {}
    for key, cell in decoded:
        groups.setdefault(label(key), []).append((key, cell))
    rank = {value: index for index, value in enumerate(order)}
    strata: list[Stratum] = []
    for value in sorted(groups, key=lambda v: (rank.get(v, len(rank)), v)):
        members = groups[value]
        rows = sum(cell.rows for _, cell in members)
        success = sum(cell.rows for key, cell in members if key.success)
        truncated = sum(cell.rows for key, cell in members if key.truncated)
        under = sum(cell.rows for key, cell in members if key.underestimated)
        smape_n = sum(cell.smape_n for _, cell in members)
        waste_n = sum(cell.waste_n for _, cell in members)
        strata.append(
            Stratum(
                value=value,
                rows=rows,
                success=success,
                truncated=truncated,
                underestimated=under,
                success_rate=success / rows,
                truncation_rate=truncated / rows,
                underestimation_rate=under / rows,
                smape_n=smape_n,
                smape_mean=_mean(math.fsum(c.smape_sum for _, c in members), smape_n),
                waste_mean=_mean(math.fsum(c.waste_sum for _, c in members), waste_n),
            )
        )
    return strata


def _verdict(tier1: Tier1) -> Verdict:
    if tier1.rows == 0:
        return Verdict(
            status="no_samples",
            summary="no samples: no telemetry row matches, so nothing can be judged",
            reasons=["0 rows analysed"],
            actions=["drain phases with telemetry on, or widen the filters"],
        )
    reasons: list[str] = []
    actions: list[str] = []
    under, trunc = tier1.underestimation, tier1.truncation
    if under.met is False:
        reasons.append(
            f"underestimation {_pct(under.rate)} > {_pct(under.target)} "
            f"({under.count} of {under.rows} calls needed more than predicted × "
            f"{tier1.under_multiplier})"
        )
        actions.append(
            "raise the base estimates of the groups that under-predict (see --stratify), or "
            "budget from a high quantile (p90) of actual/predicted instead of the median"
        )
    if trunc.met is False:
        reasons.append(
            f"truncation {_pct(trunc.rate)} > {_pct(trunc.target)} "
            f"({trunc.count} of {trunc.rows} calls hit max_tokens)"
        )
        actions.append(
            "raise the budget margins or floors for the truncating groups so fewer calls hit "
            "max_tokens (each truncation costs an escalation and a retry)"
        )
    if reasons:
        return Verdict(
            status="tuning_needed",
            summary="tuning needed: " + "; ".join(reasons),
            reasons=reasons,
            actions=actions,
        )
    return Verdict(
        status="within_targets",
        summary=(
            f"within targets: underestimation {_pct(under.rate)} ≤ {_pct(under.target)}, "
            f"truncation {_pct(trunc.rate)} ≤ {_pct(trunc.target)}; no tuning needed"
        ),
        reasons=[],
        actions=["keep collecting telemetry; re-run the analysis after the next drains"],
    )


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _assemble(
    options: AnalyzeOptions,
    facts: _TableFacts,
    plan: _Plan,
    decoded: Sequence[tuple[_CellKey, _Cell]],
    overall: _Overall,
    counts: dict[MetricName, int],
    quantiles: dict[tuple[str, Fraction], float | None],
    warnings: list[str],
) -> AnalysisReport:
    rows = sum(cell.rows for _, cell in decoded)
    success = sum(cell.rows for key, cell in decoded if key.success)
    clean_cells = [(k, c) for k, c in decoded if not k.truncated]
    truncated_cells = [(k, c) for k, c in decoded if k.truncated]
    n_truncated = sum(c.rows for _, c in truncated_cells)
    under = sum(cell.rows for key, cell in decoded if key.underestimated)
    tier1 = Tier1(
        population=ALL_ROWS,
        rows=rows,
        under_multiplier=options.under_multiplier,
        underestimation=_check(under, rows, UNDERESTIMATION_TARGET),
        truncation=_check(n_truncated, rows, TRUNCATION_TARGET),
        success=_check(success, rows, None),
    )
    sums = {
        "smape": math.fsum(c.smape_sum for _, c in decoded),
        "waste_predicted": math.fsum(c.waste_sum for _, c in decoded),
        **{name: overall.sums.get(name, 0.0) for name in _EXTRA_WASTES},
    }
    waste = [
        WasteStats(
            metric=metric,
            definition=definition,
            population=WASTE_POPULATIONS[metric],
            n=counts[metric],
            mean=_mean(sums[metric], counts[metric]),
            median=quantiles.get((metric, MEDIAN)),
            p90=quantiles.get((metric, P90)),
            p90_guide=WASTE_P90_GUIDE if metric == "waste_predicted" else None,
        )
        for metric, definition in WASTE_DEFINITIONS.items()
    ]
    smape = SmapeStats(
        population=f"{NON_TRUNCATED} with actual > 0 and predicted > 0",
        n=counts["smape"],
        mean=_mean(sums["smape"], counts["smape"]),
        median=quantiles.get(("smape", MEDIAN)),
        min=overall.smape_min,
        max=overall.smape_max,
    )
    n_clean = sum(c.rows for _, c in clean_cells)
    non_truncated = TokenMeans(
        population=NON_TRUNCATED,
        rows=n_clean,
        predicted_mean=_mean(sum(c.predicted_sum for _, c in clean_cells), n_clean),
        actual_mean=_mean(sum(c.actual_sum for _, c in clean_cells), n_clean),
    )
    truncated_under = sum(c.rows for k, c in truncated_cells if k.underestimated)
    truncated = TruncatedStats(
        population=TRUNCATED_ROWS,
        rows=n_truncated,
        predicted_mean=_mean(sum(c.predicted_sum for _, c in truncated_cells), n_truncated),
        actual_mean=_mean(sum(c.actual_sum for _, c in truncated_cells), n_truncated),
        underestimated=truncated_under,
        underestimated_rate=_rate(truncated_under, n_truncated),
    )
    strata = None
    if options.stratify:
        strata = Strata(
            population=ALL_ROWS + "; SMAPE and waste over each stratum's non-truncated rows",
            note=DEFINITIONS["categories"],
            by_category=_strata(decoded, lambda k: k.category, REQUIRED_CATEGORIES),
            by_complexity=_strata(decoded, lambda k: k.complexity, COMPLEXITY_LEVELS),
            by_deliverable_bucket=_strata(decoded, lambda k: k.bucket, ("0", *REQUIRED_BUCKETS)),
        )
    clean_counts: dict[tuple[str, str, str], int] = {}
    for key, cell in decoded:
        if key.success and not key.truncated:
            cell_key = (key.category, key.complexity, key.bucket)
            clean_counts[cell_key] = clean_counts.get(cell_key, 0) + cell.rows
    coverage = assess_coverage(
        clean_counts,
        min_total=options.coverage_goal,
        categories=_required(options.categories, REQUIRED_CATEGORIES, normalize_category),
        complexities=_required(
            options.complexities, REQUIRED_COMPLEXITIES, lambda v: (v or "").strip().lower()
        ),
    )
    verdict = _verdict(tier1)
    if options.success_only and rows:
        warnings.append("--success-only: the success rate is 100 % by construction")
    if n_truncated:
        warnings.append(
            f"{n_truncated} truncated row(s) count as underestimated on their lower bound; they "
            "are left out of SMAPE and waste"
        )
    return AnalysisReport(
        generated_at=utc_now(),
        filters=Filters(
            success_only=options.success_only,
            run_ids=list(options.run_ids),
            categories=list(options.categories),
            complexities=list(options.complexities),
            since=options.since,
            until=options.until,
        ),
        under_multiplier=options.under_multiplier,
        table_rows=facts.rows,
        rows=rows,
        first_timestamp=overall.first,
        last_timestamp=overall.last,
        tier1=tier1,
        waste=waste,
        smape=smape,
        non_truncated=non_truncated,
        truncated=truncated,
        strata=strata,
        coverage=coverage,
        verdict=verdict,
        next_steps=_next_steps(options, verdict, coverage),
        definitions=dict(DEFINITIONS) | {k: v for k, v in WASTE_DEFINITIONS.items()},
        warnings=warnings,
    )


def _next_steps(options: AnalyzeOptions, verdict: Verdict, coverage: CoverageReport) -> list[str]:
    steps = list(verdict.actions) if verdict.status == "tuning_needed" else []
    if verdict.status != "no_samples" and not options.success_only:
        steps.append(
            "re-run with --success-only to judge the estimator on builder successes only "
            "(failed parses are not representative samples)"
        )
    if coverage.ready:
        steps.append(
            "coverage is enough to calibrate: propose coefficients from the clean samples "
            "(autopack calibrate propose)"
        )
    elif coverage.seed_cells or coverage.more_samples_needed:
        steps.append(f"before calibrating, collect more clean samples: {coverage.verdict}")
    if verdict.status == "no_samples":
        steps.extend(verdict.actions)
    return steps


def _required(
    given: Sequence[str], default: Sequence[str], normalise: Callable[[str | None], str]
) -> list[str]:
    """A filter narrows the coverage goal to what it selects (`--category tests` → tests)."""
    if not given:
        return list(default)
    chosen: list[str] = []
    for value in given:
        label = normalise(value)
        if label and label not in chosen:
            chosen.append(label)
    return chosen
