"""Write one file's plan while holding the write lock as briefly as possible (issue 11, defect 8).

SQLite has one writer at a time, so a drain waits for as long as an import holds the lock.
The plan's rows (autopack.telemetry.import_plan) are first *staged*: inserted into temporary
tables on the import's own connection, bound by the real columns' types exactly as an insert
into the real table would be. SQLite keeps TEMP tables in its separate temp database, so
staging takes no lock on the DB file. Then, in the write transaction (BEGIN IMMEDIATE on
SQLite; on PostgreSQL, which locks rows rather than the database, an advisory lock that makes
imports take turns), the import

1. checks, with indexed lookups driven by the staged rows, that no other writer stored one of
   the planned sample keys or created one of the planned placeholder runs or phases since the
   plan was made (`StalePlan` otherwise: the caller plans again, with the lock released);
2. moves the staged rows in with one `INSERT … SELECT` per table. Provisional ids become final
   here: on SQLite the largest id in the table plus the ordinal (no other writer can insert
   meanwhile); on PostgreSQL the ids were drawn from the column's sequence while staging.

Measured with `benchmarks/import_lock.py` (docs/performance.md): binding 150,000 rows from
Python (`executemany`) took twice the CPU of moving them from staged tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa

from autopack.telemetry.import_plan import (
    EVENTS,
    NEW_TIER,
    PHASES,
    PROVENANCE,
    RUNS,
    TIERS,
    FilePlan,
)

STAGE_PREFIX: Final = "autopack_import_stage_"
IMPORT_LOCK_KEY: Final = 0x6175746F706B69
"""PostgreSQL advisory lock taken by every import's write transaction ("autopki")."""


class StalePlan(Exception):
    """Another writer changed what the plan relied on; plan again."""


@dataclass(frozen=True)
class StagedTable:
    target: sa.Table
    stage: sa.Table
    columns: tuple[str, ...]
    """The target's columns the staged rows give (the others take their defaults)."""
    count: int
    """Staged rows; a table with none is not created at all."""


@dataclass(frozen=True)
class StagedPlan:
    runs: StagedTable
    tiers: StagedTable
    phases: StagedTable
    events: StagedTable
    provenance: StagedTable
    ids_final: bool
    """Ids were drawn while staging (PostgreSQL); on SQLite they are ordinals until written."""
    index_bases: dict[str, int]
    """Existing placeholder runs the plan adds phases to → their next phase index then."""

    def tables(self) -> tuple[StagedTable, ...]:
        return (self.runs, self.tiers, self.phases, self.events, self.provenance)


@contextmanager
def staged(connection: sa.Connection, plan: FilePlan) -> Iterator[StagedPlan]:
    """The plan's rows in temporary tables for the block; dropped at its end. On SQLite this
    commits only to the connection's temp database; inside an open transaction (a dry run)
    it is part of that transaction."""
    own_transaction = not connection.in_transaction()
    postgres = connection.dialect.name == "postgresql"
    tables: list[StagedTable] = []
    try:
        with _maybe_transaction(connection, own_transaction):
            tiers, events = plan.tiers, plan.events
            phases, provenance = plan.phases, plan.provenance
            if postgres:
                tiers, phases, events, provenance = _with_drawn_ids(connection, plan)
            for target, rows, extra in (
                (RUNS, plan.runs, ()),
                (TIERS, tiers, ()),
                (PHASES, phases, (NEW_TIER,)),
                (EVENTS, events, ()),
                (PROVENANCE, provenance, ()),
            ):
                tables.append(_stage(connection, target, rows, extra))
        runs, tier_table, phase_table, event_table, provenance_table = tables
        yield StagedPlan(
            runs,
            tier_table,
            phase_table,
            event_table,
            provenance_table,
            ids_final=postgres,
            index_bases=plan.index_bases,
        )
    except BaseException:
        # Inside the caller's transaction the tables go with its rollback (and the next
        # staging replaces them); a failed drop must not hide what went wrong.
        if own_transaction:
            with suppress(sa.exc.DBAPIError):
                _drop(connection, tables)
        raise
    _drop(connection, tables, own_transaction)


