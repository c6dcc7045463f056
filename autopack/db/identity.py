"""Which database is this? The facts shown before any command acts, and `db identity`'s report.

Everything is read in a handful of aggregate queries (never row by row), so the panel costs
little even on a backlog of a million phases.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from pydantic import BaseModel, Field

from autopack.db.engine import Database, translated_errors
from autopack.db.meta import read_stamp
from autopack.db.names import ALL_TABLES, PhaseState, RunState
from autopack.db.schema import SchemaState, inspect_schema, require_autopack_schema
from autopack.estimator.categories import deliverable_count_bucket

# A light view of the telemetry table: the identity report needs five columns, not the model.
_EVENTS = sa.table(
    "token_estimation_v2_events",
    sa.column("category"),
    sa.column("complexity"),
    sa.column("deliverable_count"),
    sa.column("success", sa.Boolean),
    sa.column("truncated", sa.Boolean),
)

PANEL_COUNT_TABLES = ("runs", "phases", "token_estimation_v2_events")


class TargetInfo(BaseModel):
    """The `target` object of every JSON document and the target panel."""

    url: str
    path: str | None
    backend: str
    in_memory: bool
    source: str
    name: str | None
    size_bytes: int | None
    mtime: str | None
    role: str
    role_stamped: bool
    db_id: str | None
    schema_revision: str | None
    head_revision: str
    read_only: bool


class TelemetryStats(BaseModel):
    """From token_estimation_v2_events; the breakdowns count clean samples only
    (success=True and not truncated), the ones calibration can use."""

    available: bool = True
    events: int = 0
    success: int = 0
    success_rate: float | None = None
    truncated: int = 0
    truncation_rate: float | None = None
    clean_samples: int = 0
    by_category: dict[str, int] = Field(default_factory=dict)
    by_complexity: dict[str, int] = Field(default_factory=dict)
    by_deliverable_bucket: dict[str, int] = Field(default_factory=dict)
    escalation_events: int | None = None
    llm_usage_events: int | None = None


class IdentityReport(BaseModel):
    target: TargetInfo
    counts: dict[str, int]
    missing_tables: list[str]
    phase_states: dict[str, int]
    run_states: dict[str, int]
    telemetry: TelemetryStats
    warnings: list[str]

    @property
    def is_empty(self) -> bool:
        return self.counts.get("runs", 0) == 0 and self.counts.get("phases", 0) == 0


class TargetPanel(BaseModel):
    """What is shown before a command acts: the target and its key row counts."""

    target: TargetInfo
    counts: dict[str, int]
    warnings: list[str]


def _bucket(count: int | None) -> str:
    # A null or negative count (bad data from elsewhere) is shown with the empty phases.
    return deliverable_count_bucket(max(0, count or 0))


def _file_facts(db: Database) -> tuple[int | None, str | None]:
    path = db.target.sqlite_path
    if path is None or not path.exists():
        return None, None
    stat = path.stat()
    mtime = datetime.fromtimestamp(stat.st_mtime, UTC).isoformat(timespec="seconds")
    return stat.st_size, mtime


def _postgres_size(connection: sa.Connection) -> int | None:
    value = connection.execute(sa.text("SELECT pg_database_size(current_database())")).scalar()
    return int(value) if value is not None else None


def _target_info(db: Database, connection: sa.Connection, schema: SchemaState) -> TargetInfo:
    size, mtime = _file_facts(db)
    if db.target.backend == "postgresql":
        size = _postgres_size(connection)
    stamp = read_stamp(connection)
    return TargetInfo(
        url=db.target.display_url,
        path=str(db.target.sqlite_path) if db.target.sqlite_path else None,
        backend=db.target.backend,
        in_memory=db.target.in_memory,
        source=db.target.source,
        name=db.target.name,
        size_bytes=size,
        mtime=mtime,
        role=stamp.role,
        role_stamped=stamp.stamped,
        db_id=stamp.db_id,
        schema_revision=schema.revision,
        head_revision=schema.head,
        read_only=not db.writable,
    )


def _warnings(info: TargetInfo, schema: SchemaState) -> list[str]:
    warnings: list[str] = []
    if not info.role_stamped:
        warnings.append(
            "unstamped Autopack DB — treated as legacy (stamp it: autopack db stamp --role legacy)"
        )
    if schema.missing_tables:
        warnings.append(f"missing tables: {', '.join(schema.missing_tables)}")
    if schema.revision != schema.head:
        have = schema.revision or "none"
        warnings.append(
            f"schema revision {have}, this autopack needs {schema.head} (autopack db upgrade)"
        )
    return warnings


def _count(connection: sa.Connection, table_name: str) -> int:
    table = sa.table(table_name)
    return int(connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def read_panel(db: Database) -> TargetPanel:
    """The target panel's facts: cheap, read-only, and the same for every command."""
    with translated_errors(db), db.engine.connect() as connection:
        schema = inspect_schema(connection)
        require_autopack_schema(db, schema)
        info = _target_info(db, connection, schema)
        counts = {
            t: _count(connection, t) for t in PANEL_COUNT_TABLES if t in schema.existing_tables
        }
    return TargetPanel(target=info, counts=counts, warnings=_warnings(info, schema))


