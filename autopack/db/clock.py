"""The time autopack stores: naive UTC, as the original's columns hold it.

Its own small module so that every layer can stamp a row without loading SQLModel.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    """Naive UTC, as the original stored timestamps (readers treat naive values as UTC)."""
    return datetime.now(UTC).replace(tzinfo=None)
