"""`autopack db …`: create, identify, stamp, upgrade and check databases."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Annotated

import typer

from autopack import console
from autopack.cli.confirm import confirm_or_refuse
from autopack.cli.options import (
    DbOption,
    DebugOption,
    JsonOption,
    QuietOption,
    UrlOption,
    YesOption,
)
from autopack.cli.target import announce, open_named, target_named
from autopack.db.engine import OpenMode
from autopack.errors import EXIT_FOUND_PROBLEMS, TargetError

if TYPE_CHECKING:  # the readers load in the command bodies: `--help` stays light
    from autopack.db.integrity import IntegrityReport

app = typer.Typer(
    help="Create, identify, stamp, upgrade and check databases.", no_args_is_help=True
)

RoleOption = Annotated[
    str | None,
    typer.Option(
        "--role",
        metavar="ROLE",
        help="Role to stamp: seed, legacy, general (default from --db, else general).",
    ),
]


@app.command()
def init(
    role: RoleOption = None,
    db: DbOption = None,
    database_url: UrlOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Create a new database with autopack's schema and stamp its role.

    The only command that creates a database.

    e.g. autopack db init --db seed
    """
    from autopack.db.lifecycle import init_database  # Alembic: loaded only to change a schema

    result = init_database(target_named(db, database_url), role)
    if as_json:
        console.print_json(result)
        return
    if result.panel is not None and not quiet:
        console.show_panel(result.panel, title="database created")
    console.report(f"initialised with schema {result.revision}, role [bold]{result.role}[/]")


@app.command()
def identity(
    db: DbOption = None,
    database_url: UrlOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Show which database this is (read-only): file, size, role, counts, states, telemetry.

    e.g. autopack db identity --db legacy
    """
    from autopack.db.identity import inspect_database

    with open_named(db, database_url, OpenMode.READ_ONLY) as database:
        report = inspect_database(database)
    if as_json:
        console.print_json(report)
    else:
        from autopack.render.db import show_identity

        show_identity(report)


@app.command()
def stamp(
    role: Annotated[
        str,
        typer.Option("--role", metavar="ROLE", help="The role to stamp: seed, legacy, general, …"),
    ],
    db: DbOption = None,
    database_url: UrlOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Stamp a database's role (e.g. one made by the original Autopack).

    e.g. autopack db stamp --db legacy --role legacy
    """
    from autopack.db.lifecycle import stamp_database

    with open_named(db, database_url, OpenMode.READ_WRITE) as database:
        announce(database, quiet=quiet, as_json=as_json)
        result = stamp_database(database, role)
    if as_json:
        console.print_json(result)
        return
    before = result.previous.role if result.previous.stamped else "unstamped"
    console.report(
        f"role: {before} → [bold]{result.current.role}[/] (db id {result.current.db_id})"
    )


@app.command()
def upgrade(
    yes: YesOption = False,
    db: DbOption = None,
    database_url: UrlOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Bring a database to autopack's schema, after a backup; no row is lost.

    e.g. autopack db upgrade --db legacy
    """
    from autopack.db.lifecycle import LEGACY_STAMP_REASON, UpgradePlan, upgrade_database

    def confirm(plan: UpgradePlan) -> None:
        if not as_json:
            state = plan.state
            _show_plan(
                plan.tables_to_create,
                plan.columns_to_add,
                state.revision,
                state.head,
                console.log_line,
            )
            if plan.stamp_role is not None:
                console.info(f"  stamp role={plan.stamp_role} ({LEGACY_STAMP_REASON})")
        confirm_or_refuse(yes, "Upgrade this database now (a backup is made first)?")

    with open_named(db, database_url, OpenMode.READ_WRITE) as database:
        announce(database, quiet=quiet, as_json=as_json)
        on_wait = console.silent if quiet else console.log_line
        result = upgrade_database(database, confirm=confirm, on_wait=on_wait)
    if as_json:
        console.print_json(result)
    elif not result.changed:
        console.report(f"already at schema {result.revision}: nothing to do")
    else:
        if result.backup_path:
            console.report_text(f"backup: {result.backup_path}")
        kept = sum((result.rows_before or {}).values())
        console.report(f"upgraded to schema {result.revision}; all {kept:,} rows kept")
        if result.plan.stamp_role is not None:
            console.report(f"stamped role {result.plan.stamp_role} ({LEGACY_STAMP_REASON})")


@app.command()
def check(
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help="Run SQLite's integrity_check (indexes against tables too) instead of its "
            "quick_check; both read the whole file.",
        ),
    ] = False,
    db: DbOption = None,
    database_url: UrlOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Is the file whole, and does its schema match this autopack? Read-only; exit 1 if not.

    e.g. autopack db check --db seed --full
    """
    from autopack.db.lifecycle import check_database

    with open_named(db, database_url, OpenMode.READ_ONLY) as database:
        # A damaged file may fail the panel's reads: the check below says why.
        with contextlib.suppress(TargetError):
            announce(database, quiet=quiet, as_json=as_json)
        result = check_database(database, full=full)
    integrity, state = result.integrity, result.state
    if as_json:
        console.print_json(result)
    elif not integrity.ok:
        found = len(integrity.problems)
        console.report(f"damaged: PRAGMA {integrity.mode} found {found} problem(s):")
        for problem in integrity.problems:
            console.report_text(f"  {problem}")
        console.report("restore it from a backup (db upgrade leaves one beside the file)")
    elif state is not None and state.matches_code:
        console.report(f"schema matches this autopack (revision {state.head}); {_whole(integrity)}")
    elif state is not None and state.newer:
        console.warn(state.compatibility.warning() or "")
    elif state is not None:
        _show_plan(
            state.missing_tables,
            state.missing_columns,
            state.revision,
            state.head,
            console.report_text,
        )
        console.report("schema does not match: run `autopack db upgrade` on it")
    if not result.ok:
        raise typer.Exit(EXIT_FOUND_PROBLEMS)


def _whole(integrity: IntegrityReport) -> str:
    if not integrity.checked:
        return "PostgreSQL checks its own pages (no file check to run)"
    return f"PRAGMA {integrity.mode} found no damage"


def _show_plan(
    tables: tuple[str, ...],
    columns: dict[str, tuple[str, ...]],
    revision: str | None,
    head: str,
    say: console.Logger,
) -> None:
    """What a schema lacks: before `db upgrade` acts (stderr), or as `db check`'s report."""
    say(f"schema revision: {revision or 'none'} → {head}")
    for table in tables:
        say(f"  + table {table}")
    for table, names in columns.items():
        say(f"  + columns on {table}: {', '.join(names)}")
