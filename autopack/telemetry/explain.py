"""Why did these drained phases yield no telemetry? Each has one reason, with its evidence.

Reads autopack_drain_results: every attempt autopack made records its zero-yield reason and
the structured facts it was decided from (autopack.telemetry.zero_yield). Nothing is inferred
from output text. An attempt without a reason is one that wrote telemetry, or a dry run.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine

from autopack.db.models import DrainResult, DrainSession, table_of
from autopack.telemetry.zero_yield import ZeroYieldReason

RESULTS = table_of(DrainResult)
SESSIONS = table_of(DrainSession)

# What an operator does about each reason.
REMEDIES: dict[str, str] = {
    ZeroYieldReason.NEVER_REACHED_LLM: "fix what preflight refused (scope, phase spec, dirty "
    "workspace, claim) — the failure reason says which",
    ZeroYieldReason.FAILED_BEFORE_LLM: "the phase failed before the model was called; read the "
    "failure reason",
    ZeroYieldReason.LLM_CALL_FAILED: "the provider never answered usably (timeouts, 5xx, 4xx); "
    "check the LLM settings and the transcript's call.json",
    ZeroYieldReason.TELEMETRY_DISABLED: "the drain ran with --no-telemetry",
    ZeroYieldReason.TELEMETRY_TABLES_MISSING: "the DB has no token_estimation_v2_events: run "
    "`autopack db upgrade`",
    ZeroYieldReason.TELEMETRY_WRITE_REJECTED: "the validity guard refused the row (< 50 output "
    "tokens or no usage): read the reply in the transcript",
    ZeroYieldReason.TELEMETRY_WRITE_FAILED: "writing the row raised: the error is in the "
    "evidence; check the DB schema (`autopack db check`)",
}


class ZeroYieldEntry(BaseModel):
    session_id: str
    seq: int
    run_id: str
    phase_id: str
    reason: str
    outcome: str
    final_state: str | None
    failure_kind: str | None
    failure_reason: str | None
    transcript_dir: str | None
    evidence: dict[str, Any]


class ExplainReport(BaseModel):
    scope: dict[str, str | None]
    attempts: int
    """Drain attempts in scope (dry runs excluded)."""
    with_telemetry: int
    zero_yield: int
    by_reason: dict[str, int]
    remedies: dict[str, str]
    entries: list[ZeroYieldEntry] = Field(default_factory=list)
    unexplained: int = 0
    """Zero-yield attempts without a recorded reason (never for attempts this tool made)."""


def explain_zero_yield(
    engine: Engine, *, session_id: str | None = None, run_id: str | None = None
) -> ExplainReport:
    conditions: list[sa.ColumnElement[bool]] = [RESULTS.c.outcome != "dry_run"]
    if session_id is not None:
        conditions.append(RESULTS.c.session_id == session_id)
    if run_id is not None:
        conditions.append(RESULTS.c.run_id == run_id)
    with engine.connect() as connection:
        attempts, with_telemetry = connection.execute(
            sa.select(
                sa.func.count(), sa.func.count().filter(RESULTS.c.telemetry_events > 0)
            ).where(*conditions)
        ).one()
        rows = connection.execute(
            sa.select(RESULTS)
            .where(*conditions, RESULTS.c.telemetry_events == 0)
            .order_by(
                RESULTS.c.zero_yield_reason,
                RESULTS.c.run_id,
                RESULTS.c.phase_id,
                RESULTS.c.session_id,
                RESULTS.c.seq,
            )
        ).all()
    entries = [
        ZeroYieldEntry(
            session_id=row.session_id,
            seq=row.seq,
            run_id=row.run_id,
            phase_id=row.phase_id,
            reason=row.zero_yield_reason or "unexplained",
            outcome=row.outcome,
            final_state=row.final_state,
            failure_kind=row.failure_kind,
            failure_reason=row.failure_reason,
            transcript_dir=row.transcript_dir,
            evidence=row.facts or {},
        )
        for row in rows
    ]
    counts = Counter(entry.reason for entry in entries)
    return ExplainReport(
        scope={"session_id": session_id, "run_id": run_id},
        attempts=int(attempts),
        with_telemetry=int(with_telemetry),
        zero_yield=len(entries),
        by_reason=dict(sorted(counts.items())),
        remedies={reason: REMEDIES[reason] for reason in counts if reason in REMEDIES},
        entries=entries,
        unexplained=counts.get("unexplained", 0),
    )


def session_exists(engine: Engine, session_id: str) -> bool:
    with engine.connect() as connection:
        found = connection.execute(
            sa.select(SESSIONS.c.id).where(SESSIONS.c.id == session_id)
        ).first()
    return found is not None
