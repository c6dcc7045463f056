"""The samples a proposal learns from, read in ONE snapshot and aggregated in the DB.

The estimator is a pure function of a row's features (category, complexity, deliverables and
the doc flags), so the telemetry is read `GROUP BY` those features, the cross-validation fold
and the actual output: millions of rows become a few thousand (feature, fold, actual) tuples
with a count. Above `EXACT_ROWS` rows the actual output is read rounded to 3 significant
digits (at most 0.5 % off), which keeps the tuples few whatever the table's size.

Which rows:
- *clean* (point estimates): `success = true` (or, with `require_phase_complete`, the phase is
  COMPLETE) and not truncated;
- *censored* (budgets only): truncated rows, whose actual output is a lower bound;
- the model asked for (default: the one with the most clean rows); simulated models
  (autopack.telemetry.simulated) only on request; never rows an import marked contaminated;
- rows without deliverables (the estimator's empty-phase default, the original's logging
  bug) are left out and counted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from autopack.db.models import (
    Phase,
    PhaseState,
    Run,
    TelemetryProvenance,
    TokenEstimationV2Event,
    table_of,
)
from autopack.errors import EXIT_FOUND_PROBLEMS, AutopackError
from autopack.estimator import deliverable_count_bucket, normalize_category, normalize_complexity
from autopack.telemetry.coverage import CoverageReport, assess_coverage
from autopack.telemetry.simulated import is_simulated_model

EVENTS: Final = table_of(TokenEstimationV2Event)
PROVENANCE: Final = table_of(TelemetryProvenance)
PHASES: Final = table_of(Phase)
RUNS: Final = table_of(Run)

EXACT_ROWS: Final = 200_000
"""Up to this many qualifying rows, actual outputs are used exactly."""
BINS_PER_OCTAVE: Final = 32
"""Above `EXACT_ROWS`, actual outputs are placed on a log grid this fine (within ±1.1 %)."""
PACK: Final = 64
"""Each row travels as actual × PACK + fold × 2 + truncated (fold < 32)."""
ROW_FOLDS: Final = 5
"""Folds of the k-fold split used with fewer than `MIN_RUNS_FOR_RUN_SPLIT` runs."""
MIN_RUNS_FOR_RUN_SPLIT: Final = 3
MAX_LEAVE_ONE_OUT_RUNS: Final = 10
"""Up to this many runs, leave-one-run-out; above, grouped k-fold by run (`ROW_FOLDS`)."""
CONTAMINATED_SOURCE: Final = "import_contaminated"

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


class TooFewSamples(AutopackError):
    """Not enough qualifying samples: the work ran and found too little data (exit 1)."""

    exit_code = EXIT_FOUND_PROBLEMS


@dataclass(frozen=True)
class SampleFilters:
    model: str | None = None
    include_simulated: bool = False
    require_phase_complete: bool = False
    run_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Features:
    """Everything the estimator reads from a telemetry row."""

    category: str
    complexity: str
    deliverable_count: int
    deliverables_json: str
    context_quality: str | None
    api_reference_required: bool | None
    examples_required: bool | None
    research_required: bool | None
    usage_guide_required: bool | None

    @property
    def group(self) -> tuple[str, str]:
        """(normalised category, normalised complexity): the unit a proposal calibrates."""
        return normalize_category(self.category), normalize_complexity(self.complexity)

    @property
    def deliverables(self) -> list[str]:
        """The stored deliverable paths ([] when the row has none, as imported history)."""
        try:
            value = json.loads(self.deliverables_json or "[]")
        except json.JSONDecodeError:
            return []
        if not isinstance(value, list):
            return []
        return [str(item) for item in value if str(item).strip()]


@dataclass
class SampleSet:
    """Aggregated samples: parallel arrays, one entry per (feature, fold, actual, kind)."""

    model: str
    models: dict[str, int]
    """Clean rows per model (after the filters), most first."""
    features: list[Features]
    feature: IntArray
    actual: FloatArray
    censored: BoolArray
    fold: IntArray
    weight: FloatArray
    runs: int
    folds: int
    split: str
    excluded_without_deliverables: int
    actual_rounded: bool
    coverage: CoverageReport
    groups: list[tuple[str, str]] = field(default_factory=list)
    """The (category, complexity) group of each feature."""

    @property
    def clean_rows(self) -> int:
        return int(self.weight[~self.censored].sum())

    @property
    def censored_rows(self) -> int:
        return int(self.weight[self.censored].sum())

    @property
    def rows_without_paths(self) -> int:
        """Clean rows costed as generic new files (no deliverable paths stored)."""
        flags = np.array([not f.deliverables for f in self.features], dtype=bool)
        mask = flags[self.feature] & ~self.censored
        return int(self.weight[mask].sum())


@contextmanager
def read_snapshot(connection: Connection) -> Iterator[Connection]:
    """One read transaction: every query inside sees the same state of the DB."""
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN")
        try:
            yield connection
        finally:
            connection.exec_driver_sql("COMMIT")
        return
    snapshot = connection.execution_options(isolation_level="REPEATABLE READ")
    with snapshot.begin():
        yield snapshot


def _truncated(has_output_flag: bool) -> sa.ColumnElement[bool]:
    flag = EVENTS.c.truncated == sa.true()
    if has_output_flag:
        flag = sa.or_(flag, EVENTS.c.is_truncated_output == sa.true())
    return flag


def _base_conditions(filters: SampleFilters, truncated: sa.ColumnElement[bool]) -> list[Any]:
    contaminated = sa.select(PROVENANCE.c.event_id).where(
        PROVENANCE.c.source == CONTAMINATED_SOURCE
    )
    conditions: list[Any] = [
        EVENTS.c.event_id.not_in(contaminated),
        EVENTS.c.actual_output_tokens > 0,
    ]
    if filters.run_ids:
        conditions.append(EVENTS.c.run_id.in_(filters.run_ids))
    if filters.require_phase_complete:
        complete = (
            sa.select(PHASES.c.phase_id)
            .where(
                PHASES.c.run_id == EVENTS.c.run_id,
                PHASES.c.phase_id == EVENTS.c.phase_id,
                PHASES.c.state == PhaseState.COMPLETE.value,
            )
            .exists()
        )
        conditions.append(sa.or_(truncated, complete))
    else:
        conditions.append(sa.or_(truncated, EVENTS.c.success == sa.true()))
    return conditions


def _truncated_flag(connection: Connection) -> sa.ColumnElement[bool]:
    columns = {str(c["name"]) for c in sa.inspect(connection).get_columns(EVENTS.name)}
    return _truncated("is_truncated_output" in columns)


def _clean_rows_by_model(
    connection: Connection, conditions: list[Any], truncated: sa.ColumnElement[bool]
) -> dict[str, int]:
    """Each model's clean rows with deliverables, most first: which model a proposal fits."""
    rows = connection.execute(
        sa.select(EVENTS.c.model, sa.func.sum(sa.case((truncated, 0), else_=1)))
        .where(*conditions, EVENTS.c.deliverable_count > 0)
        .group_by(EVENTS.c.model)
    ).all()
    models = {str(model): int(clean or 0) for model, clean in rows}
    return dict(sorted(models.items(), key=lambda item: (-item[1], item[0])))


