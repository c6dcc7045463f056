"""`calibrate backtest PROPOSAL`: score a saved proposal against any DB's telemetry.

Nothing is fitted here: the proposal's set and the DB's current set (its active set for the
model, or the built-in default) are both scored on every qualifying row of that DB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autopack.calibrate.backtest import BacktestResult, score
from autopack.calibrate.fit import CENSORED_NEED
from autopack.calibrate.predict import predict_features
from autopack.calibrate.proposal_file import load_proposal
from autopack.calibrate.samples import SampleFilters, read_samples, read_snapshot
from autopack.db.engine import Database, translated_errors
from autopack.estimator.active import resolve_coefficients

SPLIT_NONE = "none: the proposal was fitted on other rows; every qualifying row is scored"


def backtest(
    db: Database,
    proposal_file: Path,
    *,
    filters: SampleFilters,
    min_samples: int,
    coefficients: str | None = None,
) -> BacktestResult:
    """Score the proposal's set and the current set side by side on the DB's samples."""
    loaded = load_proposal(proposal_file)
    model = filters.model or loaded.proposal.samples.model
    wanted = SampleFilters(
        model=model,
        include_simulated=filters.include_simulated,
        require_phase_complete=filters.require_phase_complete,
        run_ids=filters.run_ids,
    )
    with (
        translated_errors(db),
        db.engine.connect() as connection,
        read_snapshot(connection) as snapshot,
    ):
        samples = read_samples(snapshot, wanted, min_samples=min_samples)
        current = resolve_coefficients(snapshot, model=samples.model, name=coefficients)
    need = np.where(samples.censored, samples.actual * CENSORED_NEED, samples.actual)
    scores = []
    for chosen in (current, loaded.coefficients):
        predictions = predict_features(samples.features, chosen)
        scores.append(
            score(
                samples.actual,
                need,
                samples.censored,
                samples.weight,
                predictions.current[samples.feature].astype(np.float64),
                predictions.current_budget[samples.feature].astype(np.float64),
            )
        )
    return BacktestResult(
        n=samples.clean_rows,
        censored=samples.censored_rows,
        split=SPLIT_NONE,
        current=scores[0],
        proposed=scores[1],
        model=samples.model,
        current_set=current.name,
        proposed_set=loaded.coefficients.name,
    )
