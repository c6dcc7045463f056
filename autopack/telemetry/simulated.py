"""Simulated telemetry: the one place that says which rows a demo wrote, not a real model.

The demo writes telemetry under model names starting with `simulated-` (e.g.
`simulated-claude`). Calibration leaves such rows out unless asked (`--include-simulated`):
coefficients must be learnt from real calls.
"""

from __future__ import annotations

from typing import Final

SIMULATED_MODEL_PREFIX: Final = "simulated-"


def is_simulated_model(name: str | None) -> bool:
    """Whether telemetry under this model name was simulated (a demo), not a real call."""
    return bool(name) and str(name).strip().lower().startswith(SIMULATED_MODEL_PREFIX)