def _runs_with_rows(connection: Connection, conditions: list[Any]) -> list[str]:
    """The runs that hold sample rows (of the fitted model): what the split holds out. One
    index probe per run, not a scan of the rows."""
    has_rows = (
        sa.select(EVENTS.c.event_id).where(EVENTS.c.run_id == RUNS.c.id, *conditions).exists()
    )
    query = sa.select(RUNS.c.id).where(has_rows).order_by(RUNS.c.id)
    return [str(value) for value in connection.execute(query).scalars()]


def aggregate_array(connection: Connection, value: sa.ColumnElement[int]) -> Any:
    """The DB's own JSON array aggregate over a packed integer per row."""
    if connection.dialect.name == "postgresql":
        return sa.func.json_agg(value)
    return sa.func.json_group_array(value)


@dataclass(frozen=True)
class RowQuery:
    """What every query over the qualifying rows shares, so they all see the same rows and
    folds: the conditions, the truncation flag, each row's fold and the feature columns."""

    conditions: list[Any]
    truncated: sa.ColumnElement[bool]
    fold: sa.ColumnElement[int]
    folds: int
    split: str
    runs: int
    features: list[sa.ColumnElement[Any]]


def row_query(connection: Connection, filters: SampleFilters, model: str) -> RowQuery:
    """The shared parts of the queries over one model's sample rows (inside `read_snapshot`)."""
    truncated = _truncated_flag(connection)
    conditions = [*_base_conditions(filters, truncated), EVENTS.c.model == model]
    # Only the runs holding this model's rows: a run of other models' (or simulated) rows
    # would turn a one-run k-fold into a leave-one-run-out that holds out nothing.
    runs = _runs_with_rows(connection, conditions)
    fold_column, folds, split = _fold_column(runs, connection.dialect.name)
    return RowQuery(
        conditions=conditions,
        truncated=truncated,
        fold=fold_column,
        folds=folds,
        split=split,
        runs=len(runs),
        features=[
            EVENTS.c.category,
            EVENTS.c.complexity,
            EVENTS.c.deliverable_count,
            EVENTS.c.deliverables_json,
            EVENTS.c.context_quality,
            EVENTS.c.api_reference_required,
            EVENTS.c.examples_required,
            EVENTS.c.research_required,
            EVENTS.c.usage_guide_required,
        ],
    )


