"""`autopack drain …`: run phases through the builder LLM with telemetry on."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from autopack import console
from autopack.cli.options import DbOption, DebugOption, JsonOption, QuietOption, UrlOption
from autopack.cli.target import announce, open_named, refuse_empty
from autopack.db.engine import OpenMode, translated_errors
from autopack.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, GuardError

if TYPE_CHECKING:  # the drain machinery loads in the command bodies: `--help` stays light
    from autopack.db.engine import Database
    from autopack.db.identity import TargetPanel
    from autopack.drain import BatchOptions, DrainReport, PhaseOptions
    from autopack.drain.controller import DrainInterrupted
    from autopack.estimator.coefficients import CoefficientSet
    from autopack.llm import LlmSettings

app = typer.Typer(
    help="Drain phases through the builder LLM, with telemetry.", no_args_is_help=True
)

WorkspaceOption = Annotated[
    Path,
    typer.Option(
        "--workspace",
        metavar="DIR",
        help="The code the builder writes into.",
    ),
]
NoTelemetryOption = Annotated[
    bool, typer.Option("--no-telemetry", help="Do not write telemetry rows (on by default).")
]
AllowDirtyOption = Annotated[
    bool, typer.Option("--allow-dirty", help="Write into scope paths with uncommitted changes.")
]
NoCommitOption = Annotated[
    bool,
    typer.Option(
        "--no-commit", help="In a git workspace, do not commit each completed phase's files."
    ),
]
IgnoreOrderOption = Annotated[
    bool,
    typer.Option(
        "--ignore-order",
        help="Drain a phase although an earlier phase of its run is not COMPLETE.",
    ),
]
AllowEmptyOption = Annotated[
    bool, typer.Option("--allow-empty-db", help="Act on a DB with 0 runs and 0 phases.")
]
CoefficientsOption = Annotated[
    str | None,
    typer.Option(
        "--coefficients",
        metavar="NAME",
        help="A coefficient set: built in, or stored in the DB (default: the DB's active set, "
        "else the built-in default).",
    ),
]
CoefficientsFileOption = Annotated[
    Path | None,
    typer.Option("--coefficients-file", metavar="FILE", help="A coefficient set JSON file."),
]
PytestTimeoutOption = Annotated[
    float,
    typer.Option(
        "--pytest-timeout", metavar="SECONDS", min=1, help="Seconds a tests phase's pytest may run."
    ),
]
SandboxOption = Annotated[
    str,
    typer.Option(
        "--sandbox",
        metavar="MODE",
        help="How the model's tests run: none, or bwrap (bubblewrap: only the workspace, no "
        "network, no database; `apt-get install bubblewrap`).",
    ),
]
BatchSizeOption = Annotated[
    int,
    typer.Option(
        "--batch-size", metavar="N", min=1, help="Most phase attempts this session makes."
    ),
]
WorkersOption = Annotated[
    int,
    typer.Option(
        "--workers", metavar="N", min=1, max=64, help="Phases drained at once (across runs)."
    ),
]
PhaseTimeoutOption = Annotated[
    float,
    typer.Option(
        "--phase-timeout-seconds", metavar="SECONDS", min=1, help="Wall-clock budget of one phase."
    ),
]


@dataclass(frozen=True)
class _Prepared:
    database: Database
    panel: TargetPanel
    settings: LlmSettings | None
    coefficients: CoefficientSet
    workspace: Path
    telemetry: bool
    tables_present: bool
    active_set_model: str | None = None
    """Follow the DB's active set for this model, per phase attempt (no --coefficients)."""
    drain_tables: bool = True
    """False on a legacy DB not upgraded yet: only a dry run gets this far."""


