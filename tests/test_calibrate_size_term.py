"""`calibrate propose`'s prompt-size term: drained rows carry input tokens, imported ones don't."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from autopack.calibrate.input_sizes import USAGE, read_input_sizes
from autopack.calibrate.proposal_file import load_proposal
from autopack.calibrate.propose import ProposeOptions, propose
from autopack.calibrate.samples import SampleFilters, read_samples, read_snapshot
from autopack.calibrate.size_term import EXPONENT_BOUNDS, MIN_SMAPE_GAIN, fit_size_term
from autopack.db.engine import Database, OpenMode, open_database
from autopack.estimator import estimate, load_builtin_set
from autopack.settings import resolve_target
from autopack.telemetry.recorder import BuilderCall, record_builder_call
from tests.backlog_helpers import add_run
from tests.calibrate_helpers import MODEL, propose_json, strict_json
from tests.conftest import CliRunner

DEFAULT = load_builtin_set("default")
RUNS = 6
PHASES = 10
EXPONENT = 0.6
SCORES = {
    "smape_median",
    "smape_mean",
    "underestimation_rate",
    "truncation_rate",
    "waste_median",
}
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _call(run_id: str, phase_id: str, input_tokens: int | None, output_tokens: int) -> BuilderCall:
    return BuilderCall(
        run_id=run_id,
        phase_id=phase_id,
        provider="anthropic",
        model=MODEL,
        estimate=estimate(
            ["shared/out.py"], "implementation", "low", coefficients=DEFAULT, workspace=None
        ),
        selected_budget=8192,
        max_tokens_sent=16384,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        stop_reason="end_turn",
        truncated=False,
        success=True,
    )


def _record(db: Database, call: BuilderCall) -> None:
    written = record_builder_call(db.engine, call, enabled=True, tables_present=True)
    assert written.event_id is not None


def _drained_db(cli: CliRunner, path: Path | str, *, seed: int = 7) -> Database:
    """RUNS runs of PHASES drained one-file phases whose output grows as input ** EXPONENT
    (`path`: a SQLite file, or a database URL)."""
    url = path if isinstance(path, str) else f"sqlite:///{path}"
    assert cli("db", "init", "--database-url", url, "-q").exit_code == 0
    db = open_database(resolve_target(None, url), OpenMode.READ_WRITE)
    rng = np.random.default_rng(seed)
    for run in range(RUNS):
        run_id = f"size-run-{run}"
        add_run(db.engine, run_id, PHASES)
        for index in range(PHASES):
            input_tokens = int(np.exp(rng.uniform(np.log(2_000), np.log(20_000))))
            noise = float(np.exp(rng.normal(0.0, 0.1)))
            output = int(2_000 * (input_tokens / 6_000) ** EXPONENT * noise)
            _record(db, _call(run_id, f"{run_id}-p{index}", input_tokens, output))
    return db


def _without_usage(db: Database) -> None:
    with db.engine.begin() as connection:
        connection.execute(sa.delete(USAGE))


def _options() -> ProposeOptions:
    return ProposeOptions(filters=SampleFilters(model=MODEL))


def _comparable(document: dict[str, Any]) -> dict[str, Any]:
    """Everything but the size-term section and the DB's own URL."""
    return {k: v for k, v in document.items() if k not in ("backtest_size_term", "target")}


# --- the fit -------------------------------------------------------------------------------


def test_fit_recovers_an_exact_power_law() -> None:
    input_tokens = np.array([1_000.0, 2_000.0, 4_000.0, 8_000.0, 16_000.0])
    estimates = np.full(5, 1_000, dtype=np.int64)
    actual = 1_000 * 1.5 * (input_tokens / 4_000) ** 0.5
    term = fit_size_term(actual, estimates, input_tokens, np.ones(5))
    assert term is not None
    assert term.reference == 4_000
    assert term.exponent == pytest.approx(0.5, abs=1e-9)
    # Centred: the term tilts with size but keeps the estimates' own level (×1.5 stays off).
    assert term.level == pytest.approx(0.0, abs=1e-9)
    assert list(term.apply(estimates, input_tokens)) == [int(a / 1.5 + 1e-9) for a in actual]


