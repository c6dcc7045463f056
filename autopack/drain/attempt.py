"""The types of one phase attempt: how to run it, and what it produced.

Their own module because the attempt (`drain/phase.py`), its steps (`drain/steps.py`) and the batch
controller all build and read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from autopack.db.clock import utc_now
from autopack.drain.report import per_hour, telemetry_per_minute
from autopack.estimator.coefficients import CoefficientSet
from autopack.telemetry.zero_yield import DrainFacts


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
    commit: bool = True
    """In a git workspace: commit each completed phase's files (`--no-commit` turns it off)."""
    ignore_order: bool = False
    """Drain the phase although an earlier phase of its run is not COMPLETE."""
    sandbox: str = "none"
    """How verification runs the model's tests: `none` or `bwrap` (drain/isolation.py)."""
    raise_claim_refusals: bool = False
    """Batch drains raise a refused claim and re-select: the phase or its run was taken or
    changed by another worker since it was selected. `drain phase` records the refusal."""


@dataclass
class PhaseOutcome:
    """What happened to one phase attempt (also what its drain result row holds)."""

    run_id: str
    phase_id: str
    outcome: str
    """complete | failed | timeout | refused | provider_unavailable (an outage: the phase was
    given back unchanged) | abandoned (cancelled by the controller)"""
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
    written_files: dict[str, str] = field(default_factory=dict)
    """Workspace-relative path → sha256 of what autopack wrote (the dirty check's memory)."""
    event_ids: list[int] = field(default_factory=list)
    """The telemetry rows this attempt wrote (linked to its result when it is recorded)."""
    commit: str | None = None
    """The git commit of the phase's files; "" when they are not to be committed (--no-commit,
    or nothing left to commit); None while not committed yet (the next drain commits it)."""
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
            "telemetry_per_hour": per_hour(self.telemetry_events, self.duration_s),
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
            "written_files": self.written_files or None,
            "commit_sha": self.commit,
            "duration_s": round(self.duration_s, 4),
            "llm_seconds": round(self.llm_seconds, 4),
            "started_at": self.started_at or utc_now(),
            "finished_at": self.finished_at or utc_now(),
        }