@contextmanager
def _prepare(
    *,
    db: str | None,
    database_url: str | None,
    workspace: Path,
    coefficients: str | None,
    coefficients_file: Path | None,
    no_telemetry: bool,
    allow_empty_db: bool,
    quiet: bool,
    as_json: bool,
    needs_llm: bool = True,
    writable: bool = True,
    commit: bool = True,
    sandbox: str = "none",
) -> Iterator[_Prepared]:
    """The drain's preflight (autopack.drain.preflight) with the target panel shown between
    its two halves: LLM configuration, sandbox, workspace; then the database's checks."""
    from autopack.drain.preflight import check_workspace, harden_process, prepare_drain
    from autopack.llm import load_llm_settings

    environ = console.environment().environ
    settings = load_llm_settings(environ) if needs_llm else None
    if needs_llm:
        warning = harden_process(sandbox)  # non-dumpable before any model code can run
        if warning is not None:
            console.warn(warning)
    root = check_workspace(workspace, coefficients_file)
    mode = OpenMode.READ_WRITE if writable else OpenMode.READ_ONLY
    with open_named(db, database_url, mode) as database:
        panel = announce(database, quiet=quiet, as_json=as_json)
        setup = prepare_drain(
            database,
            environ=environ,
            workspace=root,
            model=settings.model if settings else None,
            coefficients=coefficients,
            coefficients_file=coefficients_file,
            no_telemetry=no_telemetry,
            writable=writable,
            commit=commit,
            log=_logger(quiet, as_json),
        )
        refuse_empty(database, panel, allow_empty=allow_empty_db)
        for warning in setup.warnings:
            console.warn(warning)
        if not quiet and not as_json:
            builder = f"{settings.provider} {settings.model}" if settings else "none (dry run)"
            follow = " (the DB's active set, read per phase)" if setup.active_set_model else ""
            console.info(
                f"builder: {builder}; telemetry {setup.telemetry_reason}; workspace {root}; "
                f"coefficients {setup.coefficients.name}{follow}"
            )
        yield _Prepared(
            database,
            panel,
            settings,
            setup.coefficients,
            root,
            setup.telemetry,
            setup.tables_present,
            active_set_model=setup.active_set_model,
            drain_tables=setup.drain_tables,
        )


def _emit(report: DrainReport, panel: TargetPanel, *, as_json: bool, quiet: bool) -> None:
    from autopack.render.drain import show_drain_report

    if as_json:
        console.print_json(report, target=panel.target)
    else:
        show_drain_report(report, quiet=quiet)


