"""The did-you-mean of a refused id: the closest known one, cheap to import (no SQLAlchemy)."""

from __future__ import annotations

from collections.abc import Iterable

from autopack.text import closest


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the closest known name, or "" when none is close."""
    close = closest(name, known)
    return f" (did you mean {close!r}?)" if close else ""
