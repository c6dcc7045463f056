"""The time autopack stores (naive UTC, as the original's columns hold it) and the one text
every `--json` document and export writes it as.

Its own small module so that every layer can stamp a row without loading SQLModel.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import PlainSerializer


def utc_now() -> datetime:
    """Naive UTC, as the original stored timestamps (readers treat naive values as UTC)."""
    return datetime.now(UTC).replace(tzinfo=None)


def utc_text(moment: datetime) -> str:
    """`moment` as RFC 3339 in UTC with an explicit offset: `2026-12-07T10:15:00+00:00`, with
    the fraction (`.123456`) when it has one. A naive value is UTC (what autopack stores); an
    aware one is converted. The one timestamp format of every `--json` document (docs/json.md).
    """
    aware = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return aware.isoformat()


UtcTimestamp = Annotated[datetime, PlainSerializer(utc_text, return_type=str, when_used="json")]
"""A datetime field that a model's JSON dump writes with `utc_text` (naive values are UTC)."""
