"""Draining one phase (DESIGN §4): claim, run the steps, release, record.

`drain_phase` is `autopack drain phase`: a session of one attempt. `attempt_phase` is one
attempt (the batch controller runs many in one session); it never leaves a phase claimed:
whatever happens after the claim, the phase ends COMPLETE or FAILED with a reason, the claim is
released, and one drain result records the attempt with the structured facts the zero-yield
explanation needs. The steps between claim and release (estimate, prompt, call, record
telemetry, write, verify) are `drain/steps.py`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from autopack.db.clock import utc_now
from autopack.db.lookup import require_known_phase
from autopack.db.models import Phase, PhaseState, table_of
from autopack.db.retry import retrying
from autopack.drain.attempt import PhaseOptions, PhaseOutcome
from autopack.drain.claims import (
    Claim,
    ClaimRefused,
    PhaseNotFound,
    claim_phase,
    unclaim,
)
from autopack.drain.fingerprint import failure_fingerprint
from autopack.drain.finish import finish_attempt
from autopack.drain.gitwork import NOT_COMMITTED, commit_result, is_git_workspace, own_files
from autopack.drain.report import DrainReport, summarise
from autopack.drain.selection import scope_is_independent, unfinished_predecessors
from autopack.drain.sessions import finish_session, start_session, worker_name
from autopack.drain.steps import PhaseCancelled, PhaseFailed, PhaseSteps, ProviderUnavailable
from autopack.errors import AutopackError, GuardError
from autopack.executor.git import GitError
from autopack.executor.prompts import PhaseSpec, PhaseSpecError
from autopack.executor.rollback import restore
from autopack.executor.transcripts import TranscriptWriter
from autopack.executor.workspace import dirty_scope_paths
from autopack.llm.base import LlmClient
from autopack.telemetry.zero_yield import zero_yield_reason

PHASES = table_of(Phase)


def drain_phase(
    engine: Engine, client: LlmClient, run_id: str, phase_id: str, options: PhaseOptions
) -> DrainReport:
    """Drain one phase end to end in a session of its own; the report of that session.

    The phase ends COMPLETE, FAILED with a reason, or refused (`report.refused`, with
    `report.hint`); `report.exit_code` is the command's. Raises PhaseNotFound for a phase
    that does not exist. A crash or Ctrl-C marks the session failed and is raised again.
    """
    with engine.connect() as connection:
        require_known_phase(connection, run_id, phase_id)  # nothing written for a typo
    session_id = start_session(
        engine,
        kind="phase",
        options={
            "run_id": run_id,
            "phase_id": phase_id,
            "workspace": str(options.workspace),
            "requeue": options.requeue,
            "coefficients": options.coefficients.name,
        },
        telemetry_enabled=options.telemetry_enabled,
    )
    try:
        outcome = attempt_phase(
            engine, client, run_id, phase_id, options, session_id=session_id, worker=worker_name()
        )
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: resumable, like a batch
        finish_session(engine, session_id, status="interrupted")
        raise
    except BaseException:
        finish_session(engine, session_id, status="failed")
        raise
    finish_session(engine, session_id, status="completed")
    return summarise(
        session_id,
        [outcome.entry()],
        kind="phase",
        telemetry_enabled=options.telemetry_enabled,
        hint=outcome.hint,
    )


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
    on_recorded: Callable[[PhaseOutcome], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> PhaseOutcome:
    """Drain one phase; record and return its outcome.

    The phase's new state, its drain result, its claim release and its telemetry link commit
    in one transaction (`drain/finish.py`); `on_recorded` sees the outcome right after, in the
    order results are numbered. In a git workspace the phase's files are then committed (one
    commit per completed phase) or, when it failed, put back as they were.

    Raises PhaseNotFound for a phase that does not exist (there is no attempt to record), and
    ClaimRefused when `options.raise_claim_refusals` (a batch lost a race for the phase).
    If `cancelled` is set while it runs (the controller abandoned it), nothing more is
    written: no files, no result; a claim still held is given back. If the claim was lost
    meanwhile (its lease expired and the phase was recovered), the outcome is "abandoned" and
    nothing is recorded either. A provider outage gives the phase back unchanged and is
    recorded as `provider_unavailable`.
    """
    started = clock()
    deadline = started + options.phase_timeout_s if options.phase_timeout_s else None
    outcome = PhaseOutcome(run_id, phase_id, "refused", None, started_at=utc_now())
    outcome.facts.telemetry_enabled = options.telemetry_enabled
    outcome.facts.telemetry_tables_present = options.telemetry_tables_present
    claim: Claim | None = None
    step: PhaseSteps | None = None
    in_git = is_git_workspace(options.workspace)
    try:
        spec, row = load_phase_spec(engine, run_id, phase_id)
        outcome.final_state = row.state
        _preflight(engine, spec, row, options, in_git=in_git)
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
    except GuardError as exc:
        _refused(outcome, "preflight", exc.message, exc.hint)
    except ProviderUnavailable as exc:
        outcome.outcome = "provider_unavailable"
        outcome.final_state = claim.previous_state if claim is not None else outcome.final_state
        outcome.failure_kind, outcome.failure_reason = "provider", exc.reason
    except PhaseFailed as exc:
        outcome.outcome = "timeout" if exc.kind == "timeout" else "failed"
        outcome.final_state = PhaseState.FAILED.value
        outcome.failure_kind, outcome.failure_reason = exc.kind, exc.reason
    except (AutopackError, OSError) as exc:
        outcome.outcome, outcome.final_state = "failed", PhaseState.FAILED.value
        message = exc.message if isinstance(exc, AutopackError) else str(exc)
        outcome.failure_kind, outcome.failure_reason = "exception", message
    except BaseException:
        # Ctrl-C, or a bug: the phase goes back as it was, and nothing is recorded.
        if claim is not None:
            unclaim(engine, claim)
        outcome.outcome = "abandoned"
        raise
    finally:
        if outcome.outcome != "complete" and in_git and step is not None and step.snapshot:
            restore(step.snapshot)  # the next attempt starts from the scope as it was
            outcome.written_files = {}
    outcome.duration_s = clock() - started
    outcome.finished_at = utc_now()
    if cancelled is not None and cancelled.is_set():
        if claim is not None:
            unclaim(engine, claim)  # a no-op when the controller already released it
        outcome.outcome = "abandoned"
        return outcome
    if outcome.outcome == "abandoned":
        return outcome
    reason = zero_yield_reason(outcome.facts)
    outcome.zero_yield_reason = reason.value if reason else None
    if outcome.outcome not in ("complete", "provider_unavailable"):
        outcome.fingerprint = failure_fingerprint(
            outcome.final_state or "UNKNOWN", outcome.failure_kind, outcome.failure_reason
        )
    if in_git and not options.commit and outcome.written_files:
        outcome.commit = NOT_COMMITTED  # the operator commits these; no later drain does
    try:
        recorded = finish_attempt(
            engine,
            session_id,
            outcome,
            claim,
            give_back=outcome.outcome == "provider_unavailable",
            on_recorded=on_recorded,
        )
    except BaseException:
        # Nothing of the ending was committed: give the phase (and its scope) back as it was.
        if in_git and step is not None and step.snapshot:
            restore(step.snapshot)
        if claim is not None:
            with contextlib.suppress(Exception):
                unclaim(engine, claim)
        raise
    if not recorded:
        # The claim was lost (recovered after its lease expired): this attempt leaves nothing.
        if in_git and step is not None and step.snapshot:
            restore(step.snapshot)
        outcome.outcome = "abandoned"
        return outcome
    if outcome.outcome == "complete" and in_git and options.commit and outcome.written_files:
        _commit(engine, options, outcome, session_id)
    return outcome


def _commit(engine: Engine, options: PhaseOptions, outcome: PhaseOutcome, session: str) -> None:
    """Commit a recorded phase's files; a failed commit is left for the next drain."""
    assert outcome.result_id is not None
    try:
        outcome.commit = commit_result(
            engine,
            options.workspace,
            outcome.result_id,
            outcome.run_id,
            outcome.phase_id,
            session,
            outcome.written_files,
        )
    except GitError as exc:
        outcome.hint = f"not committed ({exc.message}); the next drain commits it"


