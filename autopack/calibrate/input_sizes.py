"""The prompt size (input tokens) of the qualifying rows that have one: drained rows.

A telemetry row does not carry its call's input tokens; the drain writes them, in the same
transaction, on the call's `llm_usage_events` row (`prompt_tokens`). A row is joined to a usage
row of the same run, phase and model, role `builder`, whose `completion_tokens` equal the row's
actual output: that pins the call even when a phase made several (an escalated retry sends the
same prompt, so two calls with equal outputs also have equal prompts; the largest is taken).
Imported history has no usage rows and simply has no input size.

Read in the proposal's snapshot with the same conditions and folds as the samples
(`samples.row_query`), grouped by features like them, so every entry here maps onto a feature
tuple the proposal already predicted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from autopack.calibrate.samples import (
    EVENTS,
    PACK,
    BoolArray,
    FloatArray,
    IntArray,
    SampleFilters,
    SampleSet,
    aggregate_array,
    features_of,
    row_query,
    unpack,
)
from autopack.db.models import LlmUsageEvent, table_of

USAGE: Final = table_of(LlmUsageEvent)
INPUT_SHIFT: Final = 1 << 32
"""Each row travels as input_tokens × INPUT_SHIFT + the samples' packed value (< 2**32)."""


@dataclass
class InputSizes:
    """Entries (one per row, or per identical rows) that carry input tokens."""

    feature: IntArray
    """Index into the proposal's `SampleSet.features`."""
    actual: FloatArray
    censored: BoolArray
    fold: IntArray
    input_tokens: FloatArray
    weight: FloatArray

    @classmethod
    def empty(cls) -> InputSizes:
        return cls(
            feature=np.zeros(0, dtype=np.int64),
            actual=np.zeros(0, dtype=np.float64),
            censored=np.zeros(0, dtype=bool),
            fold=np.zeros(0, dtype=np.int64),
            input_tokens=np.zeros(0, dtype=np.float64),
            weight=np.zeros(0, dtype=np.float64),
        )

    @property
    def rows(self) -> int:
        return int(self.weight.sum())

    @property
    def clean_rows(self) -> int:
        return int(self.weight[~self.censored].sum())

    @property
    def censored_rows(self) -> int:
        return int(self.weight[self.censored].sum())


def _builder_usage_present(connection: Connection, model: str) -> bool:
    """Whether any builder usage row of the model has input tokens (skips the join on DBs of
    imported history only)."""
    if not sa.inspect(connection).has_table(USAGE.name):
        return False
    probe = sa.select(USAGE.c.id).where(
        USAGE.c.model == model, USAGE.c.role == "builder", USAGE.c.prompt_tokens > 0
    )
    return connection.execute(probe.limit(1)).first() is not None


def read_input_sizes(
    connection: Connection, filters: SampleFilters, samples: SampleSet
) -> InputSizes:
    """The qualifying rows of `samples.model` that carry input tokens (inside the snapshot
    `samples` was read in)."""
    if not _builder_usage_present(connection, samples.model):
        return InputSizes.empty()
    query = row_query(connection, filters, samples.model)
    # The builder calls' input sizes, grouped once and joined (a hash join on PostgreSQL, an
    # automatic index on SQLite), not probed per telemetry row.
    calls = (
        sa.select(
            USAGE.c.run_id,
            USAGE.c.phase_id,
            USAGE.c.completion_tokens,
            sa.func.max(USAGE.c.prompt_tokens).label("input_tokens"),
        )
        .where(
            USAGE.c.model == samples.model,
            USAGE.c.role == "builder",
            USAGE.c.prompt_tokens > 0,
        )
        .group_by(USAGE.c.run_id, USAGE.c.phase_id, USAGE.c.completion_tokens)
        .subquery()
    )
    joined = EVENTS.join(
        calls,
        sa.and_(
            calls.c.run_id == EVENTS.c.run_id,
            calls.c.phase_id == EVENTS.c.phase_id,
            calls.c.completion_tokens == EVENTS.c.actual_output_tokens,
        ),
    )
    packed = (
        sa.cast(calls.c.input_tokens, sa.BigInteger) * INPUT_SHIFT
        + sa.cast(EVENTS.c.actual_output_tokens, sa.BigInteger) * PACK
        + query.fold * 2
        + sa.case((query.truncated, 1), else_=0)
    )
    rows = (
        sa.select(*query.features, packed.label("packed"))
        .select_from(joined)
        .where(*query.conditions, EVENTS.c.deliverable_count > 0)
        .subquery()
    )
    feature_columns = [rows.c[column.name] for column in query.features]
    grouped = connection.execute(
        sa.select(
            *feature_columns, aggregate_array(connection, rows.c.packed).label("packed")
        ).group_by(*feature_columns)
    ).all()
    index = {features: position for position, features in enumerate(samples.features)}
    parts: list[tuple[IntArray, IntArray, IntArray]] = []
    for row in grouped:
        feature_id = index.get(features_of(row))
        if feature_id is None:  # same snapshot and conditions: cannot happen; never guess
            continue
        unique, counts = np.unique(unpack(row.packed), return_counts=True)
        parts.append((np.full(unique.size, feature_id, dtype=np.int64), unique, counts))
    if not parts:
        return InputSizes.empty()
    feature = np.concatenate([part[0] for part in parts])
    values = np.concatenate([part[1] for part in parts])
    counts = np.concatenate([part[2] for part in parts])
    low = values % INPUT_SHIFT
    tags = low % PACK
    return InputSizes(
        feature=feature,
        actual=(low // PACK).astype(np.float64),
        censored=(tags % 2).astype(bool),
        fold=tags // 2,
        input_tokens=(values // INPUT_SHIFT).astype(np.float64),
        weight=counts.astype(np.float64),
    )
