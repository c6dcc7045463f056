"""Defect 7 (issue 11): one poisoned reply fails its own phase and the batch goes on.

A lone surrogate (`\\ud83d`) or JSON nested ~1,000 deep, in the reply's text or in the HTTP
body itself, used to end the whole batch with exit 70 (UnicodeEncodeError in the transcript
writer or staging, RecursionError in parse_reply and the HTTP body parser), with no record of
the answered call. Now: that phase is FAILED with a fingerprint and a reason, the call is
recorded, and the other phases complete.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from autopack.db.engine import Database, OpenMode, open_database
from autopack.db.models import LlmUsageEvent, TokenEstimationV2Event, table_of
from autopack.settings import resolve_target
from tests.backlog_helpers import GOOD, add_run, good_reply, results, states
from tests.conftest import CliRunner
from tests.fake_llm import FakeLlmServer, Reply

DEEP = "[" * 1000 + "]" * 1000
SURROGATE_FILE = json.dumps({"files": [{"path": GOOD, "content": "x = '\ud83d'\n"}]})
SURROGATE_PATH = json.dumps({"files": [{"path": "shared/\ud83d.py", "content": "x = 1\n"}]})


@pytest.fixture
def backlog(cli: CliRunner, workdir: Path) -> Iterator[Database]:
    assert cli("db", "init", "--database-url", "sqlite:///backlog.db").exit_code == 0
    (workdir / "ws").mkdir()
    db = open_database(resolve_target(None, "sqlite:///backlog.db"), OpenMode.READ_WRITE)
    yield db
    db.close()


def drain_json(cli: CliRunner, db: Database, llm: FakeLlmServer, *args: str) -> tuple[int, Any]:
    result = cli(
        "drain",
        "batch",
        "--database-url",
        db.target.url,
        "--workspace",
        "ws",
        "--json",
        *args,
        env=llm.env("anthropic"),
    )
    assert result.exit_code in (0, 1), result.stderr
    return result.exit_code, json.loads(result.stdout)


def count(db: Database, model: type[Any]) -> int:
    with db.engine.connect() as connection:
        return int(
            connection.execute(sa.select(sa.func.count()).select_from(table_of(model))).scalar_one()
        )


@pytest.mark.parametrize(
    ("poison", "answered_with_usage"),
    [
        pytest.param(Reply.ok(SURROGATE_FILE, output_tokens=300), True, id="surrogate-in-content"),
        pytest.param(Reply.ok(SURROGATE_PATH, output_tokens=300), True, id="surrogate-in-path"),
        pytest.param(Reply.ok("\ud83d", output_tokens=300), True, id="surrogate-as-the-reply"),
        pytest.param(Reply.ok(DEEP, output_tokens=300), True, id="deep-json-reply"),
        pytest.param(
            Reply.ok("```json\n" + DEEP + "\n```", output_tokens=300), True, id="deep-json-fenced"
        ),
        pytest.param(Reply.ok('{"files": ' + DEEP + "}", output_tokens=300), True, id="deep-files"),
        pytest.param(Reply.raw(DEEP), False, id="deep-http-body"),
        pytest.param(
            Reply(text="ok", stop_reason="\ud83d", output_tokens=300), True, id="surrogate-stop"
        ),
    ],
)
def test_a_poisoned_reply_fails_its_phase_and_the_batch_goes_on(
    cli: CliRunner,
    backlog: Database,
    fake_llm: FakeLlmServer,
    poison: Reply,
    answered_with_usage: bool,
) -> None:
    add_run(backlog.engine, "run-a", 1)
    add_run(backlog.engine, "run-b", 1)
    fake_llm.default_reply = good_reply()
    fake_llm.queue(poison)

    code, doc = drain_json(cli, backlog, fake_llm, "--batch-size", "2")

    assert code == 1
    by_phase = {entry["phase_id"]: entry for entry in doc["results"]}
    poisoned = by_phase["run-a-p0"]
    assert poisoned["final_state"] == "FAILED"
    assert poisoned["fingerprint"]
    assert poisoned["failure_reason"]
    poisoned["failure_reason"].encode("utf-8")  # the reason is writable text
    assert by_phase["run-b-p0"]["final_state"] == "COMPLETE"
    assert states(backlog.engine) == {"run-a-p0": "FAILED", "run-b-p0": "COMPLETE"}
    # Every call is recorded: both in the usage ledger; a row for each reply with usage.
    assert count(backlog, LlmUsageEvent) == 2
    assert count(backlog, TokenEstimationV2Event) == (2 if answered_with_usage else 1)
    assert len(results(backlog.engine)) == 2
    transcripts = list((Path("ws") / ".autopack" / "logs").rglob("attempt-1-*"))
    assert transcripts