def test_fit_bounds_the_exponent_and_needs_spread() -> None:
    input_tokens = np.array([1_000.0, 2_000.0, 4_000.0])
    estimates = np.full(3, 1_000, dtype=np.int64)
    steep = fit_size_term(1_000 * (input_tokens / 2_000) ** 3, estimates, input_tokens, np.ones(3))
    assert steep is not None
    assert steep.exponent == EXPONENT_BOUNDS[1]
    flat = fit_size_term(
        np.array([900.0, 1_100.0, 1_000.0]), estimates, np.full(3, 5_000.0), np.ones(3)
    )
    assert flat is not None
    assert flat.exponent == 0.0
    assert fit_size_term(np.zeros(0), estimates[:0], np.zeros(0), np.zeros(0)) is None


# --- reading input tokens ------------------------------------------------------------------


def test_input_tokens_are_joined_to_their_own_call(cli: CliRunner, workdir: Path) -> None:
    db = _drained_db(cli, workdir / "drained.db")
    # A second call of one phase (a retry with another prompt): each row gets its own input.
    _record(db, _call("size-run-0", "size-run-0-p0", 55_555, 4_321))
    # A call refused by the validity guard has a usage row but no telemetry row: no effect.
    record_builder_call(
        db.engine,
        _call("size-run-0", "size-run-0-p0", 77_777, 10),
        enabled=True,
        tables_present=True,
    )
    with db.engine.connect() as connection, read_snapshot(connection) as snapshot:
        filters = SampleFilters(model=MODEL)
        samples = read_samples(snapshot, filters, min_samples=1)
        sizes = read_input_sizes(snapshot, filters, samples)
    assert sizes.rows == RUNS * PHASES + 1
    assert sizes.clean_rows == sizes.rows
    assert sizes.censored_rows == 0
    [retry] = np.flatnonzero(sizes.actual == 4_321)
    assert sizes.input_tokens[retry] == 55_555
    assert 77_777 not in sizes.input_tokens
    assert set(np.unique(sizes.fold)) == set(range(RUNS))  # leave-one-run-out, like the samples


# --- the proposal --------------------------------------------------------------------------


def test_size_term_helps_when_output_grows_with_input(cli: CliRunner, workdir: Path) -> None:
    db = _drained_db(cli, workdir / "drained.db")
    proposal = propose(db, _options(), now=NOW)
    term = proposal.backtest_size_term
    assert term is not None
    assert term.status == "fitted"
    assert proposal.changed is True
    assert term.rows_with_input_tokens == term.n == term.qualifying_rows == RUNS * PHASES
    assert term.split == proposal.backtest.split == f"leave-one-run-out ({RUNS} runs)"
    assert term.exponent == pytest.approx(EXPONENT, abs=0.1)
    assert term.exponent_by_fold is not None
    assert len(term.exponent_by_fold) == RUNS
    assert term.proposed is not None
    assert term.proposed_with_size_term is not None
    # Same rows as the main backtest here (every row has input tokens).
    assert term.proposed == proposal.backtest.proposed
    assert term.current == proposal.backtest.current
    # The damped proposal still over-estimates (damping 0.5); the term removes the spread.
    assert term.proposed_with_size_term.smape_median < 0.8 * term.proposed.smape_median
    assert term.proposed_with_size_term.smape_mean < 0.8 * term.proposed.smape_mean
    assert term.helps is True
    assert term.in_proposed_set is False
    assert "the size term helps" in term.verdict
    # Reported only: the proposed set is the plain format-2 set.
    assert proposal.coefficients["schema_version"] == 2


@pytest.mark.postgres
def test_size_term_on_postgres_matches_sqlite(
    cli: CliRunner, postgres_url: str, workdir: Path
) -> None:
    on_postgres = propose(_drained_db(cli, postgres_url), _options(), now=NOW)
    on_sqlite = propose(_drained_db(cli, workdir / "drained.db"), _options(), now=NOW)
    assert on_postgres.backtest_size_term is not None
    assert on_postgres.backtest_size_term.status == "fitted"
    assert on_postgres.backtest_size_term == on_sqlite.backtest_size_term