def read_samples(connection: Connection, filters: SampleFilters, *, min_samples: int) -> SampleSet:
    """Read the samples for a proposal or a backtest (inside `read_snapshot`).

    Three queries: each model's clean rows (which model to fit), the runs holding that model's
    rows (for the split), then ONE scan of its rows grouped by features, which returns each
    group's rows as a JSON array of packed integers (actual output, fold, truncated) built by
    the DB.
    """
    truncated = _truncated_flag(connection)
    models = {
        name: clean
        for name, clean in _clean_rows_by_model(
            connection, _base_conditions(filters, truncated), truncated
        ).items()
        if filters.include_simulated or not is_simulated_model(name)
    }
    model = filters.model or next(iter(models), None)
    clean_rows = models.get(model, 0) if model is not None else 0
    if model is None or clean_rows < min_samples:
        raise _too_few(model, clean_rows, min_samples, filters)
    query = row_query(connection, filters, model)
    packed = (
        EVENTS.c.actual_output_tokens * PACK + query.fold * 2 + sa.case((truncated, 1), else_=0)
    )
    grouped = connection.execute(
        sa.select(
            *query.features,
            sa.func.count().label("n"),
            sa.func.sum(sa.case((truncated, 0), else_=1)).label("clean"),
            aggregate_array(connection, packed).label("packed"),
        )
        .where(*query.conditions)
        .group_by(*query.features)
    ).all()
    excluded = sum(int(row.n) for row in grouped if int(row.deliverable_count or 0) <= 0)
    kept = [row for row in grouped if int(row.deliverable_count or 0) > 0]
    qualifying = sum(int(row.n) for row in kept)
    return _assemble(
        kept, model, models, query.runs, query.folds, query.split, excluded, qualifying
    )


def _too_few(
    model: str | None, clean_rows: int, min_samples: int, filters: SampleFilters
) -> TooFewSamples:
    which = f"model {model!r}" if model else "any model"
    simulated = "" if filters.include_simulated else " (simulated models excluded)"
    return TooFewSamples(
        f"[STOP] only {clean_rows} clean samples for {which}{simulated}; a proposal needs at "
        f"least {min_samples} (--min-samples). Nothing was written.",
        hint="drain more phases (autopack telemetry analyze shows which cells to seed), or "
        "lower --min-samples knowingly"
        + (
            ""
            if filters.include_simulated
            else "; rows of the demo's simulated model count only with --include-simulated"
        ),
    )


