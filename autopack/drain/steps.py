"""The steps of one claimed phase: estimate, prompt, call the builder, record, write, verify.

The executor's pure pieces (prompt, reply parsing, workspace, verification) joined to the LLM
client and the telemetry recorder. The claim around these steps is `drain/phase.py`'s.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from autopack.db.clock import utc_now
from autopack.db.models import TokenBudgetEscalationEvent, table_of
from autopack.db.retry import run_retrying
from autopack.drain.attempt import PhaseOptions, PhaseOutcome
from autopack.drain.isolation import database_files
from autopack.estimator import TokenEstimate, estimate, phase_category, select_budget
from autopack.estimator.active import resolve_coefficients
from autopack.estimator.provider import Escalation, escalation_budget, provider_max_tokens
from autopack.executor.output import ChangeSet, parse_reply
from autopack.executor.prompts import BuiltPrompt, PhaseSpec, build_prompt
from autopack.executor.rollback import Snapshot, take_snapshot
from autopack.executor.sandbox import bwrap_prefix, find_bwrap
from autopack.executor.transcripts import TranscriptWriter
from autopack.executor.verify import verify_deliverables
from autopack.executor.workspace import WorkspaceError, file_sha256, write_files_atomically
from autopack.llm.base import LlmCallError, LlmClient, LlmRequest, LlmResult
from autopack.telemetry.recorder import (
    BuilderCall,
    WriteStatus,
    record_builder_call,
    record_failed_call,
)
from autopack.telemetry.seal import tampered_rows
from autopack.text import valid_unicode

ESCALATIONS = table_of(TokenBudgetEscalationEvent)
logger = logging.getLogger("autopack.drain")
DEFAULT_MAX_BUILDER_ATTEMPTS = 3


class PhaseCancelled(Exception):
    """The controller abandoned this phase: stop without writing anything more."""


class ProviderUnavailable(Exception):
    """The builder could not be reached or refused us (not the phase): give the phase back."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Statuses that say the provider refused *us* (key, permission, model name), not the request.
_PROVIDER_STATUSES = frozenset({401, 403, 404})


def is_provider_failure(error: LlmCallError) -> bool:
    """A failed call that says nothing about the phase: transport errors, 401/403, 404 (model
    not found), and 429/5xx once the retries are spent. A 400 (e.g. a prompt too long) or a
    malformed 2xx body is about the request, so it fails the phase as before."""
    if error.kind in ("connection_exhausted", "timeout_exhausted"):
        return True
    if error.kind in ("http_5xx_exhausted", "rate_limited_exhausted"):
        return True
    return error.kind == "http_4xx" and error.status in _PROVIDER_STATUSES


class PhaseFailed(Exception):
    """Ends the steps with a FAILED phase of a known kind."""

    def __init__(self, kind: str, reason: str) -> None:
        reason = valid_unicode(reason)  # it is stored, printed and fingerprinted
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True)
class Forecast:
    """What the estimator predicts for a phase, and the budgets it selects."""

    estimate: TokenEstimate
    budget: int
    max_tokens: int


def predict(spec: PhaseSpec, row: sa.Row[Any], options: PhaseOptions) -> Forecast:
    """Predicted output tokens, the selected budget and the provider ceiling (no DB, no LLM:
    a dry run's plan shows the same figures the real attempt will use)."""
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
    budget = select_budget(predicted, complexity, coefficients=options.coefficients)
    max_tokens = provider_max_tokens(
        budget,
        complexity,
        coefficients=options.coefficients,
        task_category=row.task_category,
        scope_paths=list(spec.scope_paths),
        builder_mode=row.builder_mode,
    ).max_tokens
    return Forecast(predicted, budget, max_tokens)