def inspect_database(db: Database) -> IdentityReport:
    """The full identity report of `autopack db identity`."""
    with translated_errors(db), db.engine.connect() as connection:
        schema = inspect_schema(connection)
        require_autopack_schema(db, schema)
        info = _target_info(db, connection, schema)
        present = set(schema.existing_tables)
        counts = {t: _count(connection, t) for t in ALL_TABLES if t in present}
        phase_states = _states(connection, "phases", [s.value for s in PhaseState], present)
        run_states = _states(connection, "runs", [s.value for s in RunState], present)
        telemetry = _telemetry(connection, counts, present)
    return IdentityReport(
        target=info,
        counts=counts,
        missing_tables=list(schema.missing_tables),
        phase_states=phase_states,
        run_states=run_states,
        telemetry=telemetry,
        warnings=_warnings(info, schema),
    )


def _states(
    connection: sa.Connection, table_name: str, known: list[str], present: set[str]
) -> dict[str, int]:
    """Every known state (zeros included) plus any unknown one the data holds."""
    if table_name not in present:
        return {}
    state: sa.ColumnClause[str] = sa.column("state")
    rows = connection.execute(
        sa.select(state, sa.func.count()).select_from(sa.table(table_name)).group_by(state)
    ).all()
    found = {str(row[0]): int(row[1]) for row in rows}
    ordered = {name: found.pop(name, 0) for name in known}
    ordered.update(sorted(found.items()))
    return ordered


def _telemetry(
    connection: sa.Connection, counts: dict[str, int], present: set[str]
) -> TelemetryStats:
    escalations = counts.get("token_budget_escalation_events")
    usage = counts.get("llm_usage_events")
    if "token_estimation_v2_events" not in present:
        return TelemetryStats(
            available=False, escalation_events=escalations, llm_usage_events=usage
        )
    events = _EVENTS
    # One pass over the covering index ix_autopack_telemetry_summary (revision 0005): every
    # figure below is a sum over these few hundred groups, so 2M rows cost one index scan.
    groups = connection.execute(
        sa.select(
            events.c.success,
            events.c.truncated,
            events.c.category,
            events.c.complexity,
            events.c.deliverable_count,
            sa.func.count(),
        ).group_by(
            events.c.success,
            events.c.truncated,
            events.c.category,
            events.c.complexity,
            events.c.deliverable_count,
        )
    ).all()
    total = n_success = n_truncated = 0
    by_category: dict[str, int] = {}
    by_complexity: dict[str, int] = {}
    by_bucket: dict[str, int] = {}
    for success, truncated, category, complexity, deliverables, n in groups:
        total += n
        n_success += n if success else 0
        n_truncated += n if truncated else 0
        if success and not truncated:
            bucket = _bucket(deliverables)
            by_category[category] = by_category.get(category, 0) + n
            by_complexity[complexity] = by_complexity.get(complexity, 0) + n
            by_bucket[bucket] = by_bucket.get(bucket, 0) + n
    return TelemetryStats(
        events=total,
        success=n_success,
        success_rate=(n_success / total) if total else None,
        truncated=n_truncated,
        truncation_rate=(n_truncated / total) if total else None,
        clean_samples=sum(by_category.values()),
        by_category=dict(sorted(by_category.items())),
        by_complexity=dict(sorted(by_complexity.items())),
        by_deliverable_bucket=dict(sorted(by_bucket.items())),
        escalation_events=escalations,
        llm_usage_events=usage,
    )
