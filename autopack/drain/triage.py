"""Sample-first triage and stop conditions: the batch controller's memory, as plain data.

The state is rebuilt from a session's results (replay), so a resumed session continues with
exactly the counters, fingerprints and triage decisions it had, whatever happened to the
process. It is also cached as JSON on the session row for people and tools to read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

# Failure-reason buckets in the order the runbook drains them: unknown first (cheapest to
# learn from), timeouts last (most expensive to retry).
BUCKET_ORDER = ("unknown", "collection", "deliverable", "patch", "other", "timeout")


def failure_bucket(last_failure_reason: str | None) -> str:
    """Which bucket a phase's last failure puts it in (QUEUED phases usually have none)."""
    reason = (last_failure_reason or "").strip().lower()
    if not reason:
        return "unknown"
    if "timeout" in reason or "timed out" in reason:
        return "timeout"
    if "collection" in reason or "import" in reason:
        return "collection"
    if "deliverable" in reason or "missing" in reason:
        return "deliverable"
    if "patch" in reason or "no-op" in reason or "manifest" in reason:
        return "patch"
    return "other"


# Failures whose telemetry row is no clean sample: the reply did not parse, was cut off, or
# its files failed verification (an answered call alone proves nothing about the run).
_UNCLEAN_FAILURES = frozenset({"parse", "truncation", "verification"})


def promising_because(attempt: AttemptSummary) -> str | None:
    """Why a run's sample makes it promising (the drain issue's rule), or None: it succeeded,
    it produced a clean telemetry sample, or it timed out."""
    if attempt.outcome in ("complete", "dry_run"):
        return "succeeded" if attempt.outcome == "complete" else "dry run: counted as succeeded"
    if attempt.outcome == "timeout":
        return "timed out"
    if attempt.telemetry_events > 0 and attempt.failure_kind not in _UNCLEAN_FAILURES:
        return "clean telemetry sample"
    return None


def phase_key(run_id: str, phase_id: str) -> str:
    # phase_id is unique only within a run; the separator cannot occur in either id.
    return f"{run_id}\x1f{phase_id}"


@dataclass(frozen=True)
class Limits:
    """The stop conditions of a batch session (None: no limit)."""

    batch_size: int = 10
    max_total_minutes: float | None = None
    max_timeouts_per_run: int | None = 2
    max_attempts_per_phase: int = 2
    max_fingerprint_repeats: int | None = 3
    max_consecutive_zero_yield: int | None = None
    max_total_tokens: int | None = None
    sample_first: bool = True
    max_provider_failures: int | None = 3
    """Circuit breaker: stop the session after this many provider failures in a row."""


@dataclass(frozen=True)
class AttemptSummary:
    """What triage needs to know about one finished attempt (from a result row or outcome)."""

    run_id: str
    phase_id: str
    outcome: str
    telemetry_events: int
    fingerprint: str | None
    tokens: int
    failure_reason: str | None = None
    failure_kind: str | None = None

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> AttemptSummary:
        """From a result entry (a recorded row, or an outcome's entry)."""
        return cls(
            run_id=entry["run_id"],
            phase_id=entry["phase_id"],
            outcome=entry["outcome"],
            telemetry_events=entry["telemetry_events"],
            fingerprint=entry["fingerprint"],
            tokens=(entry.get("input_tokens") or 0) + (entry.get("output_tokens") or 0),
            failure_reason=entry.get("failure_reason"),
            failure_kind=entry.get("failure_kind"),
        )