def _drop(connection: sa.Connection, tables: Sequence[StagedTable], own: bool = True) -> None:
    with _maybe_transaction(connection, own):
        for table in tables:
            if table.count:
                connection.execute(sa.text(f"DROP TABLE {_temp_name(connection, table)}"))


def take_write_lock(connection: sa.Connection) -> None:
    """At the start of the write transaction: SQLite's write lock at once (BEGIN IMMEDIATE,
    instead of pysqlite's deferred BEGIN before the first insert); on PostgreSQL the lock
    that makes imports take turns, so a key re-check is not raced by another import."""
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    elif connection.dialect.name == "postgresql":
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(IMPORT_LOCK_KEY)))


def write_staged(connection: sa.Connection, staged_plan: StagedPlan) -> None:
    """Check the plan still holds, then move the staged rows in (inside the write
    transaction). Raises StalePlan, before writing anything, when another writer got there
    first."""
    _check_still_valid(connection, staged_plan)
    tier_offset = event_offset = 0
    if not staged_plan.ids_final:
        tier_offset = _largest(connection, TIERS.c.id)
        event_offset = _largest(connection, EVENTS.c.event_id)
    offsets = {
        (TIERS.name, "id"): tier_offset,
        (EVENTS.name, "event_id"): event_offset,
        (PROVENANCE.name, "event_id"): event_offset,
    }
    for table in staged_plan.tables():
        if not table.count:
            continue
        values: list[sa.ColumnElement[Any]] = []
        for name in table.columns:
            column: sa.ColumnElement[Any] = table.stage.c[name]
            if (table.target.name, name) in offsets:
                column = column + offsets[(table.target.name, name)]
            elif table.target is PHASES and name == "tier_id":
                column = column + table.stage.c[NEW_TIER] * tier_offset
            values.append(column.label(name))
        connection.execute(sa.insert(table.target).from_select(table.columns, sa.select(*values)))


def _check_still_valid(connection: sa.Connection, plan: StagedPlan) -> None:
    """Every check is driven by the staged rows and probes a unique index of the real table."""
    if _any(
        connection,
        plan.provenance,
        lambda stage: sa.exists().where(PROVENANCE.c.sample_key == stage.c.sample_key),
    ):
        raise StalePlan("another writer stored one of the planned samples")
    if _any(connection, plan.runs, lambda stage: sa.exists().where(RUNS.c.id == stage.c.id)):
        raise StalePlan("another writer created one of the planned runs")
    # A phase in a run the plan creates cannot exist unless that run does (checked above).
    if _any(
        connection,
        plan.phases,
        lambda stage: sa.and_(
            stage.c[NEW_TIER] == 0,
            sa.exists().where(
                PHASES.c.run_id == stage.c.run_id, PHASES.c.phase_id == stage.c.phase_id
            ),
        ),
    ):
        raise StalePlan("another writer created one of the planned phases")
    if plan.index_bases:
        highest = connection.execute(
            sa.select(PHASES.c.run_id, sa.func.max(PHASES.c.phase_index))
            .where(PHASES.c.run_id.in_(sorted(plan.index_bases)))
            .group_by(PHASES.c.run_id)
        )
        for run_id, index in highest:
            if (-1 if index is None else int(index)) + 1 != plan.index_bases[run_id]:
                raise StalePlan(f"another writer added phases to run {run_id}")


def _any(
    connection: sa.Connection,
    table: StagedTable,
    condition: Callable[[sa.Table], sa.ColumnElement[bool]],
) -> bool:
    """Whether a staged row meets the condition (one probe of the real table's index each)."""
    if not table.count:
        return False
    query = sa.select(sa.literal(1)).select_from(table.stage).where(condition(table.stage))
    return connection.execute(query.limit(1)).first() is not None


