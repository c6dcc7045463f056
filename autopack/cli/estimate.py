"""`autopack estimate`: predict a phase's output tokens and the budget the builder would use."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autopack import console
from autopack.cli.options import DebugOption, JsonOption, QuietOption
from autopack.estimator.report import choose_coefficients, estimate_phase


def estimate_command(
    deliverables: Annotated[
        list[str], typer.Argument(help="The phase's deliverables (paths), e.g. src/x.py.")
    ],
    category: Annotated[str, typer.Option(help="Task category: implementation, tests, docs, …")],
    complexity: Annotated[str, typer.Option(help="low, medium or high.")],
    description: Annotated[str, typer.Option(help="The phase's goal text.")] = "",
    scope_path: Annotated[
        list[str] | None, typer.Option("--scope-path", help="A scope path (repeatable).")
    ] = None,
    workspace: Annotated[
        Path, typer.Option(help="Where existing deliverables are looked up.")
    ] = Path("."),
    coefficients: Annotated[
        str | None, typer.Option(help="Built-in coefficient set (default: default).")
    ] = None,
    coefficients_file: Annotated[
        Path | None, typer.Option(help="A coefficient set JSON file (e.g. an applied proposal).")
    ] = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Predict output tokens, with breakdown, confidence, selected budget and max_tokens.

    e.g. autopack estimate --category implementation --complexity low examples/x/string_helper.py
    """
    chosen = choose_coefficients(coefficients, coefficients_file)
    report = estimate_phase(
        deliverables,
        category=category,
        complexity=complexity,
        coefficients=chosen,
        workspace=workspace.resolve(),
        description=description,
        scope_paths=scope_path,
    )
    if as_json:
        console.print_json(report)
    else:
        console.show_estimate(report)
