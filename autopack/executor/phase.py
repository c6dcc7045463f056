"""One phase, end to end (DESIGN §4): claim, estimate, prompt, call, record, write, verify, release.

`drain_one_phase` never leaves a phase claimed: whatever happens after the claim, the phase ends
COMPLETE or FAILED with a reason, the claim is released, and one drain result records the
attempt with the structured facts the zero-yield explanation needs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from autopack.db.models import Phase, PhaseState, TokenBudgetEscalationEvent, table_of, utc_now
from autopack.drain.claims import (
    Claim,
    ClaimRefused,
    PhaseNotFound,
    claim_phase,
    release_phase,
    unclaim,
)
from autopack.drain.fingerprint import failure_fingerprint
from autopack.drain.report import telemetry_per_minute
from autopack.drain.sessions import record_result
from autopack.errors import AutopackError, GuardError
from autopack.estimator import (
    CoefficientSet,
    TokenEstimate,
    estimate,
    phase_category,
    select_budget,
)
from autopack.estimator.active import resolve_coefficients
from autopack.estimator.provider import escalation_budget, provider_max_tokens
from autopack.executor.output import ParsedReply, parse_reply
from autopack.executor.prompts import BuiltPrompt, PhaseSpec, PhaseSpecError, build_prompt
from autopack.executor.transcripts import TranscriptWriter
from autopack.executor.verify import verify_deliverables
from autopack.executor.workspace import WorkspaceError, dirty_scope_paths, write_files_atomically
from autopack.llm.base import LlmCallError, LlmClient, LlmRequest, LlmResult
from autopack.telemetry.recorder import (
    BuilderCall,
    WriteStatus,
    record_builder_call,
    record_failed_call,
)
from autopack.telemetry.zero_yield import DrainFacts, zero_yield_reason

PHASES = table_of(Phase)
ESCALATIONS = table_of(TokenBudgetEscalationEvent)
DEFAULT_MAX_BUILDER_ATTEMPTS = 3


@dataclass(frozen=True)
class PhaseOptions:
    workspace: Path
    coefficients: CoefficientSet
    telemetry_enabled: bool
    telemetry_tables_present: bool
    requeue: bool = False
    allow_dirty: bool = False
    lease_seconds: float = 900.0
    pytest_timeout_s: float = 300.0
    temperature: float | None = None
    phase_timeout_s: float | None = None
    """Wall-clock budget for the whole phase; past it the phase is abandoned as timed out."""
    active_set_model: str | None = None
    """When set, every phase attempt reads the DB's active coefficient set for this model
    (falling back to the built-in default), so a fleet switches cleanly after `calibrate
    apply`; `coefficients` is then only the set shown before the first attempt."""
    raise_claim_refusals: bool = False
    """Batch drains raise a refused claim and re-select: the phase or its run was taken or
    changed by another worker since it was selected. `drain phase` records the refusal."""


@dataclass
class PhaseOutcome:
    """What happened to one phase attempt (also what its drain result row holds)."""

    run_id: str
    phase_id: str
    outcome: str
    """complete | failed | timeout | refused | abandoned (cancelled by the controller)"""
    final_state: str | None
    failure_kind: str | None = None
    failure_reason: str | None = None
    fingerprint: str | None = None
    telemetry_events: int = 0
    escalation_events: int = 0
    llm_calls: int = 0
    llm_attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    zero_yield_reason: str | None = None
    facts: DrainFacts = field(default_factory=DrainFacts)
    transcript_dir: str | None = None
    duration_s: float = 0.0
    llm_seconds: float = 0.0
    files_written: list[str] = field(default_factory=list)
    estimated_tokens: int | None = None
    result_id: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    hint: str | None = None
    """For a refusal: what the operator can do (shown, not stored)."""

    def entry(self) -> dict[str, Any]:
        """The result as reported (the stored values plus what is only shown)."""
        return {
            **self.result_values(),
            "result_id": self.result_id,
            "files_written": self.files_written,
            "estimated_tokens": self.estimated_tokens,
            "telemetry_per_minute": telemetry_per_minute(self.telemetry_events, self.duration_s),
        }

    def result_values(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "phase_id": self.phase_id,
            "outcome": self.outcome,
            "final_state": self.final_state,
            "failure_kind": self.failure_kind,
            "failure_reason": self.failure_reason,
            "fingerprint": self.fingerprint,
            "telemetry_events": self.telemetry_events,
            "escalation_events": self.escalation_events,
            "llm_calls": self.llm_calls,
            "llm_attempts": self.llm_attempts,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "zero_yield_reason": self.zero_yield_reason,
            "facts": self.facts.to_json(),
            "transcript_dir": self.transcript_dir,
            "duration_s": round(self.duration_s, 4),
            "llm_seconds": round(self.llm_seconds, 4),
            "started_at": self.started_at or utc_now(),
            "finished_at": self.finished_at or utc_now(),
        }


class _Cancelled(Exception):
    """Internal: the controller abandoned this phase; stop without writing anything more."""


class _PhaseFailed(Exception):
    """Internal: ends the pipeline with a FAILED phase of a known kind."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


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


