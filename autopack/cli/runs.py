"""`autopack runs …`: which runs a database holds, and one run with its phases (read-only)."""

from __future__ import annotations

from typing import Annotated

import typer

from autopack import console
from autopack.cli.options import DbOption, DebugOption, JsonOption, QuietOption, UrlOption
from autopack.cli.target import announce, open_named, refuse_empty
from autopack.db.engine import OpenMode
from autopack.render.runs import show_run_detail, show_run_list
from autopack.runs import DEFAULT_LIMIT, RunFilters, list_runs, show_run

app = typer.Typer(help="List runs, and show one run with its phases (read-only).")

AllowEmptyOption = Annotated[
    bool, typer.Option("--allow-empty-db", help="Report on a DB with 0 runs and 0 phases.")
]


@app.callback(no_args_is_help=True)
def runs() -> None:
    """List runs, and show one run with its phases (read-only)."""


@app.command("list")
def list_command(
    state: Annotated[
        str | None,
        typer.Option(
            "--state", metavar="STATE", help="Only runs in this state, e.g. DONE_SUCCESS."
        ),
    ] = None,
    prefix: Annotated[
        str | None,
        typer.Option("--prefix", metavar="TEXT", help="Only runs whose id starts with TEXT."),
    ] = None,
    limit: Annotated[
        int,
        typer.Option(
            "--limit", metavar="N", help=f"At most N runs (default {DEFAULT_LIMIT}; 0: all)."
        ),
    ] = DEFAULT_LIMIT,
    allow_empty_db: AllowEmptyOption = False,
    db: DbOption = None,
    database_url: UrlOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """List runs, newest first: state, phases by state, telemetry rows, created and updated.

    e.g. autopack runs list --db legacy --state PHASE_EXECUTION --limit 20
    """
    with open_named(db, database_url, OpenMode.READ_ONLY) as database:
        panel = announce(database, quiet=quiet, as_json=as_json)
        refuse_empty(database, panel, allow_empty=allow_empty_db)
        listing = list_runs(database, RunFilters(state=state, prefix=prefix, limit=limit))
    if as_json:
        console.print_json(listing, target=panel.target)
    else:
        show_run_list(listing)


@app.command("show")
def show_command(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="The run's id.")],
    allow_empty_db: AllowEmptyOption = False,
    db: DbOption = None,
    database_url: UrlOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Show one run: its fields, its phases in order (state, attempts, last failure), telemetry.

    e.g. autopack runs show telemetry-collection-v4 --db seed
    """
    with open_named(db, database_url, OpenMode.READ_ONLY) as database:
        panel = announce(database, quiet=quiet, as_json=as_json)
        refuse_empty(database, panel, allow_empty=allow_empty_db)
        detail = show_run(database, run_id)
    if as_json:
        console.print_json(detail, target=panel.target)
    else:
        show_run_detail(detail)
