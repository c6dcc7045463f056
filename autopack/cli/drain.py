"""`autopack drain …`: run phases through the builder LLM with telemetry on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autopack import console
from autopack.cli.options import DbOption, DebugOption, JsonOption, QuietOption, UrlOption
from autopack.cli.target import announce, open_named
from autopack.db.engine import OpenMode, translated_errors
from autopack.db.guards import require_non_empty
from autopack.db.models import DRAIN_TABLES
from autopack.db.schema import require_tables
from autopack.drain.report import summarise
from autopack.drain.sessions import finish_session, start_session, worker_name
from autopack.errors import EXIT_FOUND_PROBLEMS, EXIT_REFUSED
from autopack.estimator.report import choose_coefficients
from autopack.executor.phase import PhaseOptions, drain_one_phase
from autopack.llm.base import make_client
from autopack.llm.settings import load_llm_settings
from autopack.render.drain import show_drain_report, show_refusal
from autopack.telemetry.recorder import telemetry_tables_present

app = typer.Typer(
    help="Drain phases through the builder LLM, with telemetry.", no_args_is_help=True
)

WorkspaceOption = Annotated[
    Path,
    typer.Option(
        "--workspace", help="The code the builder writes into (default: the current directory)."
    ),
]
NoTelemetryOption = Annotated[
    bool, typer.Option("--no-telemetry", help="Do not write telemetry rows (on by default).")
]
AllowDirtyOption = Annotated[
    bool, typer.Option("--allow-dirty", help="Write into scope paths with uncommitted changes.")
]
AllowEmptyOption = Annotated[
    bool, typer.Option("--allow-empty-db", help="Act on a DB with 0 runs and 0 phases.")
]
CoefficientsOption = Annotated[
    str | None, typer.Option("--coefficients", help="Built-in coefficient set (default: default).")
]
CoefficientsFileOption = Annotated[
    Path | None, typer.Option("--coefficients-file", help="A coefficient set JSON file.")
]
PytestTimeoutOption = Annotated[
    float, typer.Option("--pytest-timeout", help="Seconds a tests phase's pytest may run.")
]


@app.command()
def phase(
    run_id: Annotated[str, typer.Argument(help="The run id.")],
    phase_id: Annotated[str, typer.Argument(help="The phase id within the run.")],
    workspace: WorkspaceOption = Path("."),
    requeue: Annotated[
        bool, typer.Option("--requeue", help="Queue a FAILED phase again and drain it.")
    ] = False,
    allow_dirty: AllowDirtyOption = False,
    no_telemetry: NoTelemetryOption = False,
    allow_empty_db: AllowEmptyOption = False,
    coefficients: CoefficientsOption = None,
    coefficients_file: CoefficientsFileOption = None,
    pytest_timeout: PytestTimeoutOption = 300.0,
    db: DbOption = None,
    database_url: UrlOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Drain one QUEUED phase end to end: exit 0 COMPLETE, 1 FAILED, 2 refused.

    e.g. autopack drain phase telemetry-collection-v4 telemetry-p1-string-util --db seed
    """
    # Configuration first: a missing model or key must refuse before any phase is touched.
    settings = load_llm_settings()
    chosen = choose_coefficients(coefficients, coefficients_file)
    root = workspace.resolve()
    if not root.is_dir():
        raise typer.BadParameter(f"{root} is not a directory", param_hint="--workspace")
    telemetry = not no_telemetry
    with open_named(db, database_url, OpenMode.READ_WRITE) as database:
        panel = announce(database, quiet=quiet, as_json=as_json)
        with translated_errors(database):
            require_tables(database, DRAIN_TABLES)
            tables_present = telemetry_tables_present(database.engine)
            if not tables_present:
                console.warn(
                    "token_estimation_v2_events is missing: phases will be built but yield no "
                    "telemetry (autopack db upgrade adds the table)"
                )
            require_non_empty(
                panel.counts.get("runs", 0),
                panel.counts.get("phases", 0),
                display_url=database.target.display_url,
                allow_empty=allow_empty_db,
            )
            if not quiet and not as_json:
                console.info(
                    f"builder: {settings.provider} {settings.model}; telemetry "
                    + ("on (--no-telemetry turns it off)" if telemetry else "off (--no-telemetry)")
                    + f"; workspace {root}"
                )
            options = PhaseOptions(
                workspace=root,
                coefficients=chosen,
                telemetry_enabled=telemetry,
                telemetry_tables_present=tables_present,
                requeue=requeue,
                allow_dirty=allow_dirty,
                pytest_timeout_s=pytest_timeout,
                temperature=settings.temperature,
            )
            session_id = start_session(
                database.engine,
                kind="phase",
                options={
                    "run_id": run_id,
                    "phase_id": phase_id,
                    "workspace": str(root),
                    "requeue": requeue,
                    "coefficients": chosen.name,
                },
                telemetry_enabled=telemetry,
            )
            with make_client(settings) as client:
                try:
                    outcome = drain_one_phase(
                        database.engine,
                        client,
                        run_id,
                        phase_id,
                        options,
                        session_id=session_id,
                        worker=worker_name(),
                    )
                except BaseException:
                    finish_session(database.engine, session_id, status="failed")
                    raise
            finish_session(database.engine, session_id, status="completed")
    report = summarise(session_id, [outcome], telemetry_enabled=telemetry)
    if as_json:
        console.print_json(
            {"target": panel.target.model_dump(mode="json"), **report.model_dump(mode="json")}
        )
    elif outcome.outcome == "refused":
        show_refusal(outcome.failure_reason or "refused", outcome.hint)
    else:
        show_drain_report(report, quiet=quiet)
    if outcome.outcome == "refused":
        raise typer.Exit(EXIT_REFUSED)
    if outcome.outcome != "complete":
        raise typer.Exit(EXIT_FOUND_PROBLEMS)
