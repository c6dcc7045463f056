"""`autopack phases show RUN PHASE`: everything that happened to one phase (read-only)."""

from __future__ import annotations

from typing import Annotated

import typer

from autopack import console
from autopack.cli.options import DbOption, DebugOption, JsonOption, QuietOption, UrlOption
from autopack.cli.runs import AllowEmptyOption
from autopack.cli.target import announce, open_named, refuse_empty
from autopack.db.engine import OpenMode
from autopack.render.runs import show_phase_detail
from autopack.runs import show_phase

app = typer.Typer(help="Show one phase: its attempts, telemetry and transcripts (read-only).")


@app.callback(no_args_is_help=True)
def phases() -> None:
    """Show one phase: its attempts, telemetry and transcripts (read-only)."""


@app.command("show")
def show_command(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="The phase's run.")],
    phase_id: Annotated[str, typer.Argument(metavar="PHASE", help="The phase's id in that run.")],
    allow_empty_db: AllowEmptyOption = False,
    db: DbOption = None,
    database_url: UrlOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Show one phase: every drain attempt at it, every telemetry row, its transcripts.

    Attempts: across drain sessions, with outcome, reason, fingerprint and transcript files.

    Telemetry: predicted vs actual output tokens, budget, truncation, coefficient set.

    e.g. autopack phases show telemetry-collection-v4 telemetry-p1-string-util --db seed
    """
    with open_named(db, database_url, OpenMode.READ_ONLY) as database:
        panel = announce(database, quiet=quiet, as_json=as_json)
        refuse_empty(database, panel, allow_empty=allow_empty_db)
        detail = show_phase(database, run_id, phase_id)
    if as_json:
        console.print_json(detail, target=panel.target)
    else:
        show_phase_detail(detail)
