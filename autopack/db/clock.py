"""The one clock of autopack's DB code: naive UTC, as the original stored timestamps.

Its own module so that the reports which never load SQLAlchemy (triage, identity) use the same
function as the models (autopack.db.models re-exports it).
"""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    """Naive UTC, as the original stored timestamps (readers treat naive values as UTC)."""
    return datetime.now(UTC).replace(tzinfo=None)
