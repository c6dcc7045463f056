"""`phases show RUN PHASE`: one phase, every attempt at it across drain sessions, every
telemetry row it produced (predicted vs actual), its budget escalations and its transcripts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autopack.db.compat import is_newer, read_revision
from autopack.db.engine import Database
from autopack.db.names import KNOWN_REVISIONS
from autopack.db.transaction import Transaction, read_snapshot, table_names
from autopack.runs.cells import stored_bool, stored_datetime, stored_int, stored_json
from autopack.runs.detail import EVENTS_TABLE, RESULTS_TABLE, TELEMETRY_FIGURES, summed
from autopack.runs.ids import require_run, unknown_phase
from autopack.runs.model import (
    PhaseAttempt,
    PhaseDetail,
    PhaseEscalation,
    PhaseTelemetryRow,
)

ESCALATIONS_TABLE = "token_budget_escalation_events"
SESSIONS_TABLE = "autopack_drain_sessions"
PROVENANCE_TABLE = "autopack_telemetry_provenance"
COMMIT_COLUMN_SINCE = "0009"
"""The revision that added autopack_drain_results.commit_sha."""
_COMMIT_FROM = KNOWN_REVISIONS.index(COMMIT_COLUMN_SINCE)

_PHASE_SQL = (
    "SELECT phase_index, name, description, state, task_category, complexity, scope, "
    "builder_attempts, retry_attempt, last_failure_reason, created_at, updated_at, "
    "started_at, completed_at FROM phases WHERE run_id = :run_id AND phase_id = :phase_id"
)
_KEY = "run_id = :run_id AND phase_id = :phase_id"


def show_phase(db: Database, run_id: str, phase_id: str) -> PhaseDetail:
    """One phase in detail, read from one snapshot; exit 2 (GuardError) for an unknown id."""
    key = {"run_id": run_id, "phase_id": phase_id}
    with read_snapshot(db) as snapshot:
        run = require_run(snapshot, run_id)
        rows = snapshot.all(_PHASE_SQL, key)
        if not rows:
            raise unknown_phase(snapshot, run_id, phase_id)
        tables = table_names(snapshot)
        attempts = _attempts(snapshot, tables, key)
        telemetry = _telemetry(snapshot, tables, key)
        figures = (
            snapshot.all(f"SELECT {TELEMETRY_FIGURES} FROM {EVENTS_TABLE} WHERE {_KEY}", key)
            if EVENTS_TABLE in tables
            else None
        )
        escalations = _escalations(snapshot, tables, key)
    index, name, description, state, category, complexity, scope = rows[0][:7]
    builder, retry, reason, created, updated, started, completed = rows[0][7:]
    scope_value = stored_json(scope)
    return PhaseDetail(
        run_id=run_id,
        run_state=str(run[1]),
        phase_id=phase_id,
        phase_index=int(index),
        name=str(name),
        description=description,
        state=str(state),
        task_category=category,
        complexity=complexity,
        scope=scope_value,
        deliverables=_deliverables(scope_value),
        builder_attempts=stored_int(builder),
        retry_attempt=stored_int(retry),
        last_failure_reason=reason,
        created_at=stored_datetime(created),
        updated_at=stored_datetime(updated),
        started_at=stored_datetime(started),
        completed_at=stored_datetime(completed),
        attempts=attempts or [],
        drain_results_available=attempts is not None,
        telemetry=telemetry,
        telemetry_summary=None if figures is None else summed(figures),
        escalations=escalations,
    )


def _deliverables(scope: Any) -> list[str]:
    listed = scope.get("deliverables") if isinstance(scope, dict) else None
    return [str(item) for item in listed] if isinstance(listed, list) else []


def _attempts(
    snapshot: Transaction, tables: set[str], key: dict[str, str]
) -> list[PhaseAttempt] | None:
    """Every drain result of the phase, oldest first (None when the DB has no drain tables)."""
    if RESULTS_TABLE not in tables or SESSIONS_TABLE not in tables:
        return None
    revision = read_revision(snapshot.all, tables)
    # A newer autopack's schema keeps the column (revisions only add).
    has_commit = is_newer(revision) or revision in KNOWN_REVISIONS[_COMMIT_FROM:]
    rows = snapshot.all(
        "SELECT r.session_id, r.seq, r.attempt, s.kind, s.worker, r.started_at, "
        "r.finished_at, r.duration_s, r.outcome, r.final_state, r.failure_kind, "
        "r.failure_reason, r.fingerprint, r.zero_yield_reason, r.telemetry_events, "
        "r.escalation_events, r.llm_calls, r.input_tokens, r.output_tokens, "
        f"{'r.commit_sha' if has_commit else 'NULL'}, r.transcript_dir "
        f"FROM {RESULTS_TABLE} r LEFT JOIN {SESSIONS_TABLE} s ON s.id = r.session_id "
        "WHERE r.run_id = :run_id AND r.phase_id = :phase_id "
        "ORDER BY r.started_at, r.session_id, r.seq",
        key,
    )
    return [_attempt(row) for row in rows]


def _attempt(row: tuple[Any, ...]) -> PhaseAttempt:
    (session, seq, attempt, kind, worker, started, finished, duration, outcome, final) = row[:10]
    (failure_kind, reason, fingerprint, zero_yield, events, escalations) = row[10:16]
    (calls, input_tokens, output_tokens, commit, transcript_dir) = row[16:]
    return PhaseAttempt(
        session_id=str(session),
        seq=int(seq),
        attempt=stored_int(attempt),
        session_kind=kind,
        worker=worker,
        started_at=stored_datetime(started),
        finished_at=stored_datetime(finished),
        duration_s=duration,
        outcome=str(outcome),
        final_state=final,
        failure_kind=failure_kind,
        failure_reason=reason,
        fingerprint=fingerprint,
        zero_yield_reason=zero_yield,
        telemetry_events=stored_int(events),
        escalation_events=stored_int(escalations),
        llm_calls=stored_int(calls),
        input_tokens=stored_int(input_tokens),
        output_tokens=stored_int(output_tokens),
        commit_sha=commit,
        transcript_dir=transcript_dir,
        transcript_files=transcript_files(transcript_dir),
    )


def transcript_files(directory: str | None) -> list[str] | None:
    """The transcript files of one attempt (prompt, reply, call.json), when readable here."""
    if not directory:
        return None
    path = Path(directory)
    try:
        return sorted(str(child) for child in path.iterdir() if child.is_file())
    except OSError:
        return None


def _telemetry(
    snapshot: Transaction, tables: set[str], key: dict[str, str]
) -> list[PhaseTelemetryRow]:
    if EVENTS_TABLE not in tables:
        return []
    provenance = PROVENANCE_TABLE in tables
    columns = "p.coefficient_set, p.source" if provenance else "NULL, NULL"
    join = f" LEFT JOIN {PROVENANCE_TABLE} p ON p.event_id = e.event_id" if provenance else ""
    rows = snapshot.all(
        "SELECT e.event_id, e.timestamp, e.model, e.predicted_output_tokens, "
        "e.actual_output_tokens, e.selected_budget, e.actual_max_tokens, e.truncated, "
        f"e.success, e.stop_reason, e.smape_percent, {columns} FROM {EVENTS_TABLE} e{join} "
        "WHERE e.run_id = :run_id AND e.phase_id = :phase_id ORDER BY e.timestamp, e.event_id",
        key,
    )
    return [
        PhaseTelemetryRow(
            event_id=int(row[0]),
            timestamp=stored_datetime(row[1]),
            model=str(row[2]),
            predicted_output_tokens=stored_int(row[3]),
            actual_output_tokens=stored_int(row[4]),
            selected_budget=stored_int(row[5]),
            actual_max_tokens=row[6],
            truncated=bool(stored_bool(row[7])),
            success=bool(stored_bool(row[8])),
            stop_reason=row[9],
            smape_percent=row[10],
            coefficient_set=row[11],
            source=row[12],
        )
        for row in rows
    ]


def _escalations(
    snapshot: Transaction, tables: set[str], key: dict[str, str]
) -> list[PhaseEscalation]:
    if ESCALATIONS_TABLE not in tables:
        return []
    rows = snapshot.all(
        "SELECT event_id, timestamp, attempt_index, reason, was_truncated, retry_max_tokens, "
        f"selected_budget FROM {ESCALATIONS_TABLE} WHERE {_KEY} ORDER BY timestamp, event_id",
        key,
    )
    return [
        PhaseEscalation(
            event_id=int(row[0]),
            timestamp=stored_datetime(row[1]),
            attempt_index=stored_int(row[2]),
            reason=str(row[3]),
            was_truncated=bool(stored_bool(row[4])),
            retry_max_tokens=stored_int(row[5]),
            selected_budget=row[6],
        )
        for row in rows
    ]
