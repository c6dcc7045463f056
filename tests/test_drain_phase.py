"""`autopack drain phase`: one phase end to end against the fake LLM over real HTTP."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from autopack.db.engine import Database
from autopack.db.models import (
    DrainResult,
    DrainSession,
    LlmUsageAttempts,
    LlmUsageEvent,
    Phase,
    PhaseClaim,
    TelemetryProvenance,
    TokenBudgetEscalationEvent,
    TokenEstimationV2Event,
    table_of,
)
from autopack.estimator import estimate, load_builtin_set, phase_category
from tests.builder_replies import markdown_reply_for, reply_for
from tests.conftest import CliRunner, reference_seed_spec
from tests.fake_llm import FakeLlmServer, Reply

RUN = "telemetry-collection-v4"
V4 = reference_seed_spec(RUN)
PHASES = {p.phase_id: p for p in V4.phases}
P1 = "telemetry-p1-string-util"


@pytest.fixture
def workspace(workdir: Path) -> Path:
    path = workdir / "ws"
    path.mkdir()
    return path


def _drain(
    cli: CliRunner, llm_env: dict[str, str], workspace: Path, phase_id: str, *extra: str
) -> tuple[int, dict[str, Any], str]:
    result = cli(
        "drain",
        "phase",
        RUN,
        phase_id,
        "--db",
        "seed",
        "--workspace",
        str(workspace),
        "--json",
        *extra,
        env=llm_env,
    )
    document = json.loads(result.stdout) if result.stdout.strip() else {}
    return result.exit_code, document, result.stderr


def _rows(db: Database, model: type, **where: object) -> list[Any]:
    table = table_of(model)
    query = sa.select(table).where(*(table.c[k] == v for k, v in where.items()))
    with db.engine.connect() as connection:
        return list(connection.execute(query).all())


def _state(db: Database, phase_id: str) -> str:
    (row,) = _rows(db, Phase, run_id=RUN, phase_id=phase_id)
    return str(row.state)


def _predicted(phase_id: str, workspace: Path) -> int:
    phase = PHASES[phase_id]
    deliverables = phase.scope.deliverables
    return estimate(
        deliverables,
        phase_category(phase.task_category, deliverables),
        phase.complexity,
        coefficients=load_builtin_set("default"),
        workspace=workspace,
        task_description=phase.description,
        scope_paths=phase.scope.paths,
    ).estimated_tokens


def test_all_ten_v4_phases_drain_with_exact_telemetry(
    cli: CliRunner, seed_db: Database, fake_llm: FakeLlmServer, workspace: Path
) -> None:
    env = fake_llm.env("anthropic")
    for index, phase in enumerate(V4.phases):
        output_tokens = 400 + 37 * index
        fake_llm.queue(
            Reply.ok(
                reply_for(phase.scope.deliverables),
                input_tokens=900 + index,
                output_tokens=output_tokens,
            )
        )
        predicted = _predicted(phase.phase_id, workspace)
        code, doc, stderr = _drain(cli, env, workspace, phase.phase_id)
        assert code == 0, (phase.phase_id, stderr, doc)
        (entry,) = doc["results"]
        assert entry["outcome"] == "complete"
        assert entry["final_state"] == "COMPLETE"
        assert entry["telemetry_events"] == 1
        assert entry["zero_yield_reason"] is None
        for deliverable in phase.scope.deliverables:
            assert (workspace / deliverable).stat().st_size > 0
        assert _state(seed_db, phase.phase_id) == "COMPLETE"
        (row,) = _rows(seed_db, TokenEstimationV2Event, phase_id=phase.phase_id)
        assert row.actual_output_tokens == output_tokens
        assert row.predicted_output_tokens == predicted
        assert row.success is True
        assert row.truncated is False
        assert row.model == "fake-model"
        (provenance,) = _rows(seed_db, TelemetryProvenance, event_id=row.event_id)
        assert provenance.coefficient_set == "default"
        assert provenance.drain_result_id is None or provenance.drain_result_id > 0
    # Every answered call wrote exactly one row; one usage row per call; no lease left behind.
    assert fake_llm.answered_2xx == 10
    assert len(_rows(seed_db, TokenEstimationV2Event)) == 10
    assert len(_rows(seed_db, LlmUsageEvent)) == 10
    assert _rows(seed_db, PhaseClaim) == []
    assert len(_rows(seed_db, DrainResult)) == 10
    # The tests phases really ran pytest on what the earlier phases wrote.
    assert (workspace / "examples/telemetry_utils/test_list_helper.py").exists()


def test_openai_protocol_and_markdown_reply(
    cli: CliRunner, seed_db: Database, fake_llm: FakeLlmServer, workspace: Path
) -> None:
    deliverables = PHASES[P1].scope.deliverables
    fake_llm.queue(Reply.ok(markdown_reply_for(deliverables), output_tokens=321))
    code, _doc, _ = _drain(cli, fake_llm.env("openai"), workspace, P1)
    assert code == 0
    assert fake_llm.requests[0].path.endswith("/chat/completions")
    (row,) = _rows(seed_db, TokenEstimationV2Event)
    assert row.actual_output_tokens == 321
    assert "capitalize_words" in (workspace / deliverables[0]).read_text()


def test_prompt_carries_existing_deliverable_content(
    cli: CliRunner, seed_db: Database, fake_llm: FakeLlmServer, workspace: Path
) -> None:
    target = workspace / "examples/telemetry_utils/string_helper.py"
    target.parent.mkdir(parents=True)
    target.write_text("# EXISTING-MARKER\n")
    fake_llm.queue(Reply.ok(reply_for(PHASES[P1].scope.deliverables), output_tokens=300))
    code, _, _ = _drain(cli, fake_llm.env("anthropic"), workspace, P1)
    assert code == 0
    body = json.dumps(fake_llm.requests[0].body)
    assert "EXISTING-MARKER" in body


def test_truncation_escalates_once_then_succeeds(
    cli: CliRunner, seed_db: Database, fake_llm: FakeLlmServer, workspace: Path
) -> None:
    deliverables = PHASES[P1].scope.deliverables
    fake_llm.queue(
        Reply.cut_off('{"files": [{"path": "examples/', output_tokens=8192),
        Reply.ok(reply_for(deliverables), output_tokens=500),
    )
    code, doc, _ = _drain(cli, fake_llm.env("anthropic"), workspace, P1)
    assert code == 0, doc
    first, second = (r.body["max_tokens"] for r in fake_llm.requests)
    assert second == min(int(first * 1.25), 64000)
    rows = sorted(_rows(seed_db, TokenEstimationV2Event), key=lambda r: r.event_id)
    assert [r.truncated for r in rows] == [True, False]
    assert [r.success for r in rows] == [False, True]
    assert rows[0].actual_max_tokens == first
    assert rows[1].actual_max_tokens == second
    (escalation,) = _rows(seed_db, TokenBudgetEscalationEvent)
    assert escalation.retry_max_tokens == second
    assert escalation.reason == "truncation"
    assert doc["results"][0]["escalation_events"] == 1
    assert doc["results"][0]["llm_calls"] == 2


def test_truncated_twice_fails_after_one_escalation(
    cli: CliRunner, seed_db: Database, fake_llm: FakeLlmServer, workspace: Path
) -> None:
    fake_llm.queue(Reply.cut_off(output_tokens=8192), Reply.cut_off(output_tokens=10240))
    code, doc, _ = _drain(cli, fake_llm.env("anthropic"), workspace, P1)
    assert code == 1
    entry = doc["results"][0]
    assert entry["failure_kind"] == "truncation"
    assert "after one escalation" in entry["failure_reason"]
    assert fake_llm.answered_2xx == 2
    assert len(_rows(seed_db, TokenEstimationV2Event)) == 2
    assert _state(seed_db, P1) == "FAILED"
    assert _rows(seed_db, PhaseClaim) == []


@pytest.mark.parametrize(
    "bad_path", ["../escape.py", "/tmp/abs_escape.py", "examples/other_dir/x.py"]
)
def test_path_escape_fails_the_phase_and_writes_nothing(
    cli: CliRunner, seed_db: Database, fake_llm: FakeLlmServer, workspace: Path, bad_path: str
) -> None:
    reply = json.dumps(
        {
            "files": [
                {"path": "examples/telemetry_utils/string_helper.py", "content": "x = 1\n"},
                {"path": bad_path, "content": "evil = True\n"},
            ]
        }
    )
    fake_llm.queue(Reply.ok(reply, output_tokens=200))
    code, doc, _ = _drain(cli, fake_llm.env("anthropic"), workspace, P1)
    assert code == 1
    entry = doc["results"][0]
    assert entry["failure_kind"] == "scope"
    assert bad_path.split("/")[-1] in entry["failure_reason"]
    assert not (workspace / "examples/telemetry_utils/string_helper.py").exists()
    assert not (workspace.parent / "escape.py").exists()
    assert not Path("/tmp/abs_escape.py").exists()
    # The reply parsed, so the builder call was a success even though the phase failed.
    (row,) = _rows(seed_db, TokenEstimationV2Event)
    assert row.success is True
    assert _state(seed_db, P1) == "FAILED"


def test_malformed_body_is_an_answered_call_without_usage(
    cli: CliRunner, seed_db: Database, fake_llm: FakeLlmServer, workspace: Path
) -> None:
    fake_llm.queue(Reply.malformed())
    code, doc, _ = _drain(cli, fake_llm.env("anthropic"), workspace, P1)
    assert code == 1
    entry = doc["results"][0]
    assert entry["failure_kind"] == "llm_call"
    assert entry["zero_yield_reason"] == "telemetry_write_rejected"
    assert entry["facts"]["answered_calls"] == 1


def test_empty_content_fails_parse_and_is_refused_by_the_guard(
    cli: CliRunner, seed_db: Database, fake_llm: FakeLlmServer, workspace: Path
) -> None:
    fake_llm.queue(Reply.empty(output_tokens=3))
    code, doc, _ = _drain(cli, fake_llm.env("anthropic"), workspace, P1)
    assert code == 1
    entry = doc["results"][0]
    assert entry["failure_kind"] == "parse"
    assert entry["zero_yield_reason"] == "telemetry_write_rejected"
    assert "< 50" in entry["facts"]["last_rejection"]
    assert _rows(seed_db, TokenEstimationV2Event) == []


def test_rate_limit_is_retried_and_every_attempt_counted(
    cli: CliRunner, seed_db: Database, fake_llm: FakeLlmServer, workspace: Path
) -> None:
    fake_llm.queue(
        Reply.rate_limited(retry_after="0"),
        Reply.ok(reply_for(PHASES[P1].scope.deliverables), output_tokens=250),
    )
    code, doc, _ = _drain(cli, fake_llm.env("anthropic"), workspace, P1)
    assert code == 0
    entry = doc["results"][0]
    assert entry["llm_calls"] == 1
    assert entry["llm_attempts"] == 2
    assert len(_rows(seed_db, TokenEstimationV2Event)) == 1
    # The call's usage record carries every attempt.
    (usage,) = _rows(seed_db, LlmUsageEvent)
    (attempts,) = _rows(seed_db, LlmUsageAttempts, usage_event_id=usage.id)
    assert attempts.attempts == 2
    assert attempts.answered is True
    assert [a["kind"] for a in attempts.detail] == ["rate_limited", "ok"]


def test_server_errors_exhausted_give_the_phase_back_unchanged(
    cli: CliRunner, seed_db: Database, fake_llm: FakeLlmServer, workspace: Path
) -> None:
    fake_llm.queue(Reply.server_error(), Reply.server_error())
    env = fake_llm.env("anthropic", MAX_RETRIES="1")
    code, doc, _ = _drain(cli, env, workspace, P1)
    assert code == 1
    entry = doc["results"][0]
    assert entry["zero_yield_reason"] == "llm_call_failed"
    assert entry["llm_attempts"] == 2
    assert fake_llm.answered_2xx == 0
    # A call that never answered still has its usage record (no tokens) and its attempts.
    (usage,) = _rows(seed_db, LlmUsageEvent)
    assert usage.total_tokens == 0
    (attempts,) = _rows(seed_db, LlmUsageAttempts, usage_event_id=usage.id)
    assert attempts.answered is False
    assert [a["status"] for a in attempts.detail] == [500, 500]
    # A provider outage says nothing about the phase: it is given back as it was.
    assert entry["outcome"] == "provider_unavailable"
    assert entry["final_state"] == "QUEUED"
    assert _state(seed_db, P1) == "QUEUED"


def test_slow_reply_times_out(
    cli: CliRunner, seed_db: Database, fake_llm: FakeLlmServer, workspace: Path
) -> None:
    fake_llm.queue(Reply.slow(2.0))
    env = fake_llm.env("anthropic", TIMEOUT_S="0.3", MAX_RETRIES="0")
    code, doc, _ = _drain(cli, env, workspace, P1)
    assert code == 1
    assert doc["results"][0]["zero_yield_reason"] == "llm_call_failed"
    assert (
        "timeout" in doc["results"][0]["failure_reason"].lower()
        or "timed out" in doc["results"][0]["failure_reason"].lower()
    )


def test_missing_llm_configuration_refuses_before_touching_the_phase(
    cli: CliRunner, seed_db: Database, workspace: Path
) -> None:
    result = cli("drain", "phase", RUN, P1, "--db", "seed", "--workspace", str(workspace))
    assert result.exit_code == 2
    assert "AUTOPACK_LLM" in result.stderr
    assert _state(seed_db, P1) == "QUEUED"
    assert _rows(seed_db, DrainSession) == []


def test_failed_phase_needs_requeue(
    cli: CliRunner, seed_db: Database, fake_llm: FakeLlmServer, workspace: Path
) -> None:
    fake_llm.queue(Reply.empty(output_tokens=3))
    assert _drain(cli, fake_llm.env("anthropic"), workspace, P1)[0] == 1
    code, doc, _ = _drain(cli, fake_llm.env("anthropic"), workspace, P1)
    assert code == 2
    assert doc["results"][0]["outcome"] == "refused"
    assert "--requeue" not in doc["results"][0]["failure_reason"]
    plain = cli(
        "drain",
        "phase",
        RUN,
        P1,
        "--db",
        "seed",
        "--workspace",
        str(workspace),
        env=fake_llm.env("anthropic"),
    )
    assert plain.exit_code == 2
    assert "hint: pass --requeue" in plain.stderr
    fake_llm.queue(Reply.ok(reply_for(PHASES[P1].scope.deliverables), output_tokens=300))
    code, doc, _ = _drain(cli, fake_llm.env("anthropic"), workspace, P1, "--requeue")
    assert code == 0
    assert _state(seed_db, P1) == "COMPLETE"


def test_no_telemetry_writes_no_rows_and_says_why(
    cli: CliRunner, seed_db: Database, fake_llm: FakeLlmServer, workspace: Path
) -> None:
    fake_llm.queue(Reply.ok(reply_for(PHASES[P1].scope.deliverables), output_tokens=300))
    code, doc, _ = _drain(cli, fake_llm.env("anthropic"), workspace, P1, "--no-telemetry")
    assert code == 0
    assert doc["results"][0]["zero_yield_reason"] == "telemetry_disabled"
    assert _rows(seed_db, TokenEstimationV2Event) == []


@pytest.mark.parametrize(
    ("flag", "extra", "rows"), [("no", (), 0), ("Yes", ("--no-telemetry",), 0), ("TRUE", (), 1)]
)
def test_telemetry_db_enabled_is_honoured_below_no_telemetry(
    cli: CliRunner,
    seed_db: Database,
    fake_llm: FakeLlmServer,
    workspace: Path,
    flag: str,
    extra: tuple[str, ...],
    rows: int,
) -> None:
    # Drains turn telemetry on when nothing says otherwise; TELEMETRY_DB_ENABLED (one parser:
    # 1/true/yes in any case) can turn it off, and --no-telemetry wins over it.
    fake_llm.queue(Reply.ok(reply_for(PHASES[P1].scope.deliverables), output_tokens=300))
    env = {**fake_llm.env("anthropic"), "TELEMETRY_DB_ENABLED": flag}
    code, doc, _ = _drain(cli, env, workspace, P1, *extra)
    assert code == 0
    assert len(_rows(seed_db, TokenEstimationV2Event)) == rows
    if rows == 0:
        assert doc["results"][0]["zero_yield_reason"] == "telemetry_disabled"


def test_missing_telemetry_tables_build_but_explain(
    cli: CliRunner, seed_db: Database, fake_llm: FakeLlmServer, workspace: Path
) -> None:
    with seed_db.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE autopack_telemetry_provenance")
        connection.exec_driver_sql("DROP TABLE token_budget_escalation_events")
        connection.exec_driver_sql("DROP TABLE token_estimation_v2_events")
    fake_llm.queue(Reply.ok(reply_for(PHASES[P1].scope.deliverables), output_tokens=300))
    result = cli(
        "drain",
        "phase",
        RUN,
        P1,
        "--db",
        "seed",
        "--workspace",
        str(workspace),
        "--json",
        env=fake_llm.env("anthropic"),
    )
    assert result.exit_code == 0
    assert "token_estimation_v2_events is missing" in result.stderr
    entry = json.loads(result.stdout)["results"][0]
    assert entry["zero_yield_reason"] == "telemetry_tables_missing"


def test_failing_tests_phase_names_the_check(
    cli: CliRunner, seed_db: Database, fake_llm: FakeLlmServer, workspace: Path
) -> None:
    phase_id = "telemetry-p7-number-tests"
    broken = json.dumps(
        {
            "files": [
                {
                    "path": "examples/telemetry_utils/test_number_helper.py",
                    "content": "def test_wrong():\n    assert 1 + 1 == 3\n",
                }
            ]
        }
    )
    fake_llm.queue(Reply.ok(broken, output_tokens=120))
    code, doc, _ = _drain(cli, fake_llm.env("anthropic"), workspace, phase_id, "--ignore-order")
    assert code == 1
    entry = doc["results"][0]
    assert entry["failure_kind"] == "verification"
    assert "pytest" in entry["failure_reason"]
    (phase,) = _rows(seed_db, Phase, run_id=RUN, phase_id=phase_id)
    assert phase.last_failure_reason == entry["failure_reason"]


def test_dirty_scope_is_refused_unless_allowed(
    cli: CliRunner, seed_db: Database, fake_llm: FakeLlmServer, workspace: Path
) -> None:
    subprocess.run(["git", "init", "-q", str(workspace)], check=True)
    scope = workspace / "examples/telemetry_utils"
    scope.mkdir(parents=True)
    (scope / "notes.txt").write_text("uncommitted work\n")
    code, doc, _ = _drain(cli, fake_llm.env("anthropic"), workspace, P1)
    assert code == 2
    assert "uncommitted" in doc["results"][0]["failure_reason"]
    assert doc["results"][0]["zero_yield_reason"] == "never_reached_llm"
    assert fake_llm.requests == []
    assert _state(seed_db, P1) == "QUEUED"
    fake_llm.queue(Reply.ok(reply_for(PHASES[P1].scope.deliverables), output_tokens=300))
    code, _, _ = _drain(cli, fake_llm.env("anthropic"), workspace, P1, "--allow-dirty")
    assert code == 0
    assert (scope / "notes.txt").read_text() == "uncommitted work\n"


def test_unknown_phase_is_refused(
    cli: CliRunner, seed_db: Database, fake_llm: FakeLlmServer, workspace: Path
) -> None:
    result = cli(
        "drain",
        "phase",
        RUN,
        "nope",
        "--db",
        "seed",
        "--workspace",
        str(workspace),
        env=fake_llm.env("anthropic"),
    )
    assert result.exit_code == 2
    assert f"phase 'nope' is not in run {RUN!r}" in result.stderr


def test_transcripts_keep_prompt_and_reply_without_the_key(
    cli: CliRunner, seed_db: Database, fake_llm: FakeLlmServer, workspace: Path
) -> None:
    fake_llm.queue(Reply.empty(output_tokens=3))
    env = fake_llm.env("anthropic", api_key="sk-super-secret-key-123")
    code, doc, stderr = _drain(cli, env, workspace, P1)
    assert code == 1
    directory = Path(doc["results"][0]["transcript_dir"])
    assert directory.is_relative_to(workspace / ".autopack" / "logs")
    names = sorted(p.name for p in directory.iterdir())
    assert names == ["attempt-1-call.json", "attempt-1-prompt.md", "attempt-1-reply.txt"]
    everything = "".join(p.read_text() for p in directory.iterdir()) + json.dumps(doc) + stderr
    assert "sk-super-secret-key-123" not in everything
    assert "capitalize_words" in (directory / "attempt-1-prompt.md").read_text()