def _fold_column(runs: Sequence[str], dialect: str) -> tuple[sa.ColumnElement[int], int, str]:
    """The SQL expression of each row's fold, the number of folds, and the split's name."""
    if len(runs) < MIN_RUNS_FOR_RUN_SPLIT:
        return (
            EVENTS.c.event_id % ROW_FOLDS,
            ROW_FOLDS,
            f"{ROW_FOLDS}-fold by row ({len(runs)} run{'s' if len(runs) != 1 else ''}: "
            f"fewer than {MIN_RUNS_FOR_RUN_SPLIT}, so no run can be held out whole)",
        )
    if len(runs) <= MAX_LEAVE_ONE_OUT_RUNS:
        whens = [(EVENTS.c.run_id == run, index) for index, run in enumerate(runs)]
        return sa.case(*whens, else_=0), len(runs), f"leave-one-run-out ({len(runs)} runs)"
    return (
        _run_hash(dialect) % ROW_FOLDS,
        ROW_FOLDS,
        f"grouped {ROW_FOLDS}-fold by run ({len(runs)} runs; a run's rows share a fold, "
        "chosen from the last two characters of its id)",
    )


def _run_hash(dialect: str) -> sa.ColumnElement[int]:
    """A cheap per-row number that only depends on the run id (its last two characters)."""
    run_id = EVENTS.c.run_id
    if dialect == "postgresql":
        last = sa.func.ascii(sa.func.right(run_id, 1))
        before = sa.func.ascii(sa.func.substr(run_id, sa.func.length(run_id) - 1, 1))
    else:
        last = sa.func.unicode(sa.func.substr(run_id, -1))
        before = sa.func.coalesce(sa.func.unicode(sa.func.substr(run_id, -2, 1)), 0)
    return last + 3 * before


def unpack(value: Any) -> IntArray:
    items = json.loads(value) if isinstance(value, str) else value
    return np.asarray(items, dtype=np.int64)


def features_of(row: Any) -> Features:
    """A result row's feature columns (as `RowQuery.features` selects them)."""
    return Features(
        category=str(row.category or ""),
        complexity=str(row.complexity or ""),
        deliverable_count=int(row.deliverable_count),
        deliverables_json=str(row.deliverables_json or "[]"),
        context_quality=row.context_quality,
        api_reference_required=row.api_reference_required,
        examples_required=row.examples_required,
        research_required=row.research_required,
        usage_guide_required=row.usage_guide_required,
    )


def _bin_actual(actual: IntArray) -> IntArray:
    """Actual outputs on a log grid of `BINS_PER_OCTAVE` steps per doubling (the middle of
    each step), so the entries stay few however many rows there are."""
    octave = np.log2(np.maximum(actual, 1)) * BINS_PER_OCTAVE
    middle: IntArray = np.rint(np.exp2((np.floor(octave) + 0.5) / BINS_PER_OCTAVE)).astype(np.int64)
    return middle


def _assemble(
    rows: Sequence[Any],
    model: str,
    models: dict[str, int],
    runs: int,
    folds: int,
    split: str,
    excluded: int,
    qualifying: int,
) -> SampleSet:
    rounded = qualifying > EXACT_ROWS
    features_list: list[Features] = []
    parts: list[tuple[IntArray, ...]] = []
    cells: dict[tuple[str, str, str], int] = {}
    for row in rows:
        features = features_of(row)
        packed = unpack(row.packed)
        actual = packed // PACK
        if rounded:
            actual = _bin_actual(actual)
        unique, counts = np.unique(actual * PACK + packed % PACK, return_counts=True)
        tags = unique % PACK
        feature_id = len(features_list)
        features_list.append(features)
        parts.append(
            (
                np.full(unique.size, feature_id, dtype=np.int64),
                unique // PACK,
                tags // 2,
                tags % 2,
                counts.astype(np.int64),
            )
        )
        clean = int(row.clean or 0)
        if clean:
            category, complexity = features.group
            cell = (category, complexity, deliverable_count_bucket(features.deliverable_count))
            cells[cell] = cells.get(cell, 0) + clean

    def joined(position: int) -> IntArray:
        if not parts:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([part[position] for part in parts])

    return SampleSet(
        model=model,
        models=models,
        features=features_list,
        feature=joined(0),
        actual=joined(1).astype(np.float64),
        censored=joined(3).astype(bool),
        fold=joined(2),
        weight=joined(4).astype(np.float64),
        runs=runs,
        folds=folds,
        split=split,
        excluded_without_deliverables=excluded,
        actual_rounded=rounded,
        coverage=assess_coverage(cells),
        groups=[f.group for f in features_list],
    )
