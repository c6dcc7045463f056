"""The telemetry recorder: one row per answered call, refusals and failures returned as facts."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from autopack.db.engine import Database
from autopack.db.models import LlmUsageEvent, TelemetryProvenance, TokenEstimationV2Event, table_of
from autopack.estimator import estimate, load_builtin_set
from autopack.telemetry.recorder import (
    BuilderCall,
    WriteStatus,
    deliverables_json,
    record_builder_call,
    smape_percent,
    telemetry_tables_present,
    waste_ratio,
)
from autopack.telemetry.zero_yield import DrainFacts, ZeroYieldReason, zero_yield_reason

RUN = "telemetry-collection-v4"
PHASE = "telemetry-p1-string-util"


def _call(output_tokens: int | None = 1200, *, truncated: bool = False) -> BuilderCall:
    coefficients = load_builtin_set("default")
    predicted = estimate(
        ["examples/telemetry_utils/string_helper.py"],
        "implementation",
        "low",
        coefficients=coefficients,
        workspace=None,
    )
    return BuilderCall(
        run_id=RUN,
        phase_id=PHASE,
        provider="anthropic",
        model="claude-sonnet-4-5",
        estimate=predicted,
        selected_budget=8192,
        max_tokens_sent=8192,
        input_tokens=900,
        output_tokens=output_tokens,
        stop_reason="max_tokens" if truncated else "end_turn",
        truncated=truncated,
        success=not truncated,
    )


def _rows(db: Database, model: type) -> list[sa.Row[object]]:
    with db.engine.connect() as connection:
        return list(connection.execute(sa.select(table_of(model))).all())


def test_answered_call_writes_one_row_with_provenance_and_usage(seed_db: Database) -> None:
    call = _call()
    result = record_builder_call(seed_db.engine, call, enabled=True, tables_present=True)
    assert result.status is WriteStatus.WRITTEN
    (row,) = _rows(seed_db, TokenEstimationV2Event)
    assert row.event_id == result.event_id
    assert row.predicted_output_tokens == call.estimate.estimated_tokens
    assert row.actual_output_tokens == 1200
    assert row.actual_max_tokens == 8192
    assert row.success is True
    assert row.truncated is False
    assert row.smape_percent == pytest.approx(smape_percent(1200, call.estimate.estimated_tokens))
    assert row.underestimated is (call.estimate.estimated_tokens < 1200)
    (provenance,) = _rows(seed_db, TelemetryProvenance)
    assert provenance.coefficient_set == "default"
    assert provenance.coefficient_set_hash == call.estimate.coefficient_set_hash
    (usage,) = _rows(seed_db, LlmUsageEvent)
    assert usage.completion_tokens == 1200
    assert usage.total_tokens == 2100


def test_truncated_call_is_recorded_as_a_lower_bound(seed_db: Database) -> None:
    record_builder_call(
        seed_db.engine, _call(8192, truncated=True), enabled=True, tables_present=True
    )
    (row,) = _rows(seed_db, TokenEstimationV2Event)
    assert row.truncated is True
    assert row.is_truncated_output is True
    assert row.stop_reason == "max_tokens"


@pytest.mark.parametrize("tokens", [None, 0, 41, 49])
def test_validity_guard_rejects_and_says_why(seed_db: Database, tokens: int | None) -> None:
    result = record_builder_call(seed_db.engine, _call(tokens), enabled=True, tables_present=True)
    assert result.status is WriteStatus.REJECTED
    assert result.detail is not None
    assert _rows(seed_db, TokenEstimationV2Event) == []
    # The usage ledger still records the call.
    assert len(_rows(seed_db, LlmUsageEvent)) == 1


def test_disabled_and_missing_tables_write_no_row(seed_db: Database) -> None:
    assert (
        record_builder_call(seed_db.engine, _call(), enabled=False, tables_present=True).status
        is WriteStatus.DISABLED
    )
    assert (
        record_builder_call(seed_db.engine, _call(), enabled=True, tables_present=False).status
        is WriteStatus.TABLES_MISSING
    )
    assert _rows(seed_db, TokenEstimationV2Event) == []


def test_write_failure_is_returned_not_raised(seed_db: Database) -> None:
    call = _call()
    broken = BuilderCall(**{**call.__dict__, "phase_id": "no-such-phase"})
    result = record_builder_call(seed_db.engine, broken, enabled=True, tables_present=True)
    # The composite foreign key to phases refuses the row; the phase must not fail for it.
    assert result.status is WriteStatus.FAILED
    assert result.detail
    assert "FOREIGN KEY" in result.detail.upper()


def test_tables_present(seed_db: Database) -> None:
    assert telemetry_tables_present(seed_db.engine) is True
    with seed_db.engine.begin() as connection:
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.exec_driver_sql("DROP TABLE autopack_telemetry_provenance")
        connection.exec_driver_sql("DROP TABLE token_estimation_v2_events")
    assert telemetry_tables_present(seed_db.engine) is False


def test_metric_helpers() -> None:
    assert smape_percent(100, 300) == pytest.approx(100.0)
    assert smape_percent(0, 300) is None
    assert waste_ratio(100, 300) == pytest.approx(3.0)
    assert waste_ratio(100, 0) is None
    kept = json.loads(deliverables_json((*tuple(f"f{i}" for i in range(25)), "x" * 300)))
    assert len(kept) == 20
    long = json.loads(deliverables_json(("x" * 300,)))[0]
    assert len(long) == 200
    assert long.endswith("...")


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (
            DrainFacts(
                rows_written=1, preflight_passed=True, provider_called=True, answered_calls=1
            ),
            None,
        ),
        (DrainFacts(), ZeroYieldReason.NEVER_REACHED_LLM),
        (DrainFacts(preflight_passed=True), ZeroYieldReason.FAILED_BEFORE_LLM),
        (
            DrainFacts(preflight_passed=True, provider_called=True, failed_calls=1),
            ZeroYieldReason.LLM_CALL_FAILED,
        ),
        (
            DrainFacts(
                preflight_passed=True,
                provider_called=True,
                answered_calls=1,
                telemetry_enabled=False,
            ),
            ZeroYieldReason.TELEMETRY_DISABLED,
        ),
        (
            DrainFacts(
                preflight_passed=True,
                provider_called=True,
                answered_calls=1,
                telemetry_tables_present=False,
            ),
            ZeroYieldReason.TELEMETRY_TABLES_MISSING,
        ),
        (
            DrainFacts(
                preflight_passed=True, provider_called=True, answered_calls=1, write_errors=1
            ),
            ZeroYieldReason.TELEMETRY_WRITE_FAILED,
        ),
        (
            DrainFacts(
                preflight_passed=True, provider_called=True, answered_calls=1, guard_rejections=1
            ),
            ZeroYieldReason.TELEMETRY_WRITE_REJECTED,
        ),
    ],
)
def test_zero_yield_reason_is_decided_from_facts(
    facts: DrainFacts, expected: ZeroYieldReason | None
) -> None:
    assert zero_yield_reason(facts) == expected
