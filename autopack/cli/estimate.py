"""`autopack estimate`: predict a phase's output tokens and the budget the builder would use."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from autopack import console
from autopack.cli.options import DbOption, DebugOption, JsonOption, QuietOption, UrlOption

if TYPE_CHECKING:  # the estimator loads in the command body: `--help` stays light
    from autopack.estimator.coefficients import CoefficientSet


def estimate_command(
    deliverables: Annotated[
        list[str], typer.Argument(help="The phase's deliverables (paths), e.g. src/x.py.")
    ],
    category: Annotated[
        str, typer.Option(metavar="CATEGORY", help="Task category: implementation, tests, docs, …")
    ],
    complexity: Annotated[str, typer.Option(metavar="LEVEL", help="low, medium or high.")],
    description: Annotated[str, typer.Option(metavar="TEXT", help="The phase's goal text.")] = "",
    scope_path: Annotated[
        list[str] | None,
        typer.Option("--scope-path", metavar="PATH", help="A scope path (repeatable)."),
    ] = None,
    workspace: Annotated[
        Path, typer.Option(metavar="DIR", help="Where existing deliverables are looked up.")
    ] = Path("."),
    coefficients: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help="A coefficient set: built in, or stored in --db (default: the DB's active set "
            "for --model, else the built-in default).",
        ),
    ] = None,
    coefficients_file: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE", help="A coefficient set JSON file (e.g. an applied proposal)."
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            metavar="MODEL",
            help="The model whose active set --db supplies (default: AUTOPACK_LLM_MODEL).",
        ),
    ] = None,
    db: DbOption = None,
    database_url: UrlOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Predict output tokens, with breakdown, confidence, selected budget and max_tokens.

    e.g. autopack estimate --category implementation --complexity low examples/x/string_helper.py
    """
    from autopack.estimator.report import estimate_phase

    chosen = _coefficients(coefficients, coefficients_file, model, db, database_url)
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
        from autopack.render.estimate import show_estimate

        show_estimate(report)


def _coefficients(
    name: str | None,
    file: Path | None,
    model: str | None,
    db: str | None,
    database_url: str | None,
) -> CoefficientSet:
    """Without a DB: a file or a built-in set. With one: its active set for the model too."""
    from autopack.cli.target import open_named
    from autopack.db.engine import OpenMode, translated_errors
    from autopack.estimator.active import resolve_coefficients
    from autopack.estimator.report import choose_coefficients
    from autopack.llm.settings import ENV_VARS

    if db is None and database_url is None:
        return choose_coefficients(name, file)
    if file is not None:
        return choose_coefficients(None, file)
    chosen_model = model or console.environment().environ.get(ENV_VARS["model"]) or None
    with open_named(db, database_url, OpenMode.READ_ONLY) as database, translated_errors(database):
        return resolve_coefficients(database.engine, model=chosen_model, name=name)
