"""`autopack drain …`: run phases through the builder LLM with telemetry on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from autopack import console
from autopack.cli.options import DbOption, DebugOption, JsonOption, QuietOption, UrlOption
from autopack.cli.target import announce, open_named, refuse_empty
from autopack.db.engine import Database, OpenMode, translated_errors
from autopack.db.identity import TargetPanel
from autopack.db.meta import read_stamp
from autopack.db.models import DRAIN_TABLES
from autopack.db.schema import require_tables
from autopack.drain.attempt import PhaseOptions
from autopack.drain.batch import (
    STATE_CHOICES,
    default_state_choice,
    resume_batch,
    run_batch,
)
from autopack.drain.controller import BatchOptions
from autopack.drain.isolation import SANDBOXES, isolation_warning, make_non_dumpable
from autopack.drain.phase import attempt_phase
from autopack.drain.report import DrainReport, summarise
from autopack.drain.selection import Filters
from autopack.drain.sessions import (
    find_session,
    finish_session,
    list_sessions,
    session_entries,
    start_session,
    worker_name,
)
from autopack.drain.triage import Limits
from autopack.errors import EXIT_FOUND_PROBLEMS, EXIT_REFUSED, GuardError
from autopack.estimator.coefficients import CoefficientSet
from autopack.estimator.report import choose_coefficients
from autopack.executor.sandbox import find_bwrap
from autopack.llm.clients import make_client
from autopack.llm.settings import LlmSettings, load_llm_settings
from autopack.render.drain import show_drain_report, show_refusal, show_sessions
from autopack.telemetry.recorder import telemetry_tables_present
from autopack.telemetry.seal import lacks_seal_column

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
    float, typer.Option("--pytest-timeout", min=1, help="Seconds a tests phase's pytest may run.")
]
SandboxOption = Annotated[
    str,
    typer.Option(
        "--sandbox",
        help="How the model's tests run: none, or bwrap (bubblewrap: only the workspace, no "
        "network, no database; `apt-get install bubblewrap`).",
    ),
]
BatchSizeOption = Annotated[
    int, typer.Option("--batch-size", min=1, help="Most phase attempts this session makes.")
]
WorkersOption = Annotated[
    int, typer.Option("--workers", min=1, max=64, help="Phases drained at once (across runs).")
]
PhaseTimeoutOption = Annotated[
    float,
    typer.Option("--phase-timeout-seconds", min=1, help="Wall-clock budget of one phase."),
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
    sandbox: str = "none",
) -> Iterator[_Prepared]:
    """Everything a drain checks before it touches a phase, in the order an operator expects:
    LLM configuration, sandbox, workspace, database (panel, schema, empty guard), telemetry
    tables. A drain that will run model code first makes itself non-dumpable."""
    settings = load_llm_settings() if needs_llm else None
    if needs_llm:
        _harden(sandbox)
    chosen = choose_coefficients(coefficients, coefficients_file)
    root = workspace.resolve()
    if not root.is_dir():
        raise GuardError(f"workspace {root} is not a directory.", hint="give --workspace DIR")
    mode = OpenMode.READ_WRITE if writable else OpenMode.READ_ONLY
    with open_named(db, database_url, mode) as database:
        panel = announce(database, quiet=quiet, as_json=as_json)
        with translated_errors(database):
            state = require_tables(database, DRAIN_TABLES)
            if writable and lacks_seal_column(database.engine):
                raise GuardError(
                    f"{database.target.display_url} has no telemetry seal column (schema "
                    f"{state.revision or 'none'}, this autopack needs {state.head}).",
                    hint="back it up and bring it up to date with `autopack db upgrade`",
                )
            refuse_empty(database, panel, allow_empty=allow_empty_db)
            tables_present = telemetry_tables_present(database.engine)
            if not tables_present:
                console.warn(
                    "token_estimation_v2_events is missing: phases will be built but yield no "
                    "telemetry (autopack db upgrade adds the table)"
                )
            telemetry = not no_telemetry
            if not quiet and not as_json:
                builder = f"{settings.provider} {settings.model}" if settings else "none (dry run)"
                console.info(
                    f"builder: {builder}; telemetry "
                    + ("on (--no-telemetry turns it off)" if telemetry else "off (--no-telemetry)")
                    + f"; workspace {root}"
                )
            yield _Prepared(database, panel, settings, chosen, root, telemetry, tables_present)


def _harden(sandbox: str) -> None:
    if sandbox not in SANDBOXES:
        raise GuardError(
            f"--sandbox {sandbox!r} is not one of {', '.join(SANDBOXES)}.",
            hint="e.g. --sandbox bwrap",
        )
    if sandbox == "bwrap" and find_bwrap() is None:
        raise GuardError(
            "--sandbox bwrap: bubblewrap (bwrap) is not installed.",
            hint="install it (apt-get install bubblewrap, dnf install bubblewrap), or drain "
            "without --sandbox",
        )
    make_non_dumpable()
    warning = isolation_warning(sandbox)
    if warning is not None:
        console.warn(warning)


def _emit(report: DrainReport, panel: TargetPanel, *, as_json: bool, quiet: bool) -> None:
    if as_json:
        console.print_json(
            {"target": panel.target.model_dump(mode="json"), **report.model_dump(mode="json")}
        )
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
        sandbox=sandbox,
    ) as prepared:
        engine = prepared.database.engine
        assert prepared.settings is not None
        options = PhaseOptions(
            workspace=prepared.workspace,
            coefficients=prepared.coefficients,
            telemetry_enabled=prepared.telemetry,
            telemetry_tables_present=prepared.tables_present,
            requeue=requeue,
            allow_dirty=allow_dirty,
            pytest_timeout_s=pytest_timeout,
            temperature=prepared.settings.temperature,
            sandbox=sandbox,
        )
        session_id = start_session(
            engine,
            kind="phase",
            options={
                "run_id": run_id,
                "phase_id": phase_id,
                "workspace": str(prepared.workspace),
                "requeue": requeue,
                "coefficients": prepared.coefficients.name,
            },
            telemetry_enabled=prepared.telemetry,
        )
        with make_client(prepared.settings) as client:
            try:
                outcome = attempt_phase(
                    engine,
                    client,
                    run_id,
                    phase_id,
                    options,
                    session_id=session_id,
                    worker=worker_name(),
                )
            except BaseException:
                finish_session(engine, session_id, status="failed")
                raise
        finish_session(engine, session_id, status="completed")
        report = summarise(
            session_id, [outcome.entry()], kind="phase", telemetry_enabled=prepared.telemetry
        )
        if outcome.outcome == "refused" and not as_json:
            show_refusal(outcome.failure_reason or "refused", outcome.hint)
        else:
            _emit(report, prepared.panel, as_json=as_json, quiet=quiet)
    if outcome.outcome == "refused":
        raise typer.Exit(EXIT_REFUSED)
    if outcome.outcome != "complete":
        raise typer.Exit(EXIT_FOUND_PROBLEMS)


@app.command()
def queued(
    run_id: Annotated[str, typer.Option("--run-id", help="The run whose QUEUED phases to drain.")],
    batch_size: BatchSizeOption = 25,
    workspace: WorkspaceOption = Path("."),
    allow_dirty: AllowDirtyOption = False,
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
        sandbox=sandbox,
    ) as prepared:
        # One attempt per phase: a phase that failed or was refused is never retried in a
        # loop, so the command stops when nothing QUEUED is left or nothing made progress.
        options = BatchOptions(
            filters=Filters(states=STATE_CHOICES["queued"], run_ids=(run_id,)),
            limits=Limits(
                batch_size=batch_size,
                max_timeouts_per_run=None,
                max_attempts_per_phase=1,
                max_fingerprint_repeats=None,
                sample_first=False,
            ),
            phase=_phase_options(
                prepared, allow_dirty, pytest_timeout, phase_timeout_seconds, sandbox
            ),
            kind="queued",
        )
        report = _run(prepared, options, coefficients_file, quiet=quiet, as_json=as_json)
        _emit(report, prepared.panel, as_json=as_json, quiet=quiet)
    if report.any_failed:
        raise typer.Exit(EXIT_FOUND_PROBLEMS)


@app.command()
def batch(
    state: Annotated[
        str | None,
        typer.Option(
            "--state",
            help="failed | queued | all (default: failed for a legacy or unstamped DB, "
            "else queued).",
        ),
    ] = None,
    run_id: Annotated[
        list[str] | None, typer.Option("--run-id", help="Only these runs (repeatable).")
    ] = None,
    skip_run_prefix: Annotated[
        list[str] | None,
        typer.Option("--skip-run-prefix", help="Skip runs whose id starts so (repeatable)."),
    ] = None,
    batch_size: BatchSizeOption = 10,
    sample_first: Annotated[
        bool,
        typer.Option("--sample-first/--no-sample-first", help="One phase per run before seconds."),
    ] = True,
    phase_timeout_seconds: PhaseTimeoutOption = 900.0,
    max_total_minutes: Annotated[
        float | None, typer.Option("--max-total-minutes", min=0.01, help="Session time budget.")
    ] = None,
    max_timeouts_per_run: Annotated[
        int, typer.Option("--max-timeouts-per-run", min=1, help="Stop a run after this many.")
    ] = 2,
    max_attempts_per_phase: Annotated[
        int, typer.Option("--max-attempts-per-phase", min=1, help="Attempts of one phase.")
    ] = 2,
    max_fingerprint_repeats: Annotated[
        int,
        typer.Option("--max-fingerprint-repeats", min=1, help="Stop a run whose failure repeats."),
    ] = 3,
    max_consecutive_zero_yield: Annotated[
        int | None,
        typer.Option("--max-consecutive-zero-yield", min=1, help="Stop after N zero-yield."),
    ] = None,
    max_total_tokens: Annotated[
        int | None, typer.Option("--max-total-tokens", min=1, help="Session token budget.")
    ] = None,
    workers: WorkersOption = 1,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Select and triage only: no LLM, no writes.")
    ] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the latest unfinished batch session.")
    ] = False,
    session: Annotated[
        str | None, typer.Option("--session", help="With --resume: this session id.")
    ] = None,
    workspace: WorkspaceOption = Path("."),
    allow_dirty: AllowDirtyOption = False,
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

    Exit 0 when no phase failed, 1 when any failed or timed out, 2 refused, 130 interrupted.
    e.g. autopack drain batch --db legacy --batch-size 10 --max-total-minutes 60
    """
    if state is not None and state not in STATE_CHOICES:
        raise GuardError(
            f"--state {state!r} is not one of failed, queued, all.", hint="e.g. --state failed"
        )
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
        sandbox=sandbox,
    ) as prepared:
        engine = prepared.database.engine
        if resume:
            assert prepared.settings is not None
            with make_client(prepared.settings) as client:
                report = resume_batch(
                    engine,
                    client,
                    session_id=session,
                    kinds=("batch",),
                    telemetry_tables_present=prepared.tables_present,
                    workers=workers,
                    log=_logger(quiet, as_json),
                )
        else:
            with engine.connect() as connection:
                stamp = read_stamp(connection)
            choice = state or default_state_choice(stamp.role, stamp.stamped)
            if not quiet and not as_json:
                console.info(
                    f"draining {choice} phases"
                    + ("" if state else f" (default for a {stamp.role} database)")
                    + f"; {workers} worker(s), one phase per run at a time"
                    + ("; DRY RUN: no LLM calls, nothing written" if dry_run else "")
                )
            options = BatchOptions(
                filters=Filters(
                    states=STATE_CHOICES[choice],
                    run_ids=tuple(run_id or ()),
                    skip_run_prefixes=tuple(skip_run_prefix or ()),
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
                ),
                phase=_phase_options(
                    prepared, allow_dirty, pytest_timeout, phase_timeout_seconds, sandbox
                ),
                workers=workers,
                dry_run=dry_run,
            )
            report = _run(prepared, options, coefficients_file, quiet=quiet, as_json=as_json)
        _emit(report, prepared.panel, as_json=as_json, quiet=quiet)
    if report.any_failed:
        raise typer.Exit(EXIT_FOUND_PROBLEMS)


