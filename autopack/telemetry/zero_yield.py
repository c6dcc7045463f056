"""Why a drained phase produced no telemetry: exactly one reason, from recorded facts.

The reason is decided from structured facts collected while draining (DrainFacts), never by
reading a process's output (the original grepped stdout and often ended at "unknown").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any


class ZeroYieldReason(StrEnum):
    NEVER_REACHED_LLM = "never_reached_llm"
    """Refused at preflight: claim, scope, phase validation, dirty workspace."""
    FAILED_BEFORE_LLM = "failed_before_llm"
    """Passed preflight, then failed before the model was invoked (prompt, estimate, config)."""
    LLM_CALL_FAILED = "llm_call_failed"
    """The provider was called but never answered with a usable 2xx reply."""
    TELEMETRY_DISABLED = "telemetry_disabled"
    TELEMETRY_TABLES_MISSING = "telemetry_tables_missing"
    TELEMETRY_WRITE_REJECTED = "telemetry_write_rejected"
    """Answered, but the row was refused by the validity guard (< 50 output tokens, no usage)."""
    TELEMETRY_WRITE_FAILED = "telemetry_write_failed"
    """Answered, but writing the row raised."""


@dataclass
class DrainFacts:
    """What happened to one phase attempt, as far as telemetry is concerned."""

    preflight_passed: bool = False
    provider_called: bool = False
    answered_calls: int = 0
    failed_calls: int = 0
    telemetry_enabled: bool = True
    telemetry_tables_present: bool = True
    rows_written: int = 0
    guard_rejections: int = 0
    write_errors: int = 0
    last_write_error: str | None = None
    last_rejection: str | None = None
    usage_write_error: str | None = None
    """The llm_usage_events ledger row could not be written (reported; not a zero-yield cause)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def zero_yield_reason(facts: DrainFacts) -> ZeroYieldReason | None:
    """None when the attempt wrote telemetry; otherwise the one reason it did not."""
    if facts.rows_written > 0:
        return None
    if not facts.preflight_passed:
        return ZeroYieldReason.NEVER_REACHED_LLM
    if not facts.provider_called:
        return ZeroYieldReason.FAILED_BEFORE_LLM
    if facts.answered_calls == 0:
        return ZeroYieldReason.LLM_CALL_FAILED
    if not facts.telemetry_enabled:
        return ZeroYieldReason.TELEMETRY_DISABLED
    if not facts.telemetry_tables_present:
        return ZeroYieldReason.TELEMETRY_TABLES_MISSING
    if facts.write_errors > 0:
        return ZeroYieldReason.TELEMETRY_WRITE_FAILED
    # Every answered call either wrote a row, raised, or was refused by the guard.
    return ZeroYieldReason.TELEMETRY_WRITE_REJECTED
