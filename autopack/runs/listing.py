"""`runs list`: the newest runs with their phase counts by state and telemetry rows.

One snapshot, four statements, none of them a scan of the phases: the runs are chosen first
(a small table, newest first), then their phases are counted per state from the index
ix_phases_run_state (run_id, state) and their telemetry rows from the index on run_id, for
those runs only. A listing of every run of a large DB (`--limit 0`) counts the whole
phases index in one grouped pass instead of naming thousands of ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from autopack.db.engine import Database
from autopack.db.names import RunState
from autopack.db.suggest import did_you_mean
from autopack.db.transaction import Transaction, read_snapshot, table_names
from autopack.errors import ConfigError
from autopack.runs.cells import stored_datetime, stored_int
from autopack.runs.detail import EVENTS_TABLE
from autopack.runs.model import RunFilters, RunList, RunSummary

MAX_NAMED_RUNS = 500
"""Up to this many runs, their counts are read by id; beyond, by one grouped pass."""


def list_runs(db: Database, filters: RunFilters | None = None) -> RunList:
    """The runs that pass `filters`, newest first, read from one snapshot."""
    filters = filters or RunFilters()
    if filters.limit < 0:
        raise ConfigError(
            f"--limit must be 0 (all) or more, not {filters.limit}.", hint="e.g. --limit 100"
        )
    with read_snapshot(db) as snapshot:
        state = _known_state(snapshot, filters.state)
        filters = filters.model_copy(update={"state": state})
        where, params = _conditions(filters)
        matching = stored_int(snapshot.all(f"SELECT count(*) FROM runs{where}", params)[0][0])
        limit = f" LIMIT {int(filters.limit)}" if filters.limit else ""
        rows = snapshot.all(
            f"SELECT id, state, created_at, updated_at FROM runs{where} "
            f"ORDER BY created_at DESC, id DESC{limit}",
            params,
        )
        run_ids = [str(row[0]) for row in rows]
        telemetry = EVENTS_TABLE in table_names(snapshot)
        states = _grouped(snapshot, "SELECT run_id, state, count(*) FROM phases", run_ids, 2)
        events = (
            _grouped(snapshot, f"SELECT run_id, count(*) FROM {EVENTS_TABLE}", run_ids, 1)
            if telemetry
            else {}
        )
    runs = []
    for run_id, run_state, created, updated in rows:
        by_state = {str(s): int(n) for s, n in sorted(states.get(run_id, []))}
        runs.append(
            RunSummary(
                id=run_id,
                state=str(run_state),
                created_at=stored_datetime(created),
                updated_at=stored_datetime(updated),
                phases=sum(by_state.values()),
                phase_states=by_state,
                telemetry_events=sum(int(n) for (n,) in events.get(run_id, [])),
            )
        )
    return RunList(filters=filters, matching=matching, runs=runs, telemetry_available=telemetry)


def _known_state(snapshot: Transaction, state: str | None) -> str | None:
    """The state as stored (any case given), refused with a guess when no run could be in it."""
    if state is None:
        return None
    known = {s.value for s in RunState}
    known |= {str(s) for (s,) in snapshot.all("SELECT DISTINCT state FROM runs")}
    for name in known:
        if name.upper() == state.upper():
            return name
    raise ConfigError(
        f"{state!r} is not a run state{did_you_mean(state.upper(), known)}.",
        hint="run states: " + ", ".join(s.value for s in RunState),
    )


def _conditions(filters: RunFilters) -> tuple[str, dict[str, Any]]:
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if filters.state is not None:
        clauses.append("state = :state")
        params["state"] = filters.state
    if filters.prefix:
        # substr, not LIKE: no wildcards to escape, and case-sensitive on both backends.
        clauses.append("substr(id, 1, :prefix_length) = :prefix")
        params["prefix"] = filters.prefix
        params["prefix_length"] = len(filters.prefix)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _grouped(
    snapshot: Transaction, select: str, run_ids: Sequence[str], keys: int
) -> dict[str, list[tuple[Any, ...]]]:
    """`select … GROUP BY` its first `keys` columns, for these runs: run id → its rows (the
    columns after the run id)."""
    if not run_ids:
        return {}
    group_by = ", ".join(["run_id", "state"][:keys])
    wanted = set(run_ids)
    if len(run_ids) <= MAX_NAMED_RUNS:
        names = {f"r{i}": run_id for i, run_id in enumerate(run_ids)}
        placeholders = ", ".join(f":{name}" for name in names)
        rows = snapshot.all(f"{select} WHERE run_id IN ({placeholders}) GROUP BY {group_by}", names)
    else:
        rows = snapshot.all(f"{select} GROUP BY {group_by}")
    found: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        if row[0] in wanted:
            found.setdefault(str(row[0]), []).append(tuple(row[1:]))
    return found
