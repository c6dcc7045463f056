"""Options every DB command accepts after its name (`autopack db identity --db legacy --json`)."""

from __future__ import annotations

from typing import Annotated

import typer

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
DebugOption = Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")]
YesOption = Annotated[
    bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (scripts).")
]
