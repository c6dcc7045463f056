"""Failure fingerprints in the style of Sentry's grouping: same failure, same fingerprint.

Volatile parts of an error message (UUIDs, hashes, addresses, timestamps, absolute paths,
numbers, run/session ids) become placeholders; the final state and the failure kind are
prefixed. Relative paths are kept as they are: they name the deliverable that failed, and
the original mangled them ("examples/…/README.md" became "examplespath").
"""

from __future__ import annotations

import re

MAX_MESSAGE_CHARS = 300

# Order matters: the most specific patterns run first.
_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "<uuid>"),
    (
        re.compile(
            r"\b\d{4}-\d{2}-\d{2}[ t]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:z|[+-]\d{2}:?\d{2})?\b"
        ),
        "<timestamp>",
    ),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}\b"), "<date>"),
    (re.compile(r"\b\d{1,2}:\d{2}:\d{2}(?:\.\d+)?\b"), "<time>"),
    (re.compile(r"\b(session|batch-drain|drain|run)[-_]\d{8}[-_]?\d{4,6}\b"), r"\1-<id>"),
    (re.compile(r"\b0x[0-9a-f]+\b"), "<addr>"),
    # Absolute paths: Windows drive paths and POSIX paths with at least two segments.
    (re.compile(r"\b[a-z]:[\\/][^\s\"'()|,;]*"), "<path>"),
    (re.compile(r"(?<![\w.])/(?:[^\s\"'()|,;/]+/)+[^\s\"'()|,;]*"), "<path>"),
    (re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{12,}\b"), "<hash>"),
    (re.compile(r"(?<![\w.-])\d+(?:\.\d+)?(?![\w-])"), "<num>"),
    (re.compile(r"\s+"), " "),
)


def normalize_error(message: str | None) -> str:
    """The message with its volatile parts replaced, lower-cased, whitespace collapsed."""
    if not message:
        return ""
    text = message.strip().lower()
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text.strip()[:MAX_MESSAGE_CHARS]


def failure_fingerprint(final_state: str, failure_kind: str | None, message: str | None) -> str:
    """`STATE|kind|normalised message`: what groups repeated failures of one cause."""
    parts = [final_state, failure_kind or "none"]
    normalized = normalize_error(message)
    if normalized:
        parts.append(normalized)
    return "|".join(parts)
