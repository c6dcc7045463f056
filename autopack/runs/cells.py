"""Cells as a plain-SQL snapshot reads them: text on SQLite, native values on PostgreSQL.

`autopack.db.transaction` reads a SQLite file through `sqlite3`, which hands back timestamps
and JSON columns as the text SQLAlchemy stored; PostgreSQL's driver decodes them itself. The
reports want one shape whatever the backend.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any


def stored_datetime(value: Any) -> datetime | None:
    """A stored timestamp as naive UTC (the DB's convention), None when the cell is empty."""
    if value is None or value == "":
        return None
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    if not isinstance(parsed, datetime):
        return None
    return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed


def stored_json(value: Any) -> Any:
    """A JSON column's value; text that is not JSON (an original DB's oddity) is kept as text."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def stored_bool(value: Any) -> bool | None:
    """A boolean column (0/1 on SQLite, bool on PostgreSQL)."""
    return None if value is None else bool(value)


def stored_int(value: Any) -> int:
    """A count or sum that may be NULL (no rows)."""
    return int(value) if value is not None else 0
