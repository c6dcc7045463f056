"""`autopack db …`: create, identify, stamp, upgrade and check databases."""

from __future__ import annotations

from typing import Annotated

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
from autopack.db.identity import inspect_database, read_panel
from autopack.errors import EXIT_FOUND_PROBLEMS

app = typer.Typer(
    help="Create, identify, stamp, upgrade and check databases.", no_args_is_help=True
)

RoleOption = Annotated[
    str | None,
    typer.Option(
        "--role", help="Role to stamp: seed, legacy, general (default from --db, else general)."
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

    The only command that creates a database. e.g. autopack db init --db seed
    """
    from autopack.db.lifecycle import init_database  # Alembic: loaded only to change a schema

    result = init_database(target_named(db, database_url), role)
    panel = None
    if not result.target.in_memory:
        with open_named(db, database_url, OpenMode.READ_ONLY) as database:
            panel = read_panel(database)
    if as_json:
        console.print_json(
            {
                "target": panel.target.model_dump(mode="json") if panel else None,
                "role": result.role,
                "db_id": result.db_id,
                "revision": result.revision,
                "created_file": result.created_file,
            }
        )
        return
    if panel is not None and not quiet:
        console.show_panel(panel, title="database created")
    console.info(f"initialised with schema {result.revision}, role [bold]{result.role}[/]")


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
    with open_named(db, database_url, OpenMode.READ_ONLY) as database:
        report = inspect_database(database)
    if as_json:
        console.print_json(report)
    else:
        console.show_identity(report)


@app.command()
def stamp(
    role: Annotated[
        str, typer.Option("--role", help="The role to stamp: seed, legacy, general, …")
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
        panel = read_panel(database)
    if as_json:
        console.print_json(
            {
                "target": panel.target.model_dump(mode="json"),
                "previous_role": result.previous.role if result.previous.stamped else None,
                "role": result.current.role,
                "db_id": result.current.db_id,
            }
        )
        return
    before = result.previous.role if result.previous.stamped else "unstamped"
    console.info(f"role: {before} → [bold]{result.current.role}[/] (db id {result.current.db_id})")


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
    from autopack.db.lifecycle import plan_upgrade, upgrade_database

    with open_named(db, database_url, OpenMode.READ_WRITE) as database:
        panel = announce(database, quiet=quiet, as_json=as_json)
        plan = plan_upgrade(database)
        if plan.nothing_to_do:
            if as_json:
                console.print_json(
                    {
                        "target": panel.target.model_dump(mode="json"),
                        "changed": False,
                        "revision": plan.state.revision,
                    }
                )
            else:
                console.info(f"already at schema {plan.state.revision}: nothing to do")
            return
        if not as_json:
            _show_plan(
                plan.tables_to_create, plan.columns_to_add, plan.state.revision, plan.state.head
            )
        confirm_or_refuse(yes, "Upgrade this database now (a backup is made first)?")
        result = upgrade_database(database)
        after = read_panel(database)
    if as_json:
        console.print_json(
            {
                "target": after.target.model_dump(mode="json"),
                "changed": True,
                "revision": result.revision,
                "backup_path": str(result.backup_path) if result.backup_path else None,
                "created_tables": list(plan.tables_to_create),
                "added_columns": {t: list(c) for t, c in plan.columns_to_add.items()},
                "rows_before": result.rows_before,
                "rows_after": result.rows_after,
            }
        )
        return
    if result.backup_path:
        console.info(f"backup: {result.backup_path}")
    kept = sum(result.rows_before.values())
    console.info(f"upgraded to schema {result.revision}; all {kept:,} rows kept")


@app.command()
def check(
    db: DbOption = None,
    database_url: UrlOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Does the schema match this autopack? Read-only; exit 1 if not.

    e.g. autopack db check --db seed
    """
    from autopack.db.lifecycle import check_database

    with open_named(db, database_url, OpenMode.READ_ONLY) as database:
        panel = announce(database, quiet=quiet, as_json=as_json)
        state = check_database(database)
    if as_json:
        console.print_json(
            {
                "target": panel.target.model_dump(mode="json"),
                "matches": state.matches_code,
                "revision": state.revision,
                "head": state.head,
                "missing_tables": list(state.missing_tables),
                "missing_columns": {t: list(c) for t, c in state.missing_columns.items()},
            }
        )
    elif state.matches_code:
        console.info(f"schema matches this autopack (revision {state.head})")
    else:
        _show_plan(state.missing_tables, state.missing_columns, state.revision, state.head)
        console.info("schema does not match: run `autopack db upgrade` on it")
    if not state.matches_code:
        raise typer.Exit(EXIT_FOUND_PROBLEMS)


def _show_plan(
    tables: tuple[str, ...], columns: dict[str, tuple[str, ...]], revision: str | None, head: str
) -> None:
    console.info(f"schema revision: {revision or 'none'} → {head}")
    for table in tables:
        console.info(f"  + table {table}")
    for table, names in columns.items():
        console.info(f"  + columns on {table}: {', '.join(names)}")
