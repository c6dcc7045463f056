"""`autopack demo`: the whole runbook in a fresh directory (thin layer over autopack.demo)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autopack import console
from autopack.cli.options import DebugOption, JsonOption


def demo_command(
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir", metavar="DIR", help="A new or empty directory (default: ./autopack-demo)."
        ),
    ] = None,
    real: Annotated[
        bool, typer.Option("--real", help="Use the model AUTOPACK_LLM_* configures.")
    ] = False,
    seed: Annotated[
        int, typer.Option("--seed", metavar="N", help="The simulated model's random seed.")
    ] = 13,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Run the whole runbook (seed, drain, telemetry, triage) against a simulated model.

    e.g. autopack demo            then look in ./autopack-demo/
    """
    from autopack.cli.app import main
    from autopack.demo.runbook import DEFAULT_DIRECTORY, DemoOptions, run_demo
    from autopack.render.demo import show_demo

    env = console.environment()
    chosen = directory if directory is not None else env.cwd / DEFAULT_DIRECTORY
    if not chosen.is_absolute():
        chosen = env.cwd / chosen
    if "DATABASE_URL" in env.environ:
        console.warn("DATABASE_URL is set and ignored: the demo uses only its own directory.")
    if not real:
        console.info("autopack demo: using the simulated model (no API key, no network).")
    report = run_demo(DemoOptions(chosen, real=real, seed=seed), main, env, console.log_line)
    if as_json:
        console.print_json(report)
    else:
        show_demo(report)
