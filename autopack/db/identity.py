"""Which database is this? The facts shown before any command acts, and `db identity`'s report.

Everything is read in a handful of aggregate queries (never row by row), in plain SQL, in ONE
read transaction (autopack.db.transaction: no SQLAlchemy on a SQLite file), so the counts are of
one instant: during a drain the phase states still add up to the phase count.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field

from autopack.db.buckets import deliverable_bucket
from autopack.db.clock import utc_text
from autopack.db.engine import Database
from autopack.db.meta import read_stamp_in
from autopack.db.names import ALL_TABLES, PhaseState, RunState
from autopack.db.schema import SchemaState, read_schema, require_autopack_schema
from autopack.db.transaction import Rows, Transaction, read_snapshot

EVENTS_TABLE = "token_estimation_v2_events"
# success and truncated are NOT NULL booleans (0/1 on SQLite; TRUE/FALSE are understood by
# SQLite >= 3.23 and PostgreSQL alike). The clean samples are one range of the covering index
# ix_autopack_telemetry_summary (success, truncated, category, complexity, deliverable_count,
# revision 0005); the other figures are short index ranges or SQLite's counted scans.
_CLEAN_GROUPS_SQL = (
    f"SELECT category, complexity, deliverable_count, count(*) FROM {EVENTS_TABLE} "
    "WHERE success = TRUE AND truncated = FALSE "
    "GROUP BY category, complexity, deliverable_count"
)
_SUCCESS_TRUNCATED_SQL = (
    f"SELECT count(*) FROM {EVENTS_TABLE} WHERE success = TRUE AND truncated = TRUE"
)
_TRUNCATED_SQL = f"SELECT count(*) FROM {EVENTS_TABLE} WHERE truncated = TRUE"

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
    compatible_with: str | None = None
    """Only for a schema newer than this autopack: the oldest revision it declares it serves."""


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
    return deliverable_bucket(count)


def _file_facts(db: Database) -> tuple[int | None, str | None]:
    path = db.target.sqlite_path
    if path is None or not path.exists():
        return None, None
    stat = path.stat()
    mtime = utc_text(datetime.fromtimestamp(stat.st_mtime, UTC).replace(microsecond=0))
    return stat.st_size, mtime


def _postgres_size(snapshot: Transaction) -> int | None:
    rows = snapshot.all("SELECT pg_database_size(current_database())")
    return int(rows[0][0]) if rows and rows[0][0] is not None else None


def _target_info(
    db: Database, snapshot: Transaction, schema: SchemaState, tables: set[str]
) -> TargetInfo:
    size, mtime = _file_facts(db)
    if db.target.backend == "postgresql":
        size = _postgres_size(snapshot)
    stamp = read_stamp_in(snapshot, tables)
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
        compatible_with=schema.compatible_with,
        read_only=not db.writable,
    )


def _warnings(info: TargetInfo, schema: SchemaState) -> list[str]:
    warnings: list[str] = []
    if not info.role_stamped:
        warnings.append(
            "unstamped Autopack DB — treated as legacy (`autopack db upgrade` stamps it legacy; "
            "`autopack db stamp --role legacy` stamps it without upgrading)"
        )
    if schema.missing_tables:
        warnings.append(f"missing tables: {', '.join(schema.missing_tables)}")
    newer = schema.compatibility.warning()
    if newer is not None:
        warnings.append(newer)
    elif schema.revision != schema.head:
        have = schema.revision or "none"
        warnings.append(
            f"schema revision {have}, this autopack needs {schema.head} (autopack db upgrade)"
        )
    return warnings


def _count_sql(table_name: str) -> str:
    return f"SELECT count(*) FROM {table_name}"


def _states_sql(table_name: str) -> str:
    return f"SELECT state, count(*) FROM {table_name} GROUP BY state"


def _scalar(rows: Rows) -> int:
    return int(rows[0][0]) if rows and rows[0][0] is not None else 0


def _schema_and_info(db: Database, snapshot: Transaction) -> tuple[SchemaState, TargetInfo]:
    schema = read_schema(snapshot)
    require_autopack_schema(db, schema)
    info = _target_info(db, snapshot, schema, set(schema.existing_tables))
    return schema, info


def read_panel(db: Database) -> TargetPanel:
    """The target panel's facts: cheap, read-only, and the same for every command."""
    with read_snapshot(db) as snapshot:
        schema, info = _schema_and_info(db, snapshot)
        names = [t for t in PANEL_COUNT_TABLES if t in schema.existing_tables]
        counts = {t: _scalar(snapshot.all(_count_sql(t))) for t in names}
    return TargetPanel(target=info, counts=counts, warnings=_warnings(info, schema))


