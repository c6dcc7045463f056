"""Resolve and open the database a command names, and show its panel before acting."""

from __future__ import annotations

from autopack import console
from autopack.db.engine import Database, OpenMode, open_database
from autopack.db.identity import TargetPanel, read_panel
from autopack.settings import resolve_target


def open_named(db_name: str | None, database_url: str | None, mode: OpenMode) -> Database:
    return open_database(resolve_target(db_name, database_url), mode)


def announce(
    db: Database, *, quiet: bool, as_json: bool, title: str = "target database"
) -> TargetPanel:
    """Read the panel; show it on stderr unless --quiet or --json (which carries it instead)."""
    panel = read_panel(db)
    if not quiet and not as_json:
        console.show_panel(panel, title=title)
    return panel