def _phase_options(
    prepared: _Prepared,
    allow_dirty: bool,
    pytest_timeout: float,
    phase_timeout: float,
    sandbox: str,
) -> PhaseOptions:
    return PhaseOptions(
        workspace=prepared.workspace,
        coefficients=prepared.coefficients,
        telemetry_enabled=prepared.telemetry,
        telemetry_tables_present=prepared.tables_present,
        allow_dirty=allow_dirty,
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
    engine = prepared.database.engine
    log = _logger(quiet, as_json)
    if options.dry_run:
        return run_batch(engine, None, options, log=log)
    assert prepared.settings is not None
    with make_client(prepared.settings) as client:
        return run_batch(engine, client, options, coefficients_file=coefficients_file, log=log)


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
    with open_named(db, database_url, OpenMode.READ_ONLY) as database:
        panel = announce(database, quiet=quiet, as_json=as_json)
        with translated_errors(database):
            require_tables(database, DRAIN_TABLES)
            engine = database.engine
            if session_id is None:
                rows = list_sessions(engine)
                if as_json:
                    console.print_json(
                        {"target": panel.target.model_dump(mode="json"), "sessions": rows}
                    )
                else:
                    show_sessions(rows)
                return
            row = find_session(engine, session_id, kinds=())
            if row is None:
                raise GuardError(
                    f"there is no drain session {session_id!r} in this database.",
                    hint="list them with `autopack drain sessions`",
                )
            state = row.state or {}
            report = summarise(
                row.id,
                session_entries(engine, row.id),
                kind=row.kind,
                telemetry_enabled=row.telemetry_enabled,
                stopped_runs=state.get("stopped_runs") or {},
                skipped_phases=state.get("skipped_phases") or {},
                stop_reason=row.stop_reason,
            )
    _emit(report, panel, as_json=as_json, quiet=quiet)
