"""Telemetry at the LLM boundary: one row per answered builder call, and why when there is none.

Every answered call (a 2xx reply with a body) gets exactly one `token_estimation_v2_events` row
when telemetry is on — successes, parse failures and truncations alike — plus its provenance
(which coefficient set predicted it) and one `llm_usage_events` row. A row refused by the
validity guard or a write that raises never fails the phase: it is returned as a fact for the
drain result, where the zero-yield explanation reads it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from autopack.db.models import (
    LlmUsageAttempts,
    LlmUsageEvent,
    TelemetryProvenance,
    TokenEstimationV2Event,
    table_of,
    utc_now,
)
from autopack.db.retry import run_retrying
from autopack.estimator import TokenEstimate, normalize_complexity
from autopack.telemetry.seal import remember, seal

# The original's guard: fewer output tokens than this is almost always an error reply (its
# v4 "empty files" bug produced 41). Kept, but a rejection is recorded, not silently dropped.
MIN_VALID_OUTPUT_TOKENS = 50
EVENTS = table_of(TokenEstimationV2Event)
PROVENANCE = table_of(TelemetryProvenance)
USAGE = table_of(LlmUsageEvent)
ATTEMPTS = table_of(LlmUsageAttempts)
MAX_DELIVERABLES_KEPT = 20
MAX_DELIVERABLE_CHARS = 200


class WriteStatus(StrEnum):
    WRITTEN = "written"
    DISABLED = "disabled"
    TABLES_MISSING = "tables_missing"
    REJECTED = "rejected"
    FAILED = "failed"


@dataclass(frozen=True)
class BuilderCall:
    """What one answered builder call was asked and what it returned."""

    run_id: str
    phase_id: str
    provider: str
    model: str
    estimate: TokenEstimate
    selected_budget: int
    max_tokens_sent: int
    input_tokens: int | None
    output_tokens: int | None
    stop_reason: str | None
    truncated: bool
    success: bool
    """The reply parsed into a usable set of files (builder success, not phase success)."""
    phase_type: str | None = None
    attempts: tuple[dict[str, object], ...] = ()
    """Every HTTP attempt of the call (retries included), as plain data."""


@dataclass(frozen=True)
class TelemetryWrite:
    status: WriteStatus
    event_id: int | None = None
    detail: str | None = None
    usage_error: str | None = None
    """Set when the llm_usage_events row could not be written (secondary; reported, not fatal)."""


def smape_percent(actual: int, predicted: int) -> float | None:
    if actual <= 0 or predicted <= 0:
        return None
    return 200.0 * abs(actual - predicted) / (actual + predicted)


def waste_ratio(actual: int, predicted: int) -> float | None:
    if actual <= 0 or predicted <= 0:
        return None
    return predicted / actual


def deliverables_json(deliverables: tuple[str, ...]) -> str:
    kept = [
        d if len(d) <= MAX_DELIVERABLE_CHARS else d[: MAX_DELIVERABLE_CHARS - 3] + "..."
        for d in deliverables[:MAX_DELIVERABLES_KEPT]
    ]
    return json.dumps(kept)


def telemetry_tables_present(engine: Engine) -> bool:
    with engine.connect() as connection:
        inspector = sa.inspect(connection)
        return inspector.has_table("token_estimation_v2_events")


def validity_problem(call: BuilderCall) -> str | None:
    if call.output_tokens is None:
        return "the reply carried no output-token usage"
    if call.output_tokens < MIN_VALID_OUTPUT_TOKENS:
        return (
            f"actual_output_tokens={call.output_tokens} < {MIN_VALID_OUTPUT_TOKENS} "
            "(validity guard: likely an error reply)"
        )
    return None


def record_builder_call(
    engine: Engine,
    call: BuilderCall,
    *,
    enabled: bool,
    tables_present: bool,
    drain_result_id: int | None = None,
) -> TelemetryWrite:
    """Write the call's telemetry in one transaction; never raises for a telemetry problem.

    The usage ledger row is written with the telemetry row, or alone when there is none (or
    when writing the telemetry row failed, so that failure hides nothing else).
    """
    usage = _usage_row(
        provider=call.provider,
        model=call.model,
        run_id=call.run_id,
        phase_id=call.phase_id,
        input_tokens=call.input_tokens,
        output_tokens=call.output_tokens,
        phase_type=call.phase_type,
    )
    problem: WriteStatus | None = None
    detail: str | None = None
    if not enabled:
        problem = WriteStatus.DISABLED
    elif not tables_present:
        problem, detail = WriteStatus.TABLES_MISSING, "token_estimation_v2_events"
    else:
        detail = validity_problem(call)
        problem = WriteStatus.REJECTED if detail is not None else None
    if problem is None:

        def write() -> int:
            with engine.begin() as connection:
                row = _event_row(call)
                key = connection.execute(sa.insert(EVENTS), [row]).inserted_primary_key
                assert key is not None
                event_id = int(key[0])
                connection.execute(
                    sa.insert(PROVENANCE),
                    [
                        {
                            "event_id": event_id,
                            "source": "drain",
                            "coefficient_set": call.estimate.coefficient_set,
                            "coefficient_set_hash": call.estimate.coefficient_set_hash,
                            "drain_result_id": drain_result_id,
                            "sample_key": None,
                            "source_file": None,
                            "source_line": None,
                            "seal": seal({**row, "event_id": event_id}),
                        }
                    ],
                )
                _insert_usage(connection, usage, call.attempts, answered=True)
            return event_id

        try:
            # A busy database is waited out: a telemetry row is never dropped for a lock.
            event_id = run_retrying(write, what="write a telemetry row")
        except SQLAlchemyError as exc:
            problem, detail = WriteStatus.FAILED, _one_line(exc)
        else:
            remember(engine, event_id)
            return TelemetryWrite(WriteStatus.WRITTEN, event_id=event_id)
    usage_error: str | None = None
    try:
        run_retrying(lambda: _write_usage(engine, usage, call.attempts), what="write a usage row")
    except SQLAlchemyError as exc:
        usage_error = _one_line(exc)
    return TelemetryWrite(problem, detail=detail, usage_error=usage_error)


def _write_usage(
    engine: Engine, usage: dict[str, object], attempts: tuple[dict[str, object], ...]
) -> None:
    with engine.begin() as connection:
        _insert_usage(connection, usage, attempts, answered=True)


def record_failed_call(
    engine: Engine,
    *,
    run_id: str,
    phase_id: str,
    provider: str,
    model: str,
    phase_type: str | None,
    attempts: tuple[dict[str, object], ...],
) -> str | None:
    """A call that never got a usable answer still gets its usage row (0 tokens) and its
    attempts. Returns the error text if even that could not be written."""
    usage = _usage_row(
        provider=provider,
        model=model,
        run_id=run_id,
        phase_id=phase_id,
        input_tokens=None,
        output_tokens=None,
        phase_type=phase_type,
    )

    def write() -> None:
        with engine.begin() as connection:
            _insert_usage(connection, usage, attempts, answered=False)

    try:
        run_retrying(write, what="write a usage row")
    except SQLAlchemyError as exc:
        return _one_line(exc)
    return None


def _insert_usage(
    connection: sa.Connection,
    usage: dict[str, object],
    attempts: tuple[dict[str, object], ...],
    *,
    answered: bool,
) -> None:
    key = connection.execute(sa.insert(USAGE).values(**usage)).inserted_primary_key
    assert key is not None
    connection.execute(
        sa.insert(ATTEMPTS),
        [
            {
                "usage_event_id": int(key[0]),
                "attempts": max(1, len(attempts)),
                "answered": answered,
                "detail": list(attempts),
            }
        ],
    )


def _event_row(call: BuilderCall) -> dict[str, object]:
    assert call.output_tokens is not None  # validity_problem() refuses None
    actual = call.output_tokens
    predicted = call.estimate.estimated_tokens
    now = utc_now()
    return {
        "run_id": call.run_id,
        "phase_id": call.phase_id,
        "timestamp": now,
        "created_at": now,
        "category": call.estimate.category,
        "complexity": normalize_complexity(call.estimate.complexity),
        "deliverable_count": call.estimate.deliverable_count,
        "deliverables_json": deliverables_json(call.estimate.deliverables),
        "predicted_output_tokens": predicted,
        "actual_output_tokens": actual,
        "selected_budget": call.selected_budget,
        "actual_max_tokens": call.max_tokens_sent,
        "success": call.success,
        "truncated": call.truncated,
        "is_truncated_output": call.truncated,
        "stop_reason": call.stop_reason,
        "model": call.model,
        "smape_percent": smape_percent(actual, predicted),
        "waste_ratio": waste_ratio(actual, predicted),
        "underestimated": actual > predicted if predicted > 0 else None,
        **call.estimate.telemetry_fields(),
    }


def _usage_row(
    *,
    provider: str,
    model: str,
    run_id: str,
    phase_id: str,
    input_tokens: int | None,
    output_tokens: int | None,
    phase_type: str | None,
) -> dict[str, object]:
    return {
        "provider": provider,
        "model": model,
        "run_id": run_id,
        "phase_id": phase_id,
        "role": "builder",
        "total_tokens": (input_tokens or 0) + (output_tokens or 0),
        "prompt_tokens": input_tokens,
        "completion_tokens": output_tokens,
        "created_at": utc_now(),
        "client_id": None,
        "is_doctor_call": False,
        "doctor_model": None,
        "doctor_action": None,
        "phase_type": phase_type,
        "intent": None,
    }


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