def drain_one_phase(
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
        step = _Steps(engine, client, spec, row, options, outcome, transcripts, deadline, cancelled)
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
    except _Cancelled:
        outcome.outcome = "abandoned"
        return outcome
    except GuardError as exc:
        _refused(outcome, "preflight", exc.message, exc.hint)
    except _PhaseFailed as exc:
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


@dataclass
class _Steps:
    """The steps after the claim, sharing one phase's context; deadline-aware."""

    engine: Engine
    client: LlmClient
    spec: PhaseSpec
    row: sa.Row[Any]
    options: PhaseOptions
    outcome: PhaseOutcome
    transcripts: TranscriptWriter
    deadline: float | None
    cancelled: threading.Event | None

    def _checkpoint(self, step: str) -> float | None:
        """Stop if cancelled or out of time; return the seconds left (None: no deadline)."""
        if self.cancelled is not None and self.cancelled.is_set():
            raise _Cancelled
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _PhaseFailed(
                "timeout",
                f"phase timed out after {self.options.phase_timeout_s:g} s (before {step})",
            )
        return left

    def build(self) -> None:
        if self.options.active_set_model is not None:
            # One read per attempt: every call of this attempt uses the same set, and an
            # apply between two attempts takes effect at the next one.
            active = resolve_coefficients(self.engine, model=self.options.active_set_model)
            self.options = replace(self.options, coefficients=active)
        spec, row, options = self.spec, self.row, self.options
        complexity = row.complexity or "medium"
        category = phase_category(row.task_category, list(spec.deliverables))
        predicted = estimate(
            list(spec.deliverables),
            category,
            complexity,
            coefficients=options.coefficients,
            workspace=options.workspace,
            task_description=spec.description,
            scope_paths=list(spec.scope_paths),
        )
        self.outcome.estimated_tokens = predicted.estimated_tokens
        budget = select_budget(predicted, complexity, coefficients=options.coefficients)
        max_tokens = provider_max_tokens(
            budget,
            complexity,
            coefficients=options.coefficients,
            task_category=row.task_category,
            scope_paths=list(spec.scope_paths),
            builder_mode=row.builder_mode,
        ).max_tokens
        prompt = build_prompt(spec, options.workspace)
        parsed = self.call_builder(predicted, budget, max_tokens, prompt)
        self._checkpoint("writing files")
        try:
            written = write_files_atomically(parsed.files, spec.scope_paths, options.workspace)
        except WorkspaceError as exc:
            raise _PhaseFailed("scope", exc.message) from exc
        self.outcome.files_written = [str(p.relative_to(options.workspace)) for p in written]
        left = self._checkpoint("verification")
        pytest_timeout = (
            options.pytest_timeout_s if left is None else min(options.pytest_timeout_s, left)
        )
        verification = verify_deliverables(
            list(spec.deliverables),
            options.workspace,
            is_tests_phase=spec.is_tests_phase,
            pytest_timeout_s=pytest_timeout,
        )
        self._checkpoint("recording the verification")
        if not verification.ok:
            raise _PhaseFailed("verification", verification.failure_reason or "verification failed")

    def call_builder(
        self, predicted: TokenEstimate, budget: int, max_tokens: int, prompt: BuiltPrompt
    ) -> ParsedReply:
        """Call the model, escalating once on truncation; return the parsed reply or fail."""
        outcome, facts = self.outcome, self.outcome.facts
        max_attempts = self.row.max_builder_attempts or DEFAULT_MAX_BUILDER_ATTEMPTS
        escalated = False
        attempt = 0
        while True:
            attempt += 1
            self._checkpoint("the builder call")
            self.transcripts.write_prompt(attempt, prompt, max_tokens)
            request = LlmRequest(
                system=prompt.system,
                prompt=prompt.user,
                max_tokens=max_tokens,
                temperature=self.options.temperature,
                deadline=self.deadline,
            )
            facts.provider_called = True
            outcome.llm_calls += 1
            try:
                result = self.client.complete(request)
            except LlmCallError as exc:
                error_text = record_failed_call(
                    self.engine,
                    run_id=self.spec.run_id,
                    phase_id=self.spec.phase_id,
                    provider=exc.provider,
                    model=exc.model,
                    phase_type=self.row.phase_type,
                    attempts=tuple(asdict(a) for a in exc.attempts),
                )
                if error_text is not None:
                    facts.usage_write_error = error_text
                outcome.llm_attempts += len(exc.attempts)
                outcome.llm_seconds += sum(a.latency_s for a in exc.attempts)
                self.transcripts.write_error(attempt, exc)
                if exc.answered:
                    facts.answered_calls += 1
                    facts.guard_rejections += 1
                    facts.last_rejection = "the reply body was malformed (no usage to record)"
                else:
                    facts.failed_calls += 1
                self._checkpoint("handling the failed builder call")
                raise _PhaseFailed("llm_call", exc.message) from exc
            facts.answered_calls += 1
            outcome.llm_attempts += len(result.attempts)
            outcome.llm_seconds += result.elapsed_s
            outcome.input_tokens += result.input_tokens or 0
            outcome.output_tokens += result.output_tokens or 0
            self.transcripts.write_reply(attempt, result)
            parsed = parse_reply(result.text)
            # A truncated reply is an incomplete change set: never a builder success.
            self.record(predicted, budget, result, success=parsed.ok and not result.truncated)
            if result.truncated:
                if escalated or attempt >= max_attempts:
                    detail = (
                        "after one escalation"
                        if escalated
                        else f"(attempt {attempt} of {max_attempts})"
                    )
                    raise _PhaseFailed(
                        "truncation",
                        f"builder output truncated at max_tokens={result.max_tokens} {detail}",
                    )
                max_tokens = self.escalate(attempt, budget, result)
                escalated = True
                continue
            if not parsed.ok:
                raise _PhaseFailed("parse", parsed.failure_reason or "the reply held no files")
            return parsed

    def record(
        self, predicted: TokenEstimate, budget: int, result: LlmResult, *, success: bool
    ) -> None:
        write = record_builder_call(
            self.engine,
            BuilderCall(
                run_id=self.spec.run_id,
                phase_id=self.spec.phase_id,
                provider=result.provider,
                model=result.model,
                estimate=predicted,
                selected_budget=budget,
                max_tokens_sent=result.max_tokens,
                input_tokens=result.input_tokens,
                output_tokens=result.output_tokens,
                stop_reason=result.stop_reason,
                truncated=result.truncated,
                success=success,
                phase_type=self.row.phase_type,
                attempts=tuple(asdict(a) for a in result.attempts),
            ),
            enabled=self.options.telemetry_enabled,
            tables_present=self.options.telemetry_tables_present,
        )
        facts = self.outcome.facts
        if write.usage_error is not None:
            facts.usage_write_error = write.usage_error
        if write.status is WriteStatus.WRITTEN:
            facts.rows_written += 1
            self.outcome.telemetry_events += 1
        elif write.status is WriteStatus.REJECTED:
            facts.guard_rejections += 1
            facts.last_rejection = write.detail
        elif write.status is WriteStatus.FAILED:
            facts.write_errors += 1
            facts.last_write_error = write.detail

    def escalate(self, attempt: int, budget: int, result: LlmResult) -> int:
        """Escalate once (budget × factor, capped), record the decision; return the new ceiling."""
        options = self.options
        escalation = escalation_budget(
            selected_budget=budget,
            actual_max_tokens=result.max_tokens,
            actual_output_tokens=result.output_tokens,
            complexity=str(self.spec.complexity or "medium"),
            coefficients=options.coefficients,
        )
        if options.telemetry_enabled and options.telemetry_tables_present:
            utilisation = (
                100.0 * (result.output_tokens or 0) / result.max_tokens
                if result.max_tokens
                else None
            )
            with self.engine.begin() as connection:
                connection.execute(
                    sa.insert(ESCALATIONS).values(
                        run_id=self.spec.run_id,
                        phase_id=self.spec.phase_id,
                        timestamp=utc_now(),
                        attempt_index=attempt,
                        reason="truncation",
                        was_truncated=True,
                        output_utilization=utilisation,
                        escalation_factor=options.coefficients.budget.escalation_factor,
                        base_value=escalation.base,
                        base_source=escalation.base_source,
                        retry_max_tokens=escalation.retry_budget,
                        selected_budget=budget,
                        actual_max_tokens=result.max_tokens,
                        tokens_used=result.output_tokens,
                    )
                )
            self.outcome.escalation_events += 1
        return escalation.retry_budget
