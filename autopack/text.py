"""Small text helpers: a did-you-mean guess, and outside text made safe to write anywhere.

Text that came from outside (a model's reply, an HTTP body): a JSON string may hold a lone
surrogate (`"\\ud83d"`), a valid Python `str` that no UTF-8 writer (a file, the terminal,
SQLite, PostgreSQL) accepts. The helpers here find such text and
write it as escapes, so one poisoned reply can fail its own phase but never crash the writer.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def is_valid_unicode(text: str) -> bool:
    """Whether `text` encodes as UTF-8 (it holds no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def valid_unicode(text: str) -> str:
    """`text` with every lone surrogate written as its `\\udXXX` escape; other text unchanged."""
    if is_valid_unicode(text):
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known name closest to a misspelt `name` (difflib's 0.6 cutoff), or None."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return close[0] if close else None


__all__ = ["closest", "is_valid_unicode", "valid_unicode"]
