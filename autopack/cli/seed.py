"""`autopack seed list|show|run`: built-in and user seed runs of known-easy phases."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from autopack import console
from autopack.cli.options import DbOption, DebugOption, JsonOption, QuietOption, UrlOption
from autopack.cli.target import announce, open_named
from autopack.db.engine import OpenMode
from autopack.errors import ConfigError

if TYPE_CHECKING:  # the seed machinery loads in the command bodies: `--help` stays light
    from autopack.seed.model import SeedRunSpec

app = typer.Typer(
    help="Seed runs of small, known-easy phases that yield clean telemetry samples.",
    no_args_is_help=True,
)

NameArgument = Annotated[
    str | None,
    typer.Argument(
        metavar="NAME", help="A built-in seed run, e.g. telemetry-balanced (autopack seed list)."
    ),
]
FileOption = Annotated[
    Path | None,
    typer.Option(
        "--file", "-f", metavar="PATH", help="Your own seed file, .toml or .json (docs/seeding.md)."
    ),
]
RunIdOption = Annotated[
    str | None,
    typer.Option(
        "--run-id",
        metavar="ID",
        help="Create the run under this id instead of the one in the seed run (phase ids kept).",
    ),
]
ForceRoleOption = Annotated[
    bool,
    typer.Option(
        "--force-role", help="Seed a database whose role is not seed or general (e.g. legacy)."
    ),
]


def _load(
    name: str | None, file: Path | None, run_id: str | None
) -> tuple[SeedRunSpec, str | None, str | None]:
    """The spec to seed, and where it came from (built-in name, or the file's absolute path)."""
    from autopack.seed.catalog import builtin_names, load_builtin
    from autopack.seed.files import check_run_id, load_seed_file

    if run_id is not None:
        check_run_id(run_id)
    if name is not None and file is not None:
        raise ConfigError(
            f"give either a built-in seed run ({name}) or --file ({file}), not both.",
            hint="drop one of them",
        )
    if name is None and file is None:
        raise ConfigError(
            "no seed run given: name a built-in one or give --file.",
            hint=f"built-in runs: {', '.join(builtin_names())}; "
            "e.g. autopack seed run telemetry-balanced --db seed",
        )
    if name is not None:
        return load_builtin(name, run_id=run_id), name, None
    assert file is not None  # both None was refused above
    path = file.expanduser().absolute()
    return load_seed_file(path, run_id=run_id), None, str(path)


@app.command("list")
def list_runs(
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """List the built-in seed runs with their mix and coverage (no database needed).

    e.g. autopack seed list
    """
    from autopack.render.seed import show_builtins
    from autopack.seed.plan import list_builtins

    summaries = list_builtins()
    if as_json:
        console.print_json({"builtins": [s.model_dump(mode="json") for s in summaries]})
    else:
        show_builtins(summaries)


@app.command()
def show(
    name: NameArgument = None,
    file: FileOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Show a seed run's budgets, phases and coverage; checks a seed file (no database needed).

    e.g. autopack seed show telemetry-balanced   or   autopack seed show --file my_phases.toml
    """
    from autopack.render.seed import show_plan
    from autopack.seed.plan import plan_of

    # No --run-id here: `seed run` renames the run it creates; the plan shown is the file's.
    spec, builtin, source_file = _load(name, file, None)
    plan = plan_of(spec, builtin=builtin, file=source_file)
    if as_json:
        console.print_json(plan)
    else:
        show_plan(plan)


@app.command()
def run(
    name: NameArgument = None,
    file: FileOption = None,
    run_id: RunIdOption = None,
    force_role: ForceRoleOption = False,
    db: DbOption = None,
    database_url: UrlOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Create a seed run (a run, tier T1 and QUEUED phases) and print what it covers.

    Refuses a run id that exists (never overwrites), and a database whose role is not seed or
    general unless --force-role. The database must exist (autopack db init --db seed).

    e.g. autopack seed run telemetry-collection-v4 --db seed
         autopack seed run --file my_phases.toml --db seed
    """
    from autopack.render.seed import show_report
    from autopack.seed.create import seed_run

    spec, builtin, source_file = _load(name, file, run_id)
    with open_named(db, database_url, OpenMode.READ_WRITE) as database:
        panel = announce(database, quiet=quiet, as_json=as_json)
        report = seed_run(database, spec, builtin=builtin, file=source_file, force_role=force_role)
    if as_json:
        console.print_json(
            {"target": panel.target.model_dump(mode="json"), **report.model_dump(mode="json")}
        )
    else:
        show_report(report, quiet=quiet)
