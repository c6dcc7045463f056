"""Text that came from outside (a model's reply, an HTTP body) made safe to write anywhere.

A JSON string may hold a lone surrogate (`"\\ud83d"`): a valid Python `str` that no UTF-8
writer (a file, the terminal, SQLite, PostgreSQL) accepts. The helpers here find such text and
write it as escapes, so one poisoned reply can fail its own phase but never crash the writer.
"""

from __future__ import annotations


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


__all__ = ["is_valid_unicode", "valid_unicode"]
