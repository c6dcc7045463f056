"""The demo: the whole runbook against a simulated (or the real) builder model.

Plain Python (no CLI or terminal code):

    from autopack.cli.app import main
    from autopack.demo import DemoOptions, run_demo

    report = run_demo(DemoOptions(Path("autopack-demo")), main, env, print)   # -> DemoReport
    report.to_json()

`SimulatedModel` is the local Anthropic-protocol server on its own (see docs/demo.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autopack.lazy import lazy_exports

if TYPE_CHECKING:
    from autopack.demo.runbook import (
        DEFAULT_DIRECTORY,
        CommandStep,
        DemoOptions,
        DemoReport,
        DemoStepFailed,
        StepResult,
        run_demo,
    )
    from autopack.demo.simulated_model import SIMULATED_MODEL_NAME, SimulatedModel

__getattr__ = lazy_exports(
    __name__,
    {
        "autopack.demo.runbook": (
            "DEFAULT_DIRECTORY",
            "CommandStep",
            "DemoOptions",
            "DemoReport",
            "DemoStepFailed",
            "StepResult",
            "run_demo",
        ),
        "autopack.demo.simulated_model": ("SIMULATED_MODEL_NAME", "SimulatedModel"),
    },
)

__all__ = [
    "DEFAULT_DIRECTORY",
    "SIMULATED_MODEL_NAME",
    "CommandStep",
    "DemoOptions",
    "DemoReport",
    "DemoStepFailed",
    "SimulatedModel",
    "StepResult",
    "run_demo",
]
