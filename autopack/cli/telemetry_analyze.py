"""`autopack telemetry analyze`: risk, cost, accuracy and coverage of the telemetry in a DB."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autopack import console
from autopack.cli.options import DbOption, DebugOption, JsonOption, QuietOption, UrlOption
from autopack.cli.target import announce, open_named
from autopack.db.engine import OpenMode, translated_errors
from autopack.errors import EXIT_FOUND_PROBLEMS
from autopack.telemetry.choices import DEFAULT_MIN_TOTAL


def analyze_command(
    success_only: Annotated[
        bool, typer.Option("--success-only", help="Only builder-level successes (success = true).")
    ] = False,
    run_id: Annotated[
        list[str] | None,
        typer.Option("--run-id", metavar="RUN", help="Only this run (repeatable)."),
    ] = None,
    category: Annotated[
        list[str] | None,
        typer.Option(
            "--category",
            metavar="CATEGORY",
            help="Only this category, normalised: tests also selects testing (repeatable).",
        ),
    ] = None,
    complexity: Annotated[
        list[str] | None,
        typer.Option(
            "--complexity",
            metavar="LEVEL",
            help="Only this complexity: low, medium, high, maintenance (repeatable).",
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", metavar="WHEN", help="From this ISO date/time, inclusive (UTC)."),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option("--until", metavar="WHEN", help="Before this ISO date/time, exclusive (UTC)."),
    ] = None,
    under_multiplier: Annotated[
        float,
        typer.Option(
            "--under-multiplier",
            metavar="M",
            help="Count a call underestimated when actual > predicted × M.",
        ),
    ] = 1.0,
    stratify: Annotated[
        bool,
        typer.Option(
            "--stratify", help="Add rates by category, complexity and deliverable bucket."
        ),
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="FILE", help="Also write the report as Markdown."),
    ] = None,
    check: Annotated[
        bool,
        typer.Option("--check", help="Exit 1 when a target is missed or there is no sample (CI)."),
    ] = False,
    coverage_goal: Annotated[
        int,
        typer.Option(
            "--coverage-goal", metavar="N", help="Clean samples needed in all to calibrate."
        ),
    ] = DEFAULT_MIN_TOTAL,
    allow_empty_db: Annotated[
        bool, typer.Option("--allow-empty-db", help="Analyse a DB with 0 runs and 0 phases.")
    ] = False,
    db: DbOption = None,
    database_url: UrlOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Judge the telemetry against the runbook's targets (read-only; from the DB, not logs).

    Underestimation ≤ 5 % and truncation ≤ 2 % (Tier 1), waste and SMAPE (Tier 2), and whether
    the clean samples cover every category, complexity and deliverable bucket.
    Exits 0 whatever the verdict; with --check, 1 when a target is missed.
    e.g. autopack telemetry analyze --db seed --success-only --stratify
    """
    from autopack.db.lookup import require_known_runs
    from autopack.render.telemetry_analyze import (
        output_path,
        show_analysis,
        show_written,
        write_markdown,
    )
    from autopack.telemetry.analyze import AnalyzeOptions, analyze_telemetry, parse_time_bound

    options = AnalyzeOptions(
        success_only=success_only,
        run_ids=tuple(run_id or ()),
        categories=tuple(category or ()),
        complexities=tuple(complexity or ()),
        since=parse_time_bound(since, "--since") if since is not None else None,
        until=parse_time_bound(until, "--until") if until is not None else None,
        under_multiplier=under_multiplier,
        stratify=stratify,
        coverage_goal=coverage_goal,
        allow_empty_db=allow_empty_db,
    )
    with open_named(db, database_url, OpenMode.READ_ONLY) as database:
        panel = announce(database, quiet=quiet, as_json=as_json)
        destination = output_path(output, panel.target) if output is not None else None
        if options.run_ids:
            with translated_errors(database), database.engine.connect() as connection:
                # A run known only from imported telemetry is a run too.
                require_known_runs(connection, options.run_ids, or_telemetry=True)
        report = analyze_telemetry(database, options)
    written = write_markdown(report, destination, panel.target) if destination else None
    if as_json:
        console.print_json(
            {
                "target": panel.target.model_dump(mode="json"),
                **report.model_dump(mode="json"),
                "output": str(written) if written is not None else None,
            }
        )
    else:
        show_analysis(report)
        if written is not None:
            show_written(written)
    if check and not report.targets_met:
        raise typer.Exit(EXIT_FOUND_PROBLEMS)