def _refused(outcome: PhaseOutcome, kind: str, reason: str, hint: str | None) -> None:
    outcome.outcome = "refused"
    outcome.failure_kind, outcome.failure_reason, outcome.hint = kind, reason, hint


def _preflight(
    engine: Engine, spec: PhaseSpec, row: sa.Row[Any], options: PhaseOptions, *, in_git: bool
) -> None:
    if not spec.deliverables:
        raise PhaseSpecError(f"phase {spec.phase_id!r} lists no deliverables in its scope.")
    if not options.ignore_order and not scope_is_independent(row.scope):
        with engine.connect() as connection:
            waiting = unfinished_predecessors(connection, spec.run_id, row.phase_index or 0)
        if waiting:
            before = ", ".join(f"{phase_id} ({state})" for phase_id, state in waiting[:3])
            raise GuardError(
                f"phase {spec.phase_id!r} of run {spec.run_id!r} waits behind earlier phases "
                f"that are not COMPLETE: {before}"
                + (f" and {len(waiting) - 3} more" if len(waiting) > 3 else "")
                + ".",
                hint="drain them first (a run's phases build on each other), or pass "
                "--ignore-order",
            )
    if not options.allow_dirty and in_git:
        ours = own_files(engine, options.workspace)
        dirty = dirty_scope_paths(spec.scope_paths, options.workspace, ours)
        if dirty:
            raise GuardError(
                f"scope paths with uncommitted changes: {', '.join(dirty)}.",
                hint="commit or stash them first, or pass --allow-dirty",
            )