def test_unrelated_input_sizes_give_a_flat_term_that_does_not_help(
    cli: CliRunner, workdir: Path
) -> None:
    db = _drained_db(cli, workdir / "drained.db")
    rng = np.random.default_rng(3)
    with db.engine.begin() as connection:  # the prompts' sizes shuffled: no relation left
        ids = [row.id for row in connection.execute(sa.select(USAGE.c.id))]
        for usage_id in ids:
            connection.execute(
                sa.update(USAGE)
                .where(USAGE.c.id == usage_id)
                .values(prompt_tokens=int(rng.integers(2_000, 20_000)))
            )
    term = propose(db, _options(), now=NOW).backtest_size_term
    assert term is not None
    assert term.status == "fitted"
    assert term.exponent is not None
    assert abs(term.exponent) < 0.15
    assert term.proposed is not None
    assert term.proposed_with_size_term is not None
    with_term, without = term.proposed_with_size_term, term.proposed
    assert term.helps == (
        with_term.smape_median <= without.smape_median - MIN_SMAPE_GAIN
        and with_term.smape_mean <= without.smape_mean
        and with_term.truncation_rate <= without.truncation_rate
    )
    assert term.helps is False
    assert "the size term does not help" in term.verdict


def test_rows_without_input_tokens_change_nothing_else(cli: CliRunner, workdir: Path) -> None:
    with_tokens = propose(_drained_db(cli, workdir / "a.db"), _options(), now=NOW)
    bare_db = _drained_db(cli, workdir / "b.db")
    _without_usage(bare_db)
    bare = propose(bare_db, _options(), now=NOW)
    term = bare.backtest_size_term
    assert term is not None
    assert term.status == "not_enough_rows"
    assert term.verdict.startswith("not enough rows with input tokens")
    assert term.rows_with_input_tokens == 0
    assert term.helps is False
    assert term.exponent is None
    assert term.proposed_with_size_term is None
    assert _comparable(bare.to_json()) == _comparable(with_tokens.to_json())


def test_too_few_rows_with_input_tokens(cli: CliRunner, workdir: Path) -> None:
    db = _drained_db(cli, workdir / "drained.db")
    with db.engine.begin() as connection:  # keep input tokens on one run's rows only
        connection.execute(sa.delete(USAGE).where(USAGE.c.run_id != "size-run-0"))
    term = propose(db, _options(), now=NOW).backtest_size_term
    assert term is not None
    assert term.status == "not_enough_rows"
    assert term.rows_with_input_tokens == PHASES
    assert f"{PHASES} clean rows carry them, 20 needed" in term.verdict


# --- the JSON document and the report ------------------------------------------------------


def test_json_shape_and_report(cli: CliRunner, workdir: Path) -> None:
    db = _drained_db(cli, workdir / "drained.db")
    url = db.target.display_url
    document = propose_json(cli, url, workdir / "out", "--no-charts")
    term = document["backtest_size_term"]
    assert set(term) == {
        "status",
        "verdict",
        "helps",
        "in_proposed_set",
        "n",
        "censored",
        "rows_with_input_tokens",
        "qualifying_rows",
        "min_rows",
        "split",
        "exponent",
        "level",
        "reference_input_tokens",
        "exponent_bounds",
        "exponent_by_fold",
        "current",
        "proposed",
        "proposed_with_size_term",
    }
    for side in ("current", "proposed", "proposed_with_size_term"):
        assert set(term[side]) == SCORES
    assert set(document["backtest"]["current"]) == SCORES  # the fixed shape is unchanged
    assert "proposed_with_size_term" not in document["backtest"]
    [markdown] = (workdir / "out").glob("*.md")
    text = markdown.read_text(encoding="utf-8")
    assert "## Prompt size term" in text
    assert "| metric | current | proposed | proposed + size term |" in text
    assert "The size term helps" in text
    result = cli("calibrate", "propose", "--database-url", url, "--output-dir", str(workdir))
    assert result.exit_code == 0, result.stderr
    assert "+ size term" in result.stdout
    assert "reported, not proposed" in result.stdout


def test_old_proposal_without_the_section_still_loads(cli: CliRunner, workdir: Path) -> None:
    db = _drained_db(cli, workdir / "drained.db")
    document = propose_json(cli, db.target.display_url, workdir / "out", "--no-charts")
    del document["backtest_size_term"]
    path = workdir / "old.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    loaded = load_proposal(path)
    assert loaded.proposal.backtest_size_term is None
    assert strict_json(loaded.proposal.document_text())["backtest_size_term"] is None
