"""Read the original Autopack's `[TokenEstimationV2] …` log lines.

The original logged one INFO line per builder call (reference/original_spec.md §9):

    [TokenEstimationV2] predicted_output=5200 actual_output=1218 smape=124.1% selected_budget=8192
    category=implementation complexity=low deliverables=1 success=True stop_reason=end_turn
    truncated=False model=claude-sonnet-4-5

Older builds logged fewer fields (the shorter form); any subset of the fields is read as long
as `predicted_output` and an actual count are there. When the provider reported no output
tokens, the original logged `actual_total=` (total tokens, prompt included) instead of
`actual_output=`: such a sample is *contaminated* and is flagged as such. The pre-V2 line
`[TokenEstimation] Predicted: P output tokens, Actual: A output tokens, Error: E%` is recognised
but carries no category, complexity or outcome, so it is never a sample.

A line's timestamp is read from its start, in the two shapes the original's loggers wrote:
`[2025-12-29 19:40:02] INFO: …` and `2025-12-23 19:47:57,427 - autopack… - INFO - …`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

MARKER: Final = "[TokenEstimationV2]"
V1_MARKER: Final = "[TokenEstimation] Predicted:"

_TIMESTAMP = re.compile(
    r"^\s*\[?(?P<ts>\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:[.,]\d{1,6})?"
    r"(?:Z|[+-]\d{2}:?\d{2})?)\]?"
)
_PAYLOAD_START = re.compile(r"^\s*[A-Za-z_]\w*=")
_INT = re.compile(r"^\d+$")
_FLOAT = re.compile(r"^-?\d+(?:\.\d+)?%?$")
_NONE_TEXTS: Final = frozenset({"", "none", "null"})


class LogLineError(ValueError):
    """A telemetry line that cannot be read; the message says why, in a few words."""


@dataclass(frozen=True)
class LogSample:
    """One `[TokenEstimationV2]` sample as logged (nothing inferred yet)."""

    timestamp_text: str | None
    """The timestamp as written at the start of the line, or None."""
    timestamp: datetime | None
    """That timestamp parsed: naive as logged, or naive UTC when the line carried an offset."""
    timestamp_has_offset: bool
    predicted_output: int
    actual: int
    contaminated: bool
    """True for the fallback form: `actual` is total tokens (`actual_total=`), not output."""
    smape_logged: float | None
    selected_budget: int | None
    category: str | None
    complexity: str | None
    deliverables: int | None
    success: bool | None
    stop_reason: str | None
    truncated: bool | None
    model: str | None
    payload: str
    """The key=value part, blanks collapsed: what identifies the sample (with the timestamp)."""


@dataclass(frozen=True)
class LegacyV1Line:
    """A pre-V2 `[TokenEstimation] Predicted: …` line: recognised, never imported."""


def parse_log_line(line: str) -> LogSample | LegacyV1Line | None:
    """Read one log line.

    Returns None for a line that is not a telemetry sample at all (ordinary log output, or a
    `[TokenEstimationV2] Failed to write DB telemetry: …` message), a `LegacyV1Line` for the
    pre-V2 form, and a `LogSample` otherwise. Raises `LogLineError` for a sample line that
    cannot be read (a missing count, a value of the wrong kind, stray text).
    """
    at = line.find(MARKER)
    if at < 0:
        return LegacyV1Line() if V1_MARKER in line else None
    payload = line[at + len(MARKER) :].strip()
    if not _PAYLOAD_START.match(payload):
        return None
    fields = _fields(payload)
    timestamp_text, timestamp, has_offset = _timestamp(line[:at])
    predicted = _required_int(fields, "predicted_output")
    if "actual_output" in fields and "actual_total" in fields:
        raise LogLineError("both actual_output and actual_total")
    contaminated = "actual_output" not in fields
    if contaminated and "actual_total" not in fields:
        raise LogLineError("no actual_output (or actual_total)")
    actual = _required_int(fields, "actual_total" if contaminated else "actual_output")
    return LogSample(
        timestamp_text=timestamp_text,
        timestamp=timestamp,
        timestamp_has_offset=has_offset,
        predicted_output=predicted,
        actual=actual,
        contaminated=contaminated,
        smape_logged=_optional_float(fields, "smape"),
        selected_budget=_optional_int(fields, "selected_budget"),
        category=_optional_text(fields, "category"),
        complexity=_optional_text(fields, "complexity"),
        deliverables=_optional_int(fields, "deliverables"),
        success=_optional_bool(fields, "success"),
        stop_reason=_optional_text(fields, "stop_reason"),
        truncated=_optional_bool(fields, "truncated"),
        model=_optional_text(fields, "model"),
        payload=" ".join(payload.split()),
    )


def _fields(payload: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for token in payload.split():
        key, sep, value = token.partition("=")
        if not sep or not key.isidentifier():
            raise LogLineError(f"unexpected text {_short(token)!r}")
        if key in fields:
            raise LogLineError(f"{key} appears twice")
        fields[key] = value
    return fields


def _timestamp(prefix: str) -> tuple[str | None, datetime | None, bool]:
    match = _TIMESTAMP.match(prefix)
    if match is None:
        return None, None, False
    text = match.group("ts")
    try:
        parsed = datetime.fromisoformat(text.replace(",", "."))
    except ValueError as exc:
        raise LogLineError(f"bad timestamp {text!r}") from exc
    if parsed.tzinfo is None:
        return text, parsed, False
    try:
        return text, parsed.astimezone(UTC).replace(tzinfo=None), True
    except OverflowError:
        raise LogLineError(f"timestamp {text!r} is out of range in UTC") from None


def _required_int(fields: dict[str, str], key: str) -> int:
    value = _optional_int(fields, key)
    if value is None:
        raise LogLineError(f"no {key}")
    return value


def _optional_int(fields: dict[str, str], key: str) -> int | None:
    raw = fields.get(key)
    if raw is None:
        return None
    if not _INT.match(raw):
        raise LogLineError(f"{key}={_short(raw)!r} is not a whole number")
    value = int(raw)
    if not -(2**63) <= value < 2**63:
        raise LogLineError(f"{key}={_short(raw)!r} is too large for a 64-bit integer")
    return value


def _optional_float(fields: dict[str, str], key: str) -> float | None:
    raw = fields.get(key)
    if raw is None or raw.lower() in _NONE_TEXTS or raw.lower() in ("n/a", "nan"):
        return None
    if not _FLOAT.match(raw):
        raise LogLineError(f"{key}={_short(raw)!r} is not a number")
    return float(raw.rstrip("%"))


def _optional_bool(fields: dict[str, str], key: str) -> bool | None:
    raw = fields.get(key)
    if raw is None:
        return None
    lowered = raw.lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    raise LogLineError(f"{key}={_short(raw)!r} is not True or False")


def _optional_text(fields: dict[str, str], key: str) -> str | None:
    raw = fields.get(key)
    if raw is None or raw.lower() in _NONE_TEXTS:
        return None
    return raw


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