def _largest(connection: sa.Connection, column: sa.Column[Any]) -> int:
    return int(connection.execute(sa.select(sa.func.coalesce(sa.func.max(column), 0))).scalar_one())


def _stage(
    connection: sa.Connection,
    target: sa.Table,
    rows: Sequence[dict[str, Any]],
    extra: Sequence[str],
) -> StagedTable:
    """A temporary table with the target's types for the given rows' columns, filled."""
    given = {key for row in rows for key in row}
    columns = tuple(column.name for column in target.columns if column.name in given)
    name = f"{STAGE_PREFIX}{target.name}"
    stage = sa.Table(
        name,
        sa.MetaData(),
        *(sa.Column(column, _binding_type(target.c[column].type)) for column in columns),
        *(sa.Column(column, sa.Integer()) for column in extra),
    )
    staged_table = StagedTable(target, stage, columns, len(rows))
    if not rows:
        return staged_table
    quote = connection.dialect.identifier_preparer.quote
    selected = [quote(column) for column in columns] + [f"0 AS {quote(column)}" for column in extra]
    # A table left by an import that was killed.
    connection.execute(sa.text(f"DROP TABLE IF EXISTS {_temp_name(connection, staged_table)}"))
    # CREATE … AS SELECT copies each column's type (SQLite: its affinity, so the value stored
    # is what the real table would store), and none of the constraints.
    connection.execute(
        sa.text(
            f"CREATE TEMPORARY TABLE {quote(name)} AS SELECT {', '.join(selected)} "
            f"FROM {quote(target.name)} WHERE 1 = 0"
        )
    )
    keys = (*columns, *extra)
    connection.execute(sa.insert(stage), [{key: row.get(key) for key in keys} for row in rows])
    return staged_table


def _binding_type(column_type: sa.types.TypeEngine[Any]) -> sa.types.TypeEngine[Any]:
    """The column's type, except that a JSON None binds as SQL NULL (rows that lack a value
    the others give must get NULL, not the JSON text "null")."""
    if isinstance(column_type, sa.JSON):
        return sa.JSON(none_as_null=True)
    return column_type


def _with_drawn_ids(
    connection: sa.Connection, plan: FilePlan
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """PostgreSQL: the plan's rows with real ids drawn from the id sequences (another writer
    draws its own, so none collide; a rolled-back import only leaves a gap)."""
    tier_ids = _drawn(connection, TIERS.name, "id", len(plan.tiers))
    event_ids = _drawn(connection, EVENTS.name, "event_id", len(plan.events))
    tiers = [{**row, "id": tier_ids[row["id"] - 1]} for row in plan.tiers]
    phases = [
        {**row, "tier_id": tier_ids[row["tier_id"] - 1], NEW_TIER: 0} if row[NEW_TIER] else row
        for row in plan.phases
    ]
    events = [{**row, "event_id": event_ids[row["event_id"] - 1]} for row in plan.events]
    provenance = [{**row, "event_id": event_ids[row["event_id"] - 1]} for row in plan.provenance]
    return tiers, phases, events, provenance


def _drawn(connection: sa.Connection, table: str, column: str, count: int) -> list[int]:
    if count == 0:
        return []
    sequence = sa.func.pg_get_serial_sequence(table, column)
    query = sa.select(sa.func.nextval(sequence)).select_from(
        sa.func.generate_series(1, count).alias("n")
    )
    return [int(value) for value in connection.execute(query).scalars()]


@contextmanager
def _maybe_transaction(connection: sa.Connection, own: bool) -> Iterator[None]:
    if not own:
        yield
        return
    with connection.begin():
        yield


def _temp_name(connection: sa.Connection, table: StagedTable) -> str:
    """The staged table's name, qualified by the temporary schema (never a real table)."""
    quoted = connection.dialect.identifier_preparer.quote(table.stage.name)
    return f"temp.{quoted}" if connection.dialect.name == "sqlite" else f"pg_temp.{quoted}"
