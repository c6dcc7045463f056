"""propose -> apply -> `estimate --db` -> drains record the set; sets, activate, refusals."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from autopack.db.engine import OpenMode, open_database
from autopack.db.models import TelemetryProvenance, TokenEstimationV2Event, table_of
from autopack.estimator import load_builtin_set
from autopack.estimator.active import resolve_coefficients
from autopack.estimator.coefficients import CoefficientSetError
from autopack.settings import resolve_target
from tests.backlog_helpers import add_run, good_reply
from tests.calibrate_helpers import (
    MODEL,
    SAMPLE_LOG,
    SETS_DIR,
    files_digest,
    init_and_import,
    proposal_file,
    propose_json,
)
from tests.conftest import CliRunner
from tests.fake_llm import FakeLlmServer

EVENTS = table_of(TokenEstimationV2Event)
PROVENANCE = table_of(TelemetryProvenance)
ESTIMATE = ("estimate", "--category", "implementation", "--complexity", "low", "src/x.py")


def _estimate(cli: CliRunner, *args: str) -> dict[str, Any]:
    result = cli(*ESTIMATE, "--json", *args)
    assert result.exit_code == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def _drain(cli: CliRunner, url: str, llm: FakeLlmServer) -> dict[str, Any]:
    result = cli(
        "drain",
        "batch",
        "--database-url",
        url,
        "--workspace",
        "ws",
        "--state",
        "queued",
        "--json",
        "-q",
        env=llm.env("anthropic", model=MODEL),
    )
    assert result.exit_code == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def _sets_by_run(url: str) -> dict[str, set[str | None]]:
    """The coefficient set names recorded on the drained telemetry rows, per run."""
    with (
        open_database(resolve_target(None, url), OpenMode.READ_ONLY) as db,
        db.engine.connect() as connection,
    ):
        rows = connection.execute(
            sa.select(EVENTS.c.run_id, PROVENANCE.c.coefficient_set)
            .join(PROVENANCE, PROVENANCE.c.event_id == EVENTS.c.event_id)
            .where(PROVENANCE.c.source == "drain")
        ).all()
    found: dict[str, set[str | None]] = {}
    for run_id, name in rows:
        found.setdefault(str(run_id), set()).add(name)
    return found


def _add_backlog(url: str, run_id: str, phases: int = 2) -> None:
    with open_database(resolve_target(None, url), OpenMode.READ_WRITE) as db:
        add_run(db.engine, run_id, phases)


def _propose_apply_estimate_drain(
    cli: CliRunner, url: str, workdir: Path, fake_llm: FakeLlmServer
) -> None:
    fake_llm.default_reply = good_reply()
    (workdir / "ws").mkdir()
    builtin = files_digest(SETS_DIR.glob("*.json"))
    init_and_import(cli, url, SAMPLE_LOG)
    document = propose_json(cli, url, workdir / "out")
    name = document["coefficients"]["name"]
    proposal = str(proposal_file(workdir / "out"))

    # Without --approve: a table of old and new, nothing written.
    preview = cli("calibrate", "apply", proposal, "--database-url", url)
    assert preview.exit_code == 0, preview.stderr
    assert "implementation/low" in preview.stdout
    assert "--approve" in preview.stdout
    listed = json.loads(cli("calibrate", "sets", "--database-url", url, "--json").stdout)
    assert listed == {"sets": []}
    assert (
        _estimate(cli, "--database-url", url, "--model", MODEL)["estimate"]["coefficient_set"]
        == "default"
    )

    applied = cli("calibrate", "apply", proposal, "--database-url", url, "--approve", "--json")
    assert applied.exit_code == 0, applied.stderr
    assert json.loads(applied.stdout)["status"] == "applied"
    [stored] = json.loads(cli("calibrate", "sets", "--database-url", url, "--json").stdout)["sets"]
    assert stored["name"] == name
    assert stored["active"] is True
    assert stored["model"] == MODEL
    assert stored["sample_count"] == document["samples"]["clean"]
    assert len(stored["proposal_sha256"]) == 64
    # The one timestamp format of docs/json.md: RFC 3339, UTC, +00:00.
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?\+00:00", stored["created_at"])
    assert stored["activated_at"].endswith("+00:00")
    assert document["generated_at"].endswith("+00:00")

    # estimate --db uses the DB's active set for the model; without a DB, the built-in default.
    with_db = _estimate(cli, "--database-url", url, "--model", MODEL)
    assert with_db["estimate"]["coefficient_set"] == name
    assert with_db["estimate"]["estimated_tokens"] < _estimate(cli)["estimate"]["estimated_tokens"]
    assert _estimate(cli)["estimate"]["coefficient_set"] == "default"
    other_model = _estimate(cli, "--database-url", url, "--model", "another-model")
    assert other_model["estimate"]["coefficient_set"] == "default"
    picked = _estimate(cli, "--database-url", url, "--coefficients", "original-head")
    assert picked["estimate"]["coefficient_set"] == "original-head"

    # Applying it again is a no-op with a message.
    again = cli("calibrate", "apply", proposal, "--database-url", url, "--approve")
    assert again.exit_code == 0
    assert "already applied" in again.stdout

    # A drain of that DB stores the set's name on every telemetry row it writes.
    _add_backlog(url, "calibrated-run")
    report = _drain(cli, url, fake_llm)
    assert report["totals"]["failed"] == 0
    assert _sets_by_run(url) == {"calibrated-run": {name}}

    # Rollback in one command; the next drain uses the built-in default again.
    rolled = cli("calibrate", "activate", "default", "--database-url", url, "--approve")
    assert rolled.exit_code == 0, rolled.stderr
    assert (
        _estimate(cli, "--database-url", url, "--model", MODEL)["estimate"]["coefficient_set"]
        == "default"
    )
    assert files_digest(SETS_DIR.glob("*.json")) == builtin


def test_propose_apply_estimate_drain_on_sqlite(
    cli: CliRunner, workdir: Path, fake_llm: FakeLlmServer
) -> None:
    _propose_apply_estimate_drain(cli, f"sqlite:///{workdir / 'seed.db'}", workdir, fake_llm)


@pytest.mark.postgres
def test_propose_apply_estimate_drain_on_postgres(
    cli: CliRunner, postgres_url: str, workdir: Path, fake_llm: FakeLlmServer
) -> None:
    _propose_apply_estimate_drain(cli, postgres_url, workdir, fake_llm)


def test_two_drains_with_an_apply_between_never_mix_sets(
    cli: CliRunner, workdir: Path, fake_llm: FakeLlmServer
) -> None:
    fake_llm.default_reply = good_reply()
    (workdir / "ws").mkdir()
    url = f"sqlite:///{workdir / 'fleet.db'}"
    init_and_import(cli, url, SAMPLE_LOG)
    document = propose_json(cli, url, workdir / "out")
    _add_backlog(url, "before-apply", 3)
    _drain(cli, url, fake_llm)
    applied = cli(
        "calibrate",
        "apply",
        str(proposal_file(workdir / "out")),
        "--database-url",
        url,
        "--approve",
    )
    assert applied.exit_code == 0, applied.stderr
    _add_backlog(url, "after-apply", 3)
    _drain(cli, url, fake_llm)
    assert _sets_by_run(url) == {
        "before-apply": {"default"},
        "after-apply": {document["coefficients"]["name"]},
    }


def test_a_pinned_drain_ignores_the_active_set(
    cli: CliRunner, workdir: Path, fake_llm: FakeLlmServer
) -> None:
    fake_llm.default_reply = good_reply()
    (workdir / "ws").mkdir()
    url = f"sqlite:///{workdir / 'pinned.db'}"
    init_and_import(cli, url, SAMPLE_LOG)
    propose_json(cli, url, workdir / "out")
    assert (
        cli(
            "calibrate",
            "apply",
            str(proposal_file(workdir / "out")),
            "--database-url",
            url,
            "--approve",
        ).exit_code
        == 0
    )
    _add_backlog(url, "pinned-run")
    result = cli(
        "drain",
        "batch",
        "--database-url",
        url,
        "--workspace",
        "ws",
        "--state",
        "queued",
        "--coefficients",
        "default",
        "--json",
        "-q",
        env=fake_llm.env("anthropic", model=MODEL),
    )
    assert result.exit_code == 0, result.stderr
    assert _sets_by_run(url) == {"pinned-run": {"default"}}


def test_a_proposal_for_other_rules_is_refused(cli: CliRunner, workdir: Path) -> None:
    url = f"sqlite:///{workdir / 'refuse.db'}"
    init_and_import(cli, url, SAMPLE_LOG)
    propose_json(cli, url, workdir / "out")
    path = proposal_file(workdir / "out")
    document = json.loads(path.read_text())
    for key, value, reason in (
        ("estimator_version", "0", "estimator version '0'"),
        ("format_version", 99, "format version 99"),
    ):
        changed = workdir / f"{key}.json"
        changed.write_text(json.dumps({**document, key: value}))
        result = cli("calibrate", "apply", str(changed), "--database-url", url, "--approve")
        assert result.exit_code == 2
        assert reason in result.stderr
        assert "hint:" in result.stderr
    unchanged = workdir / "unchanged.json"
    unchanged.write_text(json.dumps({**document, "changed": False}))
    refused = cli("calibrate", "apply", str(unchanged), "--database-url", url, "--approve")
    assert refused.exit_code == 2
    assert "proposes no change" in refused.stderr
    sets = json.loads(cli("calibrate", "sets", "--database-url", url, "--json").stdout)
    assert sets == {"sets": []}


def test_activate_refuses_unknown_names_and_needs_a_model_for_default(
    cli: CliRunner, workdir: Path
) -> None:
    url = f"sqlite:///{workdir / 'activate.db'}"
    init_and_import(cli, url, SAMPLE_LOG)
    unknown = cli("calibrate", "activate", "nope", "--database-url", url, "--approve")
    assert unknown.exit_code == 2
    assert "no coefficient set named 'nope'" in unknown.stderr
    nothing_active = cli("calibrate", "activate", "default", "--database-url", url, "--approve")
    assert nothing_active.exit_code == 2
    assert "--model" in nothing_active.stderr
    same = cli(
        "calibrate", "activate", "default", "--model", MODEL, "--database-url", url, "--approve"
    )
    assert same.exit_code == 0
    assert "already in force" in same.stdout


def test_resolution_order(workdir: Path, cli: CliRunner) -> None:
    url = f"sqlite:///{workdir / 'order.db'}"
    assert cli("db", "init", "--database-url", url, "-q").exit_code == 0
    assert resolve_coefficients(None, model=MODEL).name == "default"
    assert resolve_coefficients(None, model=MODEL, name="original-head").name == "original-head"
    with open_database(resolve_target(None, url), OpenMode.READ_ONLY) as db:
        assert resolve_coefficients(db.engine, model=MODEL).name == "default"
        with pytest.raises(CoefficientSetError, match="no coefficient set named"):
            resolve_coefficients(db.engine, model=MODEL, name="calibrated-x")
    assert load_builtin_set("default").schema_version == 1
