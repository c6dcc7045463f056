"""`autopack telemetry explain`: why did drained phases yield no telemetry?"""

from __future__ import annotations

from typing import Annotated

import typer

from autopack import console
from autopack.cli.options import DbOption, DebugOption, JsonOption, QuietOption, UrlOption
from autopack.cli.target import announce, open_named, refuse_empty
from autopack.db.engine import OpenMode, translated_errors
from autopack.errors import EXIT_FOUND_PROBLEMS, GuardError


def explain_command(
    session: Annotated[
        str | None, typer.Option("--session", metavar="SESSION", help="Only this drain session.")
    ] = None,
    run_id: Annotated[
        str | None, typer.Option("--run-id", metavar="RUN", help="Only this run.")
    ] = None,
    allow_empty_db: Annotated[
        bool, typer.Option("--allow-empty-db", help="Act on a DB with 0 runs and 0 phases.")
    ] = False,
    db: DbOption = None,
    database_url: UrlOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """List every drained phase that yielded no telemetry, by reason, with the evidence.

    Exit 0; 1 if an attempt has no recorded reason (never for attempts autopack made).
    e.g. autopack telemetry explain --db legacy --session SESSION_ID
    """
    from autopack.db.lookup import require_known_runs
    from autopack.db.models import DRAIN_TABLES
    from autopack.db.schema import require_tables
    from autopack.render.telemetry_explain import show_explanation
    from autopack.telemetry.explain import explain_zero_yield, session_exists

    with open_named(db, database_url, OpenMode.READ_ONLY) as database:
        panel = announce(database, quiet=quiet, as_json=as_json)
        with translated_errors(database):
            require_tables(database, DRAIN_TABLES)
            refuse_empty(database, panel, allow_empty=allow_empty_db)
            if session is not None and not session_exists(database.engine, session):
                raise GuardError(
                    f"there is no drain session {session!r} in this database.",
                    hint="list them with `autopack drain sessions`",
                )
            if run_id is not None:
                with database.engine.connect() as connection:
                    require_known_runs(connection, [run_id])
            report = explain_zero_yield(database.engine, session_id=session, run_id=run_id)
    if as_json:
        console.print_json(
            {"target": panel.target.model_dump(mode="json"), **report.model_dump(mode="json")}
        )
    else:
        show_explanation(report, quiet=quiet)
    if report.unexplained:
        raise typer.Exit(EXIT_FOUND_PROBLEMS)
