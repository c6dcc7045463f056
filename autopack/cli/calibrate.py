"""`autopack calibrate …`: propose coefficients, backtest them, apply one explicitly, roll back."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from autopack import console
from autopack.cli.options import DbOption, DebugOption, JsonOption, QuietOption, UrlOption
from autopack.cli.target import announce, open_named
from autopack.db.engine import OpenMode

app = typer.Typer(
    help="Propose estimator coefficients from telemetry, backtest them, apply one explicitly.",
    no_args_is_help=True,
)

ModelOption = Annotated[
    str | None,
    typer.Option("--model", metavar="MODEL", help="Fit this model's rows (default: most clean)."),
]
SimulatedOption = Annotated[
    bool, typer.Option("--include-simulated", help="Also use simulated-* (demo) models' rows.")
]
PhaseCompleteOption = Annotated[
    bool,
    typer.Option(
        "--require-phase-complete",
        help="A clean sample's phase must be COMPLETE (instead of builder success).",
    ),
]
RunOption = Annotated[
    list[str] | None, typer.Option("--run-id", metavar="RUN", help="Only this run (repeatable).")
]
CoefficientsOption = Annotated[
    str | None,
    typer.Option(
        "--coefficients",
        metavar="NAME",
        help="Compare against this set (default: the DB's active set for the model).",
    ),
]
ApproveOption = Annotated[bool, typer.Option("--approve", help="Write the change (else: show it).")]


@app.callback()
def calibrate() -> None:
    """Calibrate the token estimator from the telemetry in a DB."""


@app.command()
def propose(
    min_samples: Annotated[
        int, typer.Option("--min-samples", metavar="N", min=1, help="Clean rows needed in all.")
    ] = 20,
    min_group_samples: Annotated[
        int,
        typer.Option(
            "--min-group-samples", metavar="N", min=1, help="Rows a group needs for its own ratio."
        ),
    ] = 5,
    output_dir: Annotated[
        Path, typer.Option("--output-dir", metavar="DIR", help="Where the report files go.")
    ] = Path("."),
    no_charts: Annotated[bool, typer.Option("--no-charts", help="Skip the PNG charts.")] = False,
    model: ModelOption = None,
    include_simulated: SimulatedOption = False,
    require_phase_complete: PhaseCompleteOption = False,
    run_id: RunOption = None,
    coefficients: CoefficientsOption = None,
    db: DbOption = None,
    database_url: UrlOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Propose coefficients (read-only): writes estimator_calibration_proposal_<stamp>.md/.json.

    Exits 1 with [STOP] and writes nothing when there are fewer than --min-samples clean rows.
    e.g. autopack calibrate propose --db seed --min-samples 20 --output-dir reports/
    """
    from autopack.calibrate.propose import ProposeOptions, propose, utc_stamp
    from autopack.calibrate.samples import SampleFilters
    from autopack.render.calibrate import output_directory, show_proposal, write_proposal_files

    directory = output_directory(output_dir)
    options = ProposeOptions(
        filters=SampleFilters(
            model=model,
            include_simulated=include_simulated,
            require_phase_complete=require_phase_complete,
            run_ids=tuple(run_id or ()),
        ),
        min_samples=min_samples,
        min_group_samples=min_group_samples,
        coefficients=coefficients,
    )
    moment = datetime.now(UTC)
    with open_named(db, database_url, OpenMode.READ_ONLY) as database:
        announce(database, quiet=quiet, as_json=as_json)
        proposal = propose(database, options, now=moment)
    written = write_proposal_files(proposal, directory, utc_stamp(moment), charts=not no_charts)
    if as_json:
        console.print_json(proposal)
    elif not quiet:
        show_proposal(proposal, written)


@app.command()
def backtest(
    proposal: Annotated[Path, typer.Argument(help="A proposal .json written by propose.")],
    min_samples: Annotated[
        int, typer.Option("--min-samples", metavar="N", min=1, help="Clean rows needed to score.")
    ] = 20,
    model: ModelOption = None,
    include_simulated: SimulatedOption = False,
    require_phase_complete: PhaseCompleteOption = False,
    run_id: RunOption = None,
    coefficients: CoefficientsOption = None,
    db: DbOption = None,
    database_url: UrlOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Score a saved proposal against a DB's telemetry (fits nothing; read-only).

    e.g. autopack calibrate backtest reports/estimator_calibration_proposal_<stamp>.json --db other
    """
    from autopack.calibrate.proposal_file import load_proposal
    from autopack.calibrate.rescore import backtest as score_proposal
    from autopack.calibrate.samples import SampleFilters
    from autopack.render.calibrate import show_backtest

    load_proposal(proposal)  # refuse a bad file before opening the DB
    filters = SampleFilters(
        model=model,
        include_simulated=include_simulated,
        require_phase_complete=require_phase_complete,
        run_ids=tuple(run_id or ()),
    )
    with open_named(db, database_url, OpenMode.READ_ONLY) as database:
        announce(database, quiet=quiet, as_json=as_json)
        result = score_proposal(
            database, proposal, filters=filters, min_samples=min_samples, coefficients=coefficients
        )
    if as_json:
        console.print_json(result)
    else:
        show_backtest(result)


@app.command()
def apply(
    proposal: Annotated[Path, typer.Argument(help="A proposal .json written by propose.")],
    approve: ApproveOption = False,
    db: DbOption = None,
    database_url: UrlOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Store the proposal's set in the DB and make it active for its model (with --approve).

    Without --approve, only shows old and new per group.
    e.g. autopack calibrate apply reports/estimator_calibration_proposal_<stamp>.json --db seed
    --approve
    """
    from autopack.calibrate.apply import apply_proposal
    from autopack.calibrate.proposal_file import load_proposal
    from autopack.render.calibrate import show_apply

    load_proposal(proposal)
    mode = OpenMode.READ_WRITE if approve else OpenMode.READ_ONLY
    with open_named(db, database_url, mode) as database:
        announce(database, quiet=quiet, as_json=as_json)
        result = apply_proposal(database, proposal, approve=approve)
    if as_json:
        console.print_json(result)
    else:
        show_apply(result)


@app.command("sets")
def sets_command(
    db: DbOption = None,
    database_url: UrlOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """List the DB's coefficient sets: which one is active per model, since when."""
    from autopack.calibrate.apply import list_sets
    from autopack.render.calibrate import show_sets

    with open_named(db, database_url, OpenMode.READ_ONLY) as database:
        announce(database, quiet=quiet, as_json=as_json)
        stored = list_sets(database)
    if as_json:
        console.print_json({"sets": [item.model_dump(mode="json") for item in stored]})
    else:
        show_sets(stored)


@app.command()
def activate(
    name: Annotated[str, typer.Argument(help="A stored set's name, or `default` (built-in).")],
    model: ModelOption = None,
    approve: ApproveOption = False,
    db: DbOption = None,
    database_url: UrlOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Switch the active set (the one-command rollback); `default` goes back to the built-in.

    e.g. autopack calibrate activate default --model claude-sonnet-4-5 --db seed --approve
    """
    from autopack.calibrate.apply import activate_set
    from autopack.render.calibrate import show_activate

    mode = OpenMode.READ_WRITE if approve else OpenMode.READ_ONLY
    with open_named(db, database_url, mode) as database:
        announce(database, quiet=quiet, as_json=as_json)
        result = activate_set(database, name, model=model, approve=approve)
    if as_json:
        console.print_json(result)
    else:
        show_activate(result)
