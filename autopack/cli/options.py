"""Options every DB command accepts after its name (`autopack db identity --db legacy --json`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import typer

from autopack.environment import Environment


@dataclass
class Invocation:
    """One run of the command line: its environment, and what the options said about errors.

    main hands it to Click as the context object; option callbacks fill it in while parsing,
    so main knows about --debug even when the command then fails.
    """

    env: Environment
    debug: bool = False


def _note_debug(ctx: typer.Context, value: bool) -> bool:
    invocation = ctx.find_object(Invocation)
    if value and invocation is not None:
        invocation.debug = True
    return value


DbOption = Annotated[
    str | None,
    typer.Option(
        "--db", metavar="NAME", help="A named database: seed, legacy, or one from autopack.toml."
    ),
]
UrlOption = Annotated[
    str | None,
    typer.Option(
        "--database-url", metavar="URL", help="sqlite:///path.db or postgresql://user@host/db."
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout (see docs/json.md).")
]
QuietOption = Annotated[
    bool, typer.Option("--quiet", "-q", help="Hide the target panel and progress.")
]
DebugOption = Annotated[
    bool, typer.Option("--debug", callback=_note_debug, help="Show tracebacks for errors.")
]
YesOption = Annotated[
    bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (scripts).")
]