def inspect_database(db: Database) -> IdentityReport:
    """The full identity report of `autopack db identity`."""
    with read_snapshot(db) as snapshot:
        schema, info = _schema_and_info(db, snapshot)
        present = set(schema.existing_tables)
        statements: dict[str, str] = {}
        if EVENTS_TABLE in present:
            statements["clean"] = _CLEAN_GROUPS_SQL
        for table_name in ("phases", "runs"):
            if table_name in present:
                statements[f"states:{table_name}"] = _states_sql(table_name)
        if EVENTS_TABLE in present:
            statements["success_truncated"] = _SUCCESS_TRUNCATED_SQL
            statements["truncated"] = _TRUNCATED_SQL
        for table_name in ALL_TABLES:
            if table_name in present and table_name not in ("phases", "runs"):
                statements[f"count:{table_name}"] = _count_sql(table_name)
        # One after another in the one transaction: every count is of the same instant.
        results = {name: snapshot.all(sql) for name, sql in statements.items()}
    phase_states = _states(results.get("states:phases"), [s.value for s in PhaseState])
    run_states = _states(results.get("states:runs"), [s.value for s in RunState])
    counts: dict[str, int] = {}
    for table_name in ALL_TABLES:
        if table_name == "phases" and "phases" in present:
            counts[table_name] = sum(phase_states.values())
        elif table_name == "runs" and "runs" in present:
            counts[table_name] = sum(run_states.values())
        elif f"count:{table_name}" in results:
            counts[table_name] = _scalar(results[f"count:{table_name}"])
    telemetry = _telemetry(results, counts, present)
    return IdentityReport(
        target=info,
        counts=counts,
        missing_tables=list(schema.missing_tables),
        phase_states=phase_states,
        run_states=run_states,
        telemetry=telemetry,
        warnings=_warnings(info, schema),
    )


def _states(rows: Rows | None, known: list[str]) -> dict[str, int]:
    """Every known state (zeros included) plus any unknown one the data holds."""
    if rows is None:
        return {}
    found = {str(state): int(n) for state, n in rows}
    ordered = {name: found.pop(name, 0) for name in known}
    ordered.update(sorted(found.items()))
    return ordered


def _telemetry(
    results: dict[str, Rows], counts: dict[str, int], present: set[str]
) -> TelemetryStats:
    escalations = counts.get("token_budget_escalation_events")
    usage = counts.get("llm_usage_events")
    if EVENTS_TABLE not in present:
        return TelemetryStats(
            available=False, escalation_events=escalations, llm_usage_events=usage
        )
    total = counts[EVENTS_TABLE]
    by_category: dict[str, int] = {}
    by_complexity: dict[str, int] = {}
    by_bucket: dict[str, int] = {}
    for category, complexity, deliverables, n in results["clean"]:
        bucket = _bucket(deliverables)
        by_category[category] = by_category.get(category, 0) + n
        by_complexity[complexity] = by_complexity.get(complexity, 0) + n
        by_bucket[bucket] = by_bucket.get(bucket, 0) + n
    clean = sum(by_category.values())
    n_success = clean + _scalar(results["success_truncated"])
    n_truncated = _scalar(results["truncated"])
    return TelemetryStats(
        events=total,
        success=n_success,
        success_rate=(n_success / total) if total else None,
        truncated=n_truncated,
        truncation_rate=(n_truncated / total) if total else None,
        clean_samples=clean,
        by_category=dict(sorted(by_category.items())),
        by_complexity=dict(sorted(by_complexity.items())),
        by_deliverable_bucket=dict(sorted(by_bucket.items())),
        escalation_events=escalations,
        llm_usage_events=usage,
    )