@app.command()
def phase(
    run_id: Annotated[str, typer.Argument(help="The run id.")],
    phase_id: Annotated[str, typer.Argument(help="The phase id within the run.")],
    workspace: WorkspaceOption = Path("."),
    requeue: Annotated[
        bool, typer.Option("--requeue", help="Queue a FAILED phase again and drain it.")
    ] = False,
    allow_dirty: AllowDirtyOption = False,
    no_commit: NoCommitOption = False,
    ignore_order: IgnoreOrderOption = False,
    no_telemetry: NoTelemetryOption = False,
    allow_empty_db: AllowEmptyOption = False,
    coefficients: CoefficientsOption = None,
    coefficients_file: CoefficientsFileOption = None,
    pytest_timeout: PytestTimeoutOption = 300.0,
    sandbox: SandboxOption = "none",
    db: DbOption = None,
    database_url: UrlOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Drain one QUEUED phase end to end: exit 0 COMPLETE, 1 FAILED, 2 refused.

    e.g. autopack drain phase telemetry-collection-v4 telemetry-p1-string-util --db seed
    """
    from autopack.drain import PhaseOptions, drain_phase
    from autopack.llm import make_client
    from autopack.render.drain import show_refusal

    with _prepare(
        db=db,
        database_url=database_url,
        workspace=workspace,
        coefficients=coefficients,
        coefficients_file=coefficients_file,
        no_telemetry=no_telemetry,
        allow_empty_db=allow_empty_db,
        quiet=quiet,
        as_json=as_json,
        commit=not no_commit,
        sandbox=sandbox,
    ) as prepared:
        assert prepared.settings is not None
        options = PhaseOptions(
            workspace=prepared.workspace,
            coefficients=prepared.coefficients,
            active_set_model=prepared.active_set_model,
            telemetry_enabled=prepared.telemetry,
            telemetry_tables_present=prepared.tables_present,
            requeue=requeue,
            allow_dirty=allow_dirty,
            commit=not no_commit,
            ignore_order=ignore_order,
            pytest_timeout_s=pytest_timeout,
            temperature=prepared.settings.temperature,
            sandbox=sandbox,
        )
        with make_client(prepared.settings) as client:
            report = drain_phase(prepared.database.engine, client, run_id, phase_id, options)
        if report.refused and not as_json:
            show_refusal(report.results[0]["failure_reason"] or "refused", report.hint)
        else:
            _emit(report, prepared.panel, as_json=as_json, quiet=quiet)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


@app.command()
def queued(
    run_id: Annotated[
        str, typer.Option("--run-id", metavar="RUN", help="The run whose QUEUED phases to drain.")
    ],
    batch_size: BatchSizeOption = 25,
    workspace: WorkspaceOption = Path("."),
    allow_dirty: AllowDirtyOption = False,
    no_commit: NoCommitOption = False,
    ignore_order: IgnoreOrderOption = False,
    no_telemetry: NoTelemetryOption = False,
    allow_empty_db: AllowEmptyOption = False,
    coefficients: CoefficientsOption = None,
    coefficients_file: CoefficientsFileOption = None,
    pytest_timeout: PytestTimeoutOption = 300.0,
    sandbox: SandboxOption = "none",
    phase_timeout_seconds: PhaseTimeoutOption = 900.0,
    db: DbOption = None,
    database_url: UrlOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Drain a run's QUEUED phases in order, up to --batch-size; exit 1 if any failed.

    e.g. autopack drain queued --run-id telemetry-collection-v4 --batch-size 10 --db seed
    """
    from autopack.db.lookup import require_known_runs
    from autopack.drain import STATE_CHOICES, BatchOptions, Filters, Limits
    from autopack.drain.controller import DrainInterrupted

    with _prepare(
        db=db,
        database_url=database_url,
        workspace=workspace,
        coefficients=coefficients,
        coefficients_file=coefficients_file,
        no_telemetry=no_telemetry,
        allow_empty_db=allow_empty_db,
        quiet=quiet,
        as_json=as_json,
        commit=not no_commit,
        sandbox=sandbox,
    ) as prepared:
        with prepared.database.engine.connect() as connection:
            require_known_runs(connection, [run_id])
        # One attempt per phase: a phase that failed or was refused is never retried in a
        # loop, so the command stops when nothing QUEUED is left or nothing made progress.
        options = BatchOptions(
            filters=Filters(
                states=STATE_CHOICES["queued"], run_ids=(run_id,), ignore_order=ignore_order
            ),
            limits=Limits(
                batch_size=batch_size,
                max_timeouts_per_run=None,
                max_attempts_per_phase=1,
                max_fingerprint_repeats=None,
                sample_first=False,
            ),
            phase=_phase_options(
                prepared,
                allow_dirty,
                no_commit,
                pytest_timeout,
                phase_timeout_seconds,
                ignore_order=ignore_order,
                sandbox=sandbox,
            ),
            kind="queued",
        )
        try:
            report = _run(prepared, options, coefficients_file, quiet=quiet, as_json=as_json)
        except DrainInterrupted as stop:
            raise _interrupted(stop, prepared, "", as_json=as_json, quiet=quiet) from None
        _emit(report, prepared.panel, as_json=as_json, quiet=quiet)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


@app.command()
def batch(
    state: Annotated[
        str | None,
        typer.Option(
            "--state",
            metavar="STATE",
            help="failed | queued | all (default: failed for a legacy or unstamped DB, "
            "else queued).",
        ),
    ] = None,
    run_id: Annotated[
        list[str] | None,
        typer.Option("--run-id", metavar="RUN", help="Only these runs (repeatable)."),
    ] = None,
    skip_run_prefix: Annotated[
        list[str] | None,
        typer.Option(
            "--skip-run-prefix",
            metavar="PREFIX",
            help="Skip runs whose id starts with PREFIX (repeatable).",
        ),
    ] = None,
    batch_size: BatchSizeOption = 10,
    sample_first: Annotated[
        bool,
        typer.Option(
            "--sample-first/--no-sample-first",
            help="Try one phase of every run before a second phase of any.",
        ),
    ] = True,
    phase_timeout_seconds: PhaseTimeoutOption = 900.0,
    max_total_minutes: Annotated[
        float | None,
        typer.Option(
            "--max-total-minutes", metavar="MINUTES", min=0.01, help="Session time budget."
        ),
    ] = None,
    max_timeouts_per_run: Annotated[
        int,
        typer.Option(
            "--max-timeouts-per-run", metavar="N", min=1, help="Stop a run after this many."
        ),
    ] = 2,
    max_attempts_per_phase: Annotated[
        int,
        typer.Option("--max-attempts-per-phase", metavar="N", min=1, help="Attempts of one phase."),
    ] = 2,
    max_fingerprint_repeats: Annotated[
        int,
        typer.Option(
            "--max-fingerprint-repeats",
            metavar="N",
            min=1,
            help="Stop a run whose failure repeats.",
        ),
    ] = 3,
    max_consecutive_zero_yield: Annotated[
        int | None,
        typer.Option(
            "--max-consecutive-zero-yield", metavar="N", min=1, help="Stop after N zero-yield."
        ),
    ] = None,
    max_total_tokens: Annotated[
        int | None,
        typer.Option("--max-total-tokens", metavar="TOKENS", min=1, help="Session token budget."),
    ] = None,
    max_provider_failures: Annotated[
        int,
        typer.Option(
            "--max-provider-failures",
            metavar="N",
            min=1,
            help="Stop after this many provider failures in a row (outage breaker).",
        ),
    ] = 3,
    workers: WorkersOption = 1,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Select and triage only: no LLM, no writes.")
    ] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the latest unfinished batch session.")
    ] = False,
    session: Annotated[
        str | None,
        typer.Option("--session", metavar="SESSION", help="With --resume: this session id."),
    ] = None,
    workspace: WorkspaceOption = Path("."),
    allow_dirty: AllowDirtyOption = False,
    no_commit: NoCommitOption = False,
    ignore_order: IgnoreOrderOption = False,
    no_telemetry: NoTelemetryOption = False,
    allow_empty_db: AllowEmptyOption = False,
    coefficients: CoefficientsOption = None,
    coefficients_file: CoefficientsFileOption = None,
    pytest_timeout: PytestTimeoutOption = 300.0,
    sandbox: SandboxOption = "none",
    db: DbOption = None,
    database_url: UrlOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Drain a backlog token-safely: sample-first triage, fingerprints, stop conditions.

    Exit 0 when no phase failed, 1 when any failed or timed out, 2 refused, 130 interrupted
    (143 on SIGTERM).
    e.g. autopack drain batch --db legacy --batch-size 10 --max-total-minutes 60
    """
    from autopack.db.lookup import require_known_runs
    from autopack.drain import (
        BatchOptions,
        Filters,
        Limits,
        check_state_choice,
        choose_states,
        resume_batch,
    )
    from autopack.drain.controller import DrainInterrupted
    from autopack.llm import make_client
    from autopack.render.drain_live import drain_display

    check_state_choice(state)
    if session is not None and not resume:
        raise GuardError("--session names a session to resume.", hint="add --resume")
    if resume and dry_run:
        raise GuardError("a dry run cannot resume a session.", hint="drop --dry-run or --resume")
    with _prepare(
        db=db,
        database_url=database_url,
        workspace=workspace,
        coefficients=coefficients,
        coefficients_file=coefficients_file,
        no_telemetry=no_telemetry,
        allow_empty_db=allow_empty_db,
        quiet=quiet,
        as_json=as_json,
        needs_llm=not dry_run,
        writable=not dry_run,
        commit=not no_commit,
        sandbox=sandbox,
    ) as prepared:
        engine = prepared.database.engine
        target = _target_words(db, database_url, prepared)
        if resume:
            assert prepared.settings is not None
            with (
                make_client(prepared.settings) as client,
                drain_display(
                    quiet=quiet, as_json=as_json, max_total_tokens=max_total_tokens
                ) as display,
            ):
                try:
                    report = resume_batch(
                        engine,
                        client,
                        session_id=session,
                        kinds=("batch",),
                        telemetry_tables_present=prepared.tables_present,
                        workers=workers,
                        log=display.log,
                        on_result=display.on_result,
                        progress=display.progress,
                    )
                except DrainInterrupted as stop:
                    raise _interrupted(
                        stop, prepared, target, as_json=as_json, quiet=quiet
                    ) from None
        else:
            with engine.connect() as connection:
                require_known_runs(connection, run_id or [])
            choice = choose_states(engine, state)
            if not quiet and not as_json:
                console.info(
                    f"draining {choice.name} phases"
                    + (
                        f" (default for a {choice.default_for_role} database)"
                        if choice.default_for_role
                        else ""
                    )
                    + f"; {workers} worker(s), one phase per run at a time"
                    + ("; DRY RUN: no LLM calls, nothing written" if dry_run else "")
                )
            options = BatchOptions(
                filters=Filters(
                    states=choice.states,
                    run_ids=tuple(run_id or ()),
                    skip_run_prefixes=tuple(skip_run_prefix or ()),
                    ignore_order=ignore_order,
                ),
                limits=Limits(
                    batch_size=batch_size,
                    max_total_minutes=max_total_minutes,
                    max_timeouts_per_run=max_timeouts_per_run,
                    max_attempts_per_phase=max_attempts_per_phase,
                    max_fingerprint_repeats=max_fingerprint_repeats,
                    max_consecutive_zero_yield=max_consecutive_zero_yield,
                    max_total_tokens=max_total_tokens,
                    sample_first=sample_first,
                    max_provider_failures=max_provider_failures,
                ),
                phase=_phase_options(
                    prepared,
                    allow_dirty,
                    no_commit,
                    pytest_timeout,
                    phase_timeout_seconds,
                    ignore_order=ignore_order,
                    sandbox=sandbox,
                ),
                workers=workers,
                dry_run=dry_run,
                claims_table=prepared.drain_tables,
            )
            try:
                report = _run(prepared, options, coefficients_file, quiet=quiet, as_json=as_json)
            except DrainInterrupted as stop:
                raise _interrupted(stop, prepared, target, as_json=as_json, quiet=quiet) from None
        _emit(report, prepared.panel, as_json=as_json, quiet=quiet)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


def _phase_options(
    prepared: _Prepared,
    allow_dirty: bool,
    no_commit: bool,
    pytest_timeout: float,
    phase_timeout: float,
    *,
    ignore_order: bool = False,
    sandbox: str = "none",
) -> PhaseOptions:
    from autopack.drain import PhaseOptions

    return PhaseOptions(
        workspace=prepared.workspace,
        coefficients=prepared.coefficients,
        active_set_model=prepared.active_set_model,
        telemetry_enabled=prepared.telemetry,
        telemetry_tables_present=prepared.tables_present,
        allow_dirty=allow_dirty,
        commit=not no_commit,
        ignore_order=ignore_order,
        pytest_timeout_s=min(pytest_timeout, phase_timeout),
        phase_timeout_s=phase_timeout,
        lease_seconds=phase_timeout + 120,
        temperature=prepared.settings.temperature if prepared.settings else None,
        sandbox=sandbox,
    )


def _logger(quiet: bool, as_json: bool) -> console.Logger:
    return console.log_line if not (quiet or as_json) else console.silent


def _run(
    prepared: _Prepared,
    options: BatchOptions,
    coefficients_file: Path | None,
    *,
    quiet: bool,
    as_json: bool,
) -> DrainReport:
    from autopack.drain import run_batch
    from autopack.llm import make_client
    from autopack.render.drain_live import drain_display

    engine = prepared.database.engine
    with drain_display(
        quiet=quiet, as_json=as_json, max_total_tokens=options.limits.max_total_tokens
    ) as display:
        if options.dry_run:
            return run_batch(
                engine,
                None,
                options,
                log=display.log,
                on_result=display.on_result,
                progress=display.progress,
            )
        assert prepared.settings is not None
        with make_client(prepared.settings) as client:
            return run_batch(
                engine,
                client,
                options,
                coefficients_file=coefficients_file,
                log=display.log,
                on_result=display.on_result,
                progress=display.progress,
            )


def _interrupted(
    stop: DrainInterrupted, prepared: _Prepared, target: str, *, as_json: bool, quiet: bool
) -> typer.Exit:
    """Ctrl-C: what finished, the session, and the exact command that resumes it."""
    _emit(stop.report, prepared.panel, as_json=as_json, quiet=quiet)
    session = stop.report.session_id
    if stop.report.kind == "batch":
        command = f"autopack drain batch {target}--resume --session {session}".replace("  ", " ")
        console.log_line(f"interrupted: session {session} saved; resume it with:\n  {command}")
    else:
        console.log_line(f"interrupted: session {session} saved; run the same command to go on")
    return typer.Exit(EXIT_TERMINATED if stop.terminated else EXIT_INTERRUPTED)


def _target_words(db: str | None, database_url: str | None, prepared: _Prepared) -> str:
    """How the resume command names the DB: as the operator did (a URL with its password
    masked: secrets never reach output), or nothing when it came from DATABASE_URL."""
    if db is not None:
        return f"--db {shlex.quote(db)} "
    if database_url is not None:
        return f"--database-url {shlex.quote(prepared.database.target.display_url)} "
    return ""


@app.command()
def sessions(
    session_id: Annotated[str | None, typer.Argument(help="Show this session's results.")] = None,
    db: DbOption = None,
    database_url: UrlOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """List drain sessions, or show one session's results.

    e.g. autopack drain sessions --db legacy
    """
    from autopack.db.models import DRAIN_TABLES
    from autopack.db.schema import require_tables
    from autopack.drain import list_sessions, session_report
    from autopack.render.drain import show_sessions

    with open_named(db, database_url, OpenMode.READ_ONLY) as database:
        panel = announce(database, quiet=quiet, as_json=as_json)
        with translated_errors(database):
            require_tables(database, DRAIN_TABLES)
            if session_id is None:
                listing = list_sessions(database.engine)
            else:
                report = session_report(database.engine, session_id)
    if session_id is None:
        if as_json:
            console.print_json(listing, target=panel.target)
        else:
            show_sessions(listing)
        return
    _emit(report, panel, as_json=as_json, quiet=quiet)
