"""`runs show RUN`: the run's fields, its phases in order, and what draining them produced."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from autopack.db.engine import Database
from autopack.db.transaction import Transaction, read_snapshot, table_names
from autopack.runs.cells import stored_datetime, stored_int
from autopack.runs.ids import require_run
from autopack.runs.model import PhaseSummary, RunDetail, RunFields, TelemetrySummary

EVENTS_TABLE = "token_estimation_v2_events"
RESULTS_TABLE = "autopack_drain_results"

# success/truncated are booleans on PostgreSQL and 0/1 on SQLite: CASE reads both.
TELEMETRY_FIGURES = (
    "count(*), "
    "sum(CASE WHEN success THEN 1 ELSE 0 END), "
    "sum(CASE WHEN truncated THEN 1 ELSE 0 END), "
    "sum(predicted_output_tokens), sum(actual_output_tokens)"
)


def show_run(db: Database, run_id: str) -> RunDetail:
    """One run in detail, read from one snapshot; exit 2 (GuardError) for an unknown run."""
    with read_snapshot(db) as snapshot:
        run = require_run(snapshot, run_id)
        tables = table_names(snapshot)
        phases = snapshot.all(
            "SELECT phase_index, phase_id, name, state, task_category, complexity, "
            "builder_attempts, last_failure_reason FROM phases WHERE run_id = :run_id "
            "ORDER BY phase_index, phase_id",
            {"run_id": run_id},
        )
        attempts = _per_phase(snapshot, tables, RESULTS_TABLE, "count(*)", run_id, drain=True)
        telemetry = _per_phase(snapshot, tables, EVENTS_TABLE, TELEMETRY_FIGURES, run_id)
    summaries = [_phase(row, attempts, telemetry) for row in phases]
    return RunDetail(
        run=_run_fields(run),
        phase_states=dict(sorted(Counter(p.state for p in summaries).items())),
        phases=summaries,
        drain_attempts=sum(int(row[0] or 0) for row in (attempts or {}).values()),
        drain_results_available=attempts is not None,
        telemetry=None if telemetry is None else summed(list(telemetry.values())),
    )


def _per_phase(
    snapshot: Transaction,
    tables: set[str],
    table: str,
    figures: str,
    run_id: str,
    *,
    drain: bool = False,
) -> dict[str, tuple[Any, ...]] | None:
    """phase id → the figures over its rows of `table` (None when the DB lacks the table).

    Both tables are indexed on (run_id, …): one short index range per run. A dry run is not
    an attempt, so drain results count only the ones that acted.
    """
    if table not in tables:
        return None
    dry = " AND outcome <> 'dry_run'" if drain else ""
    rows = snapshot.all(
        f"SELECT phase_id, {figures} FROM {table} WHERE run_id = :run_id{dry} GROUP BY phase_id",
        {"run_id": run_id},
    )
    return {str(row[0]): tuple(row[1:]) for row in rows}


def summed(rows: Sequence[tuple[Any, ...]]) -> TelemetrySummary:
    """The TELEMETRY_FIGURES of several groups of rows, added up."""
    totals = [sum(stored_int(row[i]) for row in rows) for i in range(5)]
    return TelemetrySummary(
        events=totals[0],
        success=totals[1],
        truncated=totals[2],
        predicted_output_tokens=totals[3],
        actual_output_tokens=totals[4],
    )


def _phase(
    row: tuple[Any, ...],
    attempts: dict[str, tuple[Any, ...]] | None,
    telemetry: dict[str, tuple[Any, ...]] | None,
) -> PhaseSummary:
    index, phase_id, name, state, category, complexity, builder_attempts, reason = row
    tried = (attempts or {}).get(phase_id)
    events = (telemetry or {}).get(phase_id)
    return PhaseSummary(
        phase_index=int(index),
        phase_id=str(phase_id),
        name=str(name),
        state=str(state),
        task_category=category,
        complexity=complexity,
        builder_attempts=stored_int(builder_attempts),
        drain_attempts=stored_int(tried[0]) if tried else 0,
        telemetry_events=stored_int(events[0]) if events else 0,
        last_failure_reason=reason,
    )


def _run_fields(row: tuple[Any, ...]) -> RunFields:
    run_id, state, created, updated, started, completed, cap, used, max_phases, reason = row
    return RunFields(
        id=str(run_id),
        state=str(state),
        created_at=stored_datetime(created),
        updated_at=stored_datetime(updated),
        started_at=stored_datetime(started),
        completed_at=stored_datetime(completed),
        token_cap=cap,
        tokens_used=used,
        max_phases=max_phases,
        failure_reason=reason,
    )
