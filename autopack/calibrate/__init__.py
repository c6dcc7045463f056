"""Calibration: evidence-based coefficient proposals, backtests, and an explicit apply.

Plain Python (no CLI or terminal code). The public API:

- `propose(db, options)` → a `Proposal` (never writes the DB or any coefficient file);
- `backtest(db, proposal, ...)` → a `BacktestResult` for a saved proposal on any DB;
- `apply_proposal(db, proposal_file, approve=...)` → writes a new DB-stored set, active;
- `list_sets(db)` and `activate_set(db, name, approve=...)` → the DB's sets, and rollback.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autopack.calibrate.apply import activate_set, apply_proposal, list_sets
    from autopack.calibrate.backtest import BacktestResult
    from autopack.calibrate.propose import ProposeOptions, propose
    from autopack.calibrate.report import Proposal
    from autopack.calibrate.rescore import backtest

# Loaded on first use (PEP 562): numpy and the estimator are not needed to name the API.
_LAZY: dict[str, str] = {
    "BacktestResult": "autopack.calibrate.backtest",
    "Proposal": "autopack.calibrate.report",
    "ProposeOptions": "autopack.calibrate.propose",
    "activate_set": "autopack.calibrate.apply",
    "apply_proposal": "autopack.calibrate.apply",
    "backtest": "autopack.calibrate.rescore",
    "list_sets": "autopack.calibrate.apply",
    "propose": "autopack.calibrate.propose",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'autopack.calibrate' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "BacktestResult",
    "Proposal",
    "ProposeOptions",
    "activate_set",
    "apply_proposal",
    "backtest",
    "list_sets",
    "propose",
]
