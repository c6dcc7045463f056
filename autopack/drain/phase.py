"""One phase attempt, end to end (DESIGN §4): claim, run the steps, release, record.

`attempt_phase` never leaves a phase claimed: whatever happens after the claim, the phase ends
COMPLETE or FAILED with a reason, the claim is released, and one drain result records the
attempt with the structured facts the zero-yield explanation needs. The steps between claim and
release (estimate, prompt, call, record telemetry, write, verify) are `drain/steps.py`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from autopack.db.models import Phase, PhaseState, table_of, utc_now
from autopack.db.retry import retrying
from autopack.drain.attempt import PhaseOptions, PhaseOutcome
from autopack.drain.claims import (
    Claim,
    ClaimRefused,
    PhaseNotFound,
    claim_phase,
    release_phase,
    unclaim,
)
from autopack.drain.fingerprint import failure_fingerprint
from autopack.drain.sessions import record_result
from autopack.drain.steps import PhaseCancelled, PhaseFailed, PhaseSteps
from autopack.errors import AutopackError, GuardError
from autopack.executor.prompts import PhaseSpec, PhaseSpecError
from autopack.executor.transcripts import TranscriptWriter
from autopack.executor.workspace import dirty_scope_paths
from autopack.llm.base import LlmClient
from autopack.telemetry.zero_yield import zero_yield_reason

PHASES = table_of(Phase)


@retrying("read the phase")
def load_phase_spec(engine: Engine, run_id: str, phase_id: str) -> tuple[PhaseSpec, sa.Row[Any]]:
    with engine.connect() as connection:
        row = connection.execute(
            sa.select(PHASES).where(PHASES.c.run_id == run_id, PHASES.c.phase_id == phase_id)
        ).first()
    if row is None:
        raise PhaseNotFound(run_id, phase_id)
    spec = PhaseSpec.from_scope(
        run_id=run_id,
        phase_id=phase_id,
        name=row.name,
        description=row.description or "",
        task_category=row.task_category,
        complexity=row.complexity,
        scope=row.scope,
    )
    return spec, row


def attempt_phase(
    engine: Engine,
    client: LlmClient,
    run_id: str,
    phase_id: str,
    options: PhaseOptions,
    *,
    session_id: str,
    worker: str,
    cancelled: threading.Event | None = None,
    record: bool = True,
    clock: Callable[[], float] = time.monotonic,
) -> PhaseOutcome:
    """Drain one phase; record and return its outcome.

    Raises PhaseNotFound for a phase that does not exist (there is no attempt to record), and
    ClaimRefused when `options.raise_claim_refusals` (a batch lost a race for the phase).
    If `cancelled` is set while it runs (the controller abandoned it), nothing more is
    written: no files, no result; a claim still held is given back. If the claim was lost
    meanwhile (its lease expired and the phase was recovered), the outcome is "abandoned" and
    nothing is recorded either. `record=False` leaves recording the result to the caller (the
    batch controller records every result from one thread, in the order it folds them).
    """
    started = clock()
    deadline = started + options.phase_timeout_s if options.phase_timeout_s else None
    outcome = PhaseOutcome(run_id, phase_id, "refused", None, started_at=utc_now())
    outcome.facts.telemetry_enabled = options.telemetry_enabled
    outcome.facts.telemetry_tables_present = options.telemetry_tables_present
    claim: Claim | None = None
    try:
        spec, row = load_phase_spec(engine, run_id, phase_id)
        outcome.final_state = row.state
        _preflight(spec, options)
        claim = claim_phase(
            engine,
            run_id,
            phase_id,
            worker=worker,
            session_id=session_id,
            lease_seconds=options.lease_seconds,
            requeue_failed=options.requeue,
        )
        outcome.facts.preflight_passed = True
        transcripts = TranscriptWriter.for_phase(options.workspace, session_id, run_id, phase_id)
        outcome.transcript_dir = str(transcripts.directory)
        step = PhaseSteps(
            engine, client, spec, row, options, outcome, transcripts, deadline, cancelled
        )
        step.build()
        outcome.outcome, outcome.final_state = "complete", PhaseState.COMPLETE.value
    except PhaseSpecError as exc:
        _refused(outcome, "invalid_phase", exc.message, exc.hint)
    except PhaseNotFound:
        raise
    except ClaimRefused as exc:
        if options.raise_claim_refusals:
            raise
        _refused(outcome, "preflight", exc.message, exc.hint)
    except PhaseCancelled:
        outcome.outcome = "abandoned"
        return outcome
    except GuardError as exc:
        _refused(outcome, "preflight", exc.message, exc.hint)
    except PhaseFailed as exc:
        outcome.outcome = "timeout" if exc.kind == "timeout" else "failed"
        outcome.final_state = PhaseState.FAILED.value
        outcome.failure_kind, outcome.failure_reason = exc.kind, exc.reason
    except (AutopackError, OSError) as exc:
        outcome.outcome, outcome.final_state = "failed", PhaseState.FAILED.value
        message = exc.message if isinstance(exc, AutopackError) else str(exc)
        outcome.failure_kind, outcome.failure_reason = "exception", message
    finally:
        lost = False
        if claim is not None and cancelled is not None and cancelled.is_set():
            unclaim(engine, claim)  # a no-op when the controller already released it
            lost = True
        elif claim is not None:
            lost = not release_phase(
                engine,
                claim,
                final_state=PhaseState(outcome.final_state or PhaseState.FAILED.value),
                failure_reason=outcome.failure_reason,
                builder_attempts=outcome.llm_calls,
                tokens_used=outcome.input_tokens + outcome.output_tokens,
            )
    outcome.duration_s = clock() - started
    outcome.finished_at = utc_now()
    if lost or (cancelled is not None and cancelled.is_set()):
        outcome.outcome = "abandoned"
        return outcome
    reason = zero_yield_reason(outcome.facts)
    outcome.zero_yield_reason = reason.value if reason else None
    if outcome.outcome != "complete":
        outcome.fingerprint = failure_fingerprint(
            outcome.final_state or "UNKNOWN", outcome.failure_kind, outcome.failure_reason
        )
    if record:
        outcome.result_id = record_result(engine, session_id, outcome.result_values())
    return outcome


def _refused(outcome: PhaseOutcome, kind: str, reason: str, hint: str | None) -> None:
    outcome.outcome = "refused"
    outcome.failure_kind, outcome.failure_reason, outcome.hint = kind, reason, hint


def _preflight(spec: PhaseSpec, options: PhaseOptions) -> None:
    if not spec.deliverables:
        raise PhaseSpecError(f"phase {spec.phase_id!r} lists no deliverables in its scope.")
    if not options.allow_dirty:
        dirty = dirty_scope_paths(spec.scope_paths, options.workspace)
        if dirty:
            raise GuardError(
                f"scope paths with uncommitted changes: {', '.join(dirty)}.",
                hint="commit or stash them first, or pass --allow-dirty",
            )
