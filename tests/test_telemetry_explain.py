"""`autopack telemetry explain`: every zero-yield reason, driven through real drains."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from autopack.db.engine import Database
from autopack.telemetry.zero_yield import ZeroYieldReason
from tests.builder_replies import reply_for
from tests.conftest import CliRunner, reference_seed_spec
from tests.fake_llm import FakeLlmServer, Reply

RUN = "telemetry-collection-v4"
PHASES = list(reference_seed_spec(RUN).phases)


def _drain(
    cli: CliRunner,
    llm: FakeLlmServer,
    index: int,
    workspace: Path,
    *extra: str,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    result = cli(
        "drain",
        "phase",
        RUN,
        PHASES[index].phase_id,
        "--db",
        "seed",
        "--workspace",
        str(workspace),
        "--json",
        "--ignore-order",  # each phase stands for one reason; their run's order is not the point
        *extra,
        env={**llm.env("anthropic"), **(env or {})},
    )
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def _good(index: int) -> Reply:
    return Reply.ok(reply_for(PHASES[index].scope.deliverables), output_tokens=400)


def test_every_reason_is_explained_with_its_evidence(
    cli: CliRunner, seed_db: Database, fake_llm: FakeLlmServer, workdir: Path
) -> None:
    sessions: dict[str, str] = {}

    dirty = workdir / "dirty"
    (dirty / "examples/telemetry_utils").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(dirty)], check=True)
    (dirty / "examples/telemetry_utils/wip.txt").write_text("work in progress\n")
    sessions["never_reached_llm"] = _drain(cli, fake_llm, 0, dirty)["session_id"]

    broken = workdir / "broken"
    broken.mkdir()
    (broken / ".autopack").write_text("a file where the log directory should go\n")
    sessions["failed_before_llm"] = _drain(cli, fake_llm, 1, broken)["session_id"]

    ws = workdir / "ws"
    ws.mkdir()
    fake_llm.queue(Reply.server_error())
    sessions["llm_call_failed"] = _drain(
        cli, fake_llm, 2, ws, env={"AUTOPACK_LLM_MAX_RETRIES": "0"}
    )["session_id"]
    fake_llm.queue(_good(3))
    sessions["telemetry_disabled"] = _drain(cli, fake_llm, 3, ws, "--no-telemetry")["session_id"]
    fake_llm.queue(Reply.empty(output_tokens=12))
    sessions["telemetry_write_rejected"] = _drain(cli, fake_llm, 4, ws)["session_id"]
    fake_llm.queue(_good(9))
    written = _drain(cli, fake_llm, 9, ws)
    assert written["results"][0]["telemetry_events"] == 1

    with seed_db.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE autopack_telemetry_provenance")
    fake_llm.queue(_good(5))
    sessions["telemetry_write_failed"] = _drain(cli, fake_llm, 5, ws)["session_id"]

    with seed_db.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE token_budget_escalation_events")
        connection.exec_driver_sql("DROP TABLE token_estimation_v2_events")
    fake_llm.queue(_good(6))
    sessions["telemetry_tables_missing"] = _drain(cli, fake_llm, 6, ws)["session_id"]

    result = cli("telemetry", "explain", "--db", "seed", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["attempts"] == 8
    assert doc["with_telemetry"] == 1
    assert doc["unexplained"] == 0
    assert doc["by_reason"] == {reason.value: 1 for reason in ZeroYieldReason}
    by_reason = {entry["reason"]: entry for entry in doc["entries"]}
    assert by_reason["never_reached_llm"]["evidence"]["preflight_passed"] is False
    assert "uncommitted" in by_reason["never_reached_llm"]["failure_reason"]
    assert by_reason["failed_before_llm"]["evidence"]["provider_called"] is False
    assert by_reason["llm_call_failed"]["evidence"]["failed_calls"] == 1
    assert by_reason["telemetry_disabled"]["evidence"]["telemetry_enabled"] is False
    assert "< 50" in by_reason["telemetry_write_rejected"]["evidence"]["last_rejection"]
    assert by_reason["telemetry_write_failed"]["evidence"]["write_errors"] == 1
    assert by_reason["telemetry_tables_missing"]["evidence"]["telemetry_tables_present"] is False
    for reason, session in sessions.items():
        assert by_reason[reason]["session_id"] == session
        assert doc["remedies"][reason]

    one = json.loads(
        cli(
            "telemetry",
            "explain",
            "--db",
            "seed",
            "--session",
            sessions["llm_call_failed"],
            "--json",
        ).stdout
    )
    assert one["by_reason"] == {"llm_call_failed": 1}
    shown = cli("telemetry", "explain", "--db", "seed", "--run-id", RUN)
    assert shown.exit_code == 0
    assert "telemetry_write_rejected" in shown.stdout
    assert "what to do" in shown.stdout
    assert "what to do" not in shown.stderr


def test_unknown_session_is_refused(cli: CliRunner, seed_db: Database) -> None:
    result = cli("telemetry", "explain", "--db", "seed", "--session", "nope")
    assert result.exit_code == 2
    assert "no drain session 'nope'" in result.stderr


def test_empty_db_guard(cli: CliRunner, workdir: Path) -> None:
    assert cli("db", "init", "--db", "seed").exit_code == 0
    refused = cli("telemetry", "explain", "--db", "seed")
    assert refused.exit_code == 2
    assert "--allow-empty-db" in refused.stderr
    allowed = cli("telemetry", "explain", "--db", "seed", "--allow-empty-db", "--json")
    assert allowed.exit_code == 0
    assert json.loads(allowed.stdout)["attempts"] == 0
