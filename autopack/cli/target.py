"""Resolve and open the database a command names, and show its panel before acting."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autopack import console
from autopack.db.compat import SchemaCompatibility
from autopack.db.engine import Database, OpenMode, open_database
from autopack.db.guards import require_non_empty
from autopack.settings import DatabaseTarget, resolve_target

if TYPE_CHECKING:  # the panel's reads load when a command opens a database, not for --help
    from autopack.db.identity import TargetPanel


def target_named(db_name: str | None, database_url: str | None) -> DatabaseTarget:
    """The database the options name, resolved in the run's environment (variables, cwd)."""
    env = console.environment()
    return resolve_target(db_name, database_url, env=env.environ, cwd=env.cwd)


def open_named(db_name: str | None, database_url: str | None, mode: OpenMode) -> Database:
    return open_database(target_named(db_name, database_url), mode)


def announce(
    db: Database, *, quiet: bool, as_json: bool, title: str = "target database"
) -> TargetPanel:
    """Read the panel; show it on stderr unless --quiet or --json (which carries it instead)."""
    from autopack.db.identity import read_panel

    panel = read_panel(db)
    if not quiet and not as_json:
        console.show_panel(panel, title=title)
    elif as_json and not quiet:
        # --json hides the panel, but a DB from a newer autopack is worth a line on stderr.
        target = panel.target
        newer = SchemaCompatibility(target.schema_revision, target.compatible_with).warning()
        if newer is not None:
            console.warn(newer)
    return panel


def refuse_empty(database: Database, panel: TargetPanel, *, allow_empty: bool) -> None:
    """The empty-DB guard for commands acting on phases or telemetry, from the panel's counts."""
    require_non_empty(
        panel.counts.get("runs", 0),
        panel.counts.get("phases", 0),
        display_url=database.target.display_url,
        allow_empty=allow_empty,
    )