class TriageState(BaseModel):
    processed: int = 0
    succeeded: int = 0
    failed: int = 0
    timeouts: int = 0
    refused: int = 0
    dry_run: int = 0
    provider_unavailable: int = 0
    consecutive_provider_failures: int = 0
    last_provider_failure: str | None = None
    telemetry_events: int = 0
    tokens_used: int = 0
    consecutive_zero_yield: int = 0
    elapsed_s: float = 0.0
    fingerprint_counts: dict[str, int] = Field(default_factory=dict)
    sampled_runs: list[str] = Field(default_factory=list)
    promising_runs: list[str] = Field(default_factory=list)
    deprioritized_runs: list[str] = Field(default_factory=list)
    stopped_runs: dict[str, str] = Field(default_factory=dict)
    run_timeouts: dict[str, int] = Field(default_factory=dict)
    phase_attempts: dict[str, int] = Field(default_factory=dict)
    skipped_phases: dict[str, str] = Field(default_factory=dict)
    stop_reason: str | None = None

    def attempts(self, run_id: str, phase_id: str) -> int:
        return self.phase_attempts.get(phase_key(run_id, phase_id), 0)

    def group(self, run_id: str, limits: Limits) -> int:
        """0: not sampled yet; 1: promising; 2: deprioritised. Without sample-first: all 1."""
        if not limits.sample_first:
            return 1
        if run_id in self.deprioritized_runs:
            return 2
        if run_id not in self.sampled_runs:
            return 0
        return 1

    def apply(self, attempt: AttemptSummary, limits: Limits) -> list[str]:
        """Fold one finished attempt in; return the stop events it caused (for the log)."""
        events: list[str] = []
        key = phase_key(attempt.run_id, attempt.phase_id)
        self.processed += 1
        if attempt.outcome == "provider_unavailable":
            # Says nothing about the phase or its run: no attempt counted, no sample judged.
            self.provider_unavailable += 1
            self.consecutive_provider_failures += 1
            self.last_provider_failure = attempt.failure_reason
            return events
        if attempt.outcome not in ("refused", "dry_run"):
            self.consecutive_provider_failures = 0
        self.phase_attempts[key] = self.phase_attempts.get(key, 0) + 1
        self.tokens_used += attempt.tokens
        self.telemetry_events += attempt.telemetry_events
        counter = {
            "complete": "succeeded",
            "timeout": "timeouts",
            "refused": "refused",
            "dry_run": "dry_run",
        }.get(attempt.outcome, "failed")
        setattr(self, counter, getattr(self, counter) + 1)
        if attempt.outcome != "dry_run":
            if attempt.telemetry_events > 0:
                self.consecutive_zero_yield = 0
            else:
                self.consecutive_zero_yield += 1
        seen_before = (
            attempt.fingerprint is not None
            and self.fingerprint_counts.get(attempt.fingerprint, 0) > 0
        )
        if attempt.run_id not in self.sampled_runs:
            self.sampled_runs.append(attempt.run_id)
            events.append(self._evaluate_sample(attempt, seen_before))
        if attempt.outcome == "timeout":
            count = self.run_timeouts.get(attempt.run_id, 0) + 1
            self.run_timeouts[attempt.run_id] = count
            if limits.max_timeouts_per_run is not None and count >= limits.max_timeouts_per_run:
                events.append(
                    self.stop_run(
                        attempt.run_id,
                        f"{count} timeouts (limit {limits.max_timeouts_per_run})",
                    )
                )
        if attempt.fingerprint is not None:
            count = self.fingerprint_counts.get(attempt.fingerprint, 0) + 1
            self.fingerprint_counts[attempt.fingerprint] = count
            limit = limits.max_fingerprint_repeats
            if limit is not None and count >= limit:
                events.append(
                    self.stop_run(
                        attempt.run_id,
                        f"failure fingerprint repeated {count}× (limit {limit}): "
                        f"{attempt.fingerprint[:120]}",
                    )
                )
        return [e for e in events if e]

    def _evaluate_sample(self, attempt: AttemptSummary, fingerprint_seen: bool) -> str:
        """A run's first attempt decides its priority (the runbook's rule, without the
        original's extra leniency for first-time fingerprints)."""
        why = promising_because(attempt)
        if why is not None:
            self.promising_runs.append(attempt.run_id)
            return f"sample {attempt.run_id}: promising ({why})"
        if fingerprint_seen:
            self.deprioritized_runs.append(attempt.run_id)
            return f"sample {attempt.run_id}: deprioritised (zero telemetry, repeated failure)"
        self.promising_runs.append(attempt.run_id)
        return f"sample {attempt.run_id}: failed with a new failure; kept at normal priority"

    def stop_run(self, run_id: str, reason: str) -> str:
        if run_id in self.stopped_runs:
            return ""
        self.stopped_runs[run_id] = reason
        return f"stopped run {run_id}: {reason}"

    def session_stop(self, limits: Limits, elapsed_s: float) -> str | None:
        """The session-level stop condition that holds now, if any."""
        if self.processed >= limits.batch_size:
            return f"batch size {limits.batch_size} reached"
        if limits.max_total_minutes is not None and elapsed_s >= limits.max_total_minutes * 60:
            return f"max total time {limits.max_total_minutes:g} min reached"
        if limits.max_total_tokens is not None and self.tokens_used >= limits.max_total_tokens:
            return f"max total tokens {limits.max_total_tokens:,} reached ({self.tokens_used:,})"
        breaker = limits.max_provider_failures
        if breaker is not None and self.consecutive_provider_failures >= breaker:
            return f"provider unavailable: {self.last_provider_failure or 'no reply'}"[:500]
        zero = limits.max_consecutive_zero_yield
        if zero is not None and self.consecutive_zero_yield >= zero:
            return (
                f"{self.consecutive_zero_yield} consecutive phases with zero telemetry "
                f"(limit {zero})"
            )
        return None