@dataclass
class PhaseSteps:
    """The steps after the claim, sharing one phase's context; deadline-aware.

    Estimate and budget, prompt, builder call (escalating once on truncation), telemetry at
    that boundary, writing the files, verification. Any end but success raises `PhaseFailed`
    (or `PhaseCancelled`); what happened is written onto `outcome` as it happens.
    """

    engine: Engine
    client: LlmClient
    spec: PhaseSpec
    row: sa.Row[Any]
    options: PhaseOptions
    outcome: PhaseOutcome
    transcripts: TranscriptWriter
    deadline: float | None
    cancelled: threading.Event | None
    snapshot: Snapshot | None = field(default=None, init=False)
    """The written files as they were before (restored if the phase fails in git)."""

    def _checkpoint(self, step: str) -> float | None:
        """Stop if cancelled or out of time; return the seconds left (None: no deadline)."""
        if self.cancelled is not None and self.cancelled.is_set():
            raise PhaseCancelled
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise PhaseFailed(
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
        spec, options = self.spec, self.options
        forecast = predict(spec, self.row, options)
        predicted, budget, max_tokens = forecast.estimate, forecast.budget, forecast.max_tokens
        self.outcome.estimated_tokens = predicted.estimated_tokens
        prompt = build_prompt(spec, options.workspace)
        parsed = self.call_builder(predicted, budget, max_tokens, prompt)
        self._checkpoint("writing files")
        self.snapshot = take_snapshot((path for path, _ in parsed.files), options.workspace)
        try:
            written = write_files_atomically(parsed.files, spec.scope_paths, options.workspace)
        except WorkspaceError as exc:
            raise PhaseFailed("scope", exc.message) from exc
        self.outcome.files_written = [str(p.relative_to(options.workspace)) for p in written]
        self.outcome.written_files = {
            relative: sha
            for relative, sha in (
                (relative, file_sha256(options.workspace / relative))
                for relative in self.outcome.files_written
            )
            if sha is not None
        }
        left = self._checkpoint("verification")
        pytest_timeout = (
            options.pytest_timeout_s if left is None else min(options.pytest_timeout_s, left)
        )
        verification = verify_deliverables(
            list(spec.deliverables),
            options.workspace,
            is_tests_phase=spec.is_tests_phase,
            pytest_timeout_s=pytest_timeout,
            sandbox=self._sandbox() if spec.is_tests_phase else (),
        )
        if spec.is_tests_phase:
            self._check_seals()
        self._checkpoint("recording the verification")
        if not verification.ok:
            raise PhaseFailed("verification", verification.failure_reason or "verification failed")

    def _sandbox(self) -> list[str]:
        """The command prefix confining the model's tests (none: run them directly)."""
        if self.options.sandbox != "bwrap":
            return []
        bwrap = find_bwrap()
        if bwrap is None:
            raise PhaseFailed("sandbox", "--sandbox bwrap: bubblewrap (bwrap) is no longer on PATH")
        return bwrap_prefix(bwrap, self.options.workspace, database_files(self.engine))

    def _check_seals(self) -> None:
        """The model's code has run: every telemetry row this process wrote must be as written."""
        problems = tampered_rows(self.engine)
        if problems:
            detail = "; ".join(problems[:5]) + (" …" if len(problems) > 5 else "")
            logger.error(
                "TAMPERING: while %s / %s ran its tests, %s. The model's code changed the "
                "telemetry database; inspect it before trusting its figures.",
                self.spec.run_id,
                self.spec.phase_id,
                detail,
            )
            raise PhaseFailed(
                "tamper",
                f"telemetry rows changed while the phase's tests ran ({detail}); "
                "the model's code wrote to the database",
            )

    def call_builder(
        self, predicted: TokenEstimate, budget: int, max_tokens: int, prompt: BuiltPrompt
    ) -> ChangeSet:
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
                if is_provider_failure(exc):
                    raise ProviderUnavailable(exc.message) from exc
                raise PhaseFailed("llm_call", exc.message) from exc
            facts.answered_calls += 1
            outcome.llm_attempts += len(result.attempts)
            outcome.llm_seconds += result.elapsed_s
            outcome.input_tokens += result.input_tokens or 0
            outcome.output_tokens += result.output_tokens or 0
            parsed = parse_reply(result.text)
            # A truncated reply is an incomplete change set: never a builder success. The row
            # is written first: nothing after the reply (a transcript on a full disk, the
            # model's own code) can keep an answered call from being recorded.
            self.record(predicted, budget, result, success=parsed.ok and not result.truncated)
            self.transcripts.write_reply(attempt, result)
            if result.truncated:
                if escalated or attempt >= max_attempts:
                    detail = (
                        "after one escalation"
                        if escalated
                        else f"(attempt {attempt} of {max_attempts})"
                    )
                    raise PhaseFailed(
                        "truncation",
                        f"builder output truncated at max_tokens={result.max_tokens} {detail}",
                    )
                max_tokens = self.escalate(attempt, budget, result)
                escalated = True
                continue
            if not parsed.ok:
                raise PhaseFailed("parse", parsed.failure_reason or "the reply held no files")
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
            if write.event_id is not None:
                self.outcome.event_ids.append(write.event_id)
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
            run_retrying(
                lambda: self._insert_escalation(attempt, budget, result, escalation, utilisation),
                what="record a budget escalation",
            )
            self.outcome.escalation_events += 1
        return escalation.retry_budget

    def _insert_escalation(
        self,
        attempt: int,
        budget: int,
        result: LlmResult,
        escalation: Escalation,
        utilisation: float | None,
    ) -> None:
        options = self.options
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
