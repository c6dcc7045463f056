"""`autopack triage …`: find the phases nothing will pick up again, and fail them on request."""

from __future__ import annotations

from typing import Annotated

import typer

from autopack.cli.confirm import confirm_or_refuse
from autopack.cli.options import (
    DbOption,
    DebugOption,
    JsonOption,
    QuietOption,
    UrlOption,
    YesOption,
)
from autopack.cli.target import announce, open_named, refuse_empty
from autopack.db.engine import Database, OpenMode
from autopack.errors import EXIT_FOUND_PROBLEMS, ConfigError
from autopack.render.triage import (
    mark_progress,
    show_mark_result,
    show_next_step,
    show_stale_report,
    write_stale_json,
)
from autopack.triage import (
    DEFAULT_STALE_HOURS,
    MarkResult,
    StaleReport,
    mark_stale_failed,
    stale_report,
    stale_threshold,
)

app = typer.Typer(
    help="Find stale phases (QUEUED untouched, EXECUTING with a dead worker) and fail them.",
    no_args_is_help=True,
)

DEFAULT_SHOW = 50


@app.callback()
def triage() -> None:
    """Find phases that nothing will pick up again."""


@app.command()
def stale(
    stale_hours: Annotated[
        float | None,
        typer.Option(
            "--stale-hours",
            metavar="HOURS",
            help=f"Threshold in hours (default {DEFAULT_STALE_HOURS:g}); e.g. 48 or 0.5.",
        ),
    ] = None,
    max_age_minutes: Annotated[
        int | None,
        typer.Option(
            "--max-age-minutes",
            metavar="MINUTES",
            help="Threshold in minutes (instead of --stale-hours).",
        ),
    ] = None,
    report_only: Annotated[
        bool, typer.Option("--report-only", help="Only list them (the default).")
    ] = False,
    mark_failed: Annotated[
        bool,
        typer.Option(
            "--mark-failed",
            help="Mark them FAILED with a [STALE] reason (keeps the old one), in one transaction.",
        ),
    ] = False,
    include_unleased: Annotated[
        bool,
        typer.Option(
            "--include-unleased",
            help="With --mark-failed: also mark EXECUTING phases that have no lease at all.",
        ),
    ] = False,
    show: Annotated[
        int,
        typer.Option(
            "--show", metavar="N", help="List at most N phases per table (0: all); --json: all."
        ),
    ] = DEFAULT_SHOW,
    allow_empty_db: Annotated[
        bool, typer.Option("--allow-empty-db", help="Act on a DB with 0 runs and 0 phases.")
    ] = False,
    yes: YesOption = False,
    db: DbOption = None,
    database_url: UrlOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """List stale phases (exit 1 if any); with --mark-failed, mark them FAILED.

    Stale: QUEUED phases untouched for longer than the threshold (default 48 h), and EXECUTING
    phases whose lease expired (a dead worker). EXECUTING phases without any lease are listed
    apart. See docs/triage.md.

    e.g. autopack triage stale --db legacy --report-only

    e.g. autopack triage stale --db legacy --mark-failed --stale-hours 48
    """
    if report_only and mark_failed:
        raise ConfigError(
            "--report-only and --mark-failed contradict each other.",
            hint="drop --report-only to mark the stale phases FAILED",
        )
    if include_unleased and not mark_failed:
        raise ConfigError(
            "--include-unleased only applies to --mark-failed (the report lists them anyway).",
            hint="add --mark-failed, or drop --include-unleased",
        )
    if show < 0:
        raise ConfigError(f"--show must be 0 (all) or more, not {show}.", hint="e.g. --show 100")
    threshold = stale_threshold(stale_hours, max_age_minutes)
    mode = OpenMode.READ_WRITE if mark_failed else OpenMode.READ_ONLY
    with open_named(db, database_url, mode) as database:
        panel = announce(database, quiet=quiet, as_json=as_json)
        refuse_empty(database, panel, allow_empty=allow_empty_db)
        # Marking needs every entry; a report reads a screenful, or (--json) every entry's text.
        keep = None if mark_failed else 0 if as_json else show or None
        report = stale_report(database, threshold, keep=keep, documents=as_json)
        if not as_json:
            show_stale_report(report, keep=show or None)
        if mark_failed:
            result = _mark(
                database, report, include_unleased=include_unleased, yes=yes, quiet=quiet or as_json
            )
            if as_json:
                write_stale_json(report.with_marks(result), panel.target, result)
            elif report.found:
                show_mark_result(
                    result, unleased_left=0 if include_unleased else report.unleased.count
                )
        elif as_json:
            write_stale_json(report, panel.target)
        elif report.found:
            show_next_step()
    if report.found:
        raise typer.Exit(EXIT_FOUND_PROBLEMS)


def _mark(
    database: Database, report: StaleReport, *, include_unleased: bool, yes: bool, quiet: bool
) -> MarkResult:
    """Ask (or take --yes), then mark; nothing to mark needs no question."""
    total = report.count + (report.unleased.count if include_unleased else 0)
    if not total:
        return MarkResult(marked_at=report.query.now)
    phases = "stale phase" if total == 1 else "stale phases"
    confirm_or_refuse(yes, f"Mark {total:,} {phases} FAILED in {database.target.display_url}?")
    with mark_progress(total, enabled=not quiet) as progress:
        return mark_stale_failed(
            database, report, include_unleased=include_unleased, progress=progress
        )
