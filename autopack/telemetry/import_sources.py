"""Read telemetry samples out of files: original log lines, the original's NDJSON, our export.

Every source yields, per line (or CSV record), either an `ImportSample` (a row ready for
token_estimation_v2_events plus its provenance), a `Skipped` record (recognised, deliberately
not imported: contaminated or pre-V2) or a `Problem` (unreadable, with its line number).
Nothing here touches a database.

Each sample carries a stable `sample_key`, which makes importing idempotent:

- a log line: `log:` + a hash of its timestamp (to the second) and its key=value fields, so the
  same line logged into two files is one sample;
- a DB row (the original's NDJSON, or our export of a row that had no key): `row:` + a hash of
  run, phase, timestamp and the logged figures, so the original's export and ours of the same
  DB agree;
- our export of a row that already had a key: that key.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from autopack.estimator import normalize_complexity
from autopack.telemetry.columns import (
    COLUMNS_BY_NAME,
    EVENT_COLUMNS,
    Kind,
    parse_bool,
    parse_timestamp,
)
from autopack.telemetry.logline import LegacyV1Line, LogLineError, LogSample, parse_log_line
from autopack.telemetry.recorder import deliverables_json, smape_percent, waste_ratio

SOURCE_IMPORT: Final = "import"
SOURCE_IMPORT_CONTAMINATED: Final = "import_contaminated"
"""Provenance source of a fallback (`actual_total=`) sample imported on request."""

UNKNOWN_MODEL: Final = "unknown"
DEFAULT_CATEGORY: Final = "implementation"
"""What the original logged and stored when a phase had no category."""

# Columns a record of our own export must have; the rest may be missing (an older export).
OWN_REQUIRED: Final[tuple[str, ...]] = (
    "run_id",
    "phase_id",
    "timestamp",
    "category",
    "complexity",
    "deliverable_count",
    "predicted_output_tokens",
    "actual_output_tokens",
    "selected_budget",
    "success",
    "model",
)
# Keys of the original's NDJSON export (reference/original_spec.md §10.1) that are required.
ORIGINAL_REQUIRED: Final[tuple[str, ...]] = (
    "run_id",
    "phase_id",
    "timestamp",
    "predicted_output_tokens",
    "actual_output_tokens",
    "success",
)


class SourceFormat(StrEnum):
    LOG = "log"
    NDJSON = "ndjson"
    CSV = "csv"
    PARQUET = "parquet"


PARQUET_MAGIC: Final = b"PAR1"
PARQUET_BATCH_ROWS: Final = 4096


class SkipReason(StrEnum):
    CONTAMINATED = "contaminated"
    """A fallback `actual_total=` line: total tokens, not output tokens."""
    LEGACY_V1 = "legacy_v1"
    """A pre-V2 `[TokenEstimation] Predicted: …` line: no category, complexity or outcome."""


@dataclass(frozen=True)
class ImportSample:
    line: int
    sample_key: str
    run_id: str | None
    """None when the source does not say (log lines): the sample goes to a placeholder."""
    phase_id: str | None
    event: dict[str, Any]
    """Every token_estimation_v2_events column except event_id, run_id and phase_id."""
    source: str
    coefficient_set: str | None = None
    coefficient_set_hash: str | None = None
    source_file: str | None = None
    source_line: int | None = None


@dataclass(frozen=True)
class Skipped:
    line: int
    reason: SkipReason


@dataclass(frozen=True)
class Problem:
    line: int
    reason: str


Record = ImportSample | Skipped | Problem


@dataclass
class SourceSettings:
    """How to read the files of one import."""

    include_contaminated: bool = False
    log_utc_offset: timedelta = field(default_factory=timedelta)
    """What to subtract from a log timestamp without an offset to get UTC (e.g. +08:00)."""


class SourceError(Exception):
    """The whole file cannot be read as the format it was taken for (e.g. a foreign CSV)."""


def detect_format(path: Path) -> SourceFormat:
    """By content: Parquet's magic bytes → Parquet; a JSON object first → NDJSON; our CSV
    header → CSV; anything else → log."""
    with path.open("rb") as raw:
        if raw.read(len(PARQUET_MAGIC)) == PARQUET_MAGIC:
            return SourceFormat.PARQUET
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            text = line.strip()
            if not text:
                continue
            if text.startswith("{"):
                return SourceFormat.NDJSON
            try:
                header = next(csv.reader([text]), [])
            except csv.Error:  # e.g. a cell over the csv module's 128 KiB limit: no header
                return SourceFormat.LOG
            if "predicted_output_tokens" in header and "run_id" in header:
                return SourceFormat.CSV
            return SourceFormat.LOG
    return SourceFormat.LOG


def read_records(
    lines: Iterable[str],
    fmt: SourceFormat,
    source_file: str,
    settings: SourceSettings,
    mtime: datetime,
) -> Iterator[Record]:
    """The records of one open file, in order."""
    if fmt is SourceFormat.LOG:
        return _log_records(lines, source_file, settings, mtime)
    if fmt is SourceFormat.NDJSON:
        return _ndjson_records(lines, source_file)
    return _csv_records(lines, source_file)


def parquet_records(path: Path, source_file: str) -> Iterator[Record]:
    """The records of our Parquet export, batch by batch; line numbers are row numbers (from
    1). SourceError when the file is not a Parquet file of our export."""
    import pyarrow as pa
    import pyarrow.parquet

    try:
        parquet = pyarrow.parquet.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"not a readable Parquet file ({exc})") from None
    missing = [name for name in OWN_REQUIRED if name not in parquet.schema_arrow.names]
    if missing:
        raise SourceError(f"not an autopack telemetry Parquet export (no {', '.join(missing)})")
    number = 0
    try:
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            for row in batch.to_pylist():
                number += 1
                yield _record(row, number, source_file)
    except pa.ArrowException as exc:
        raise SourceError(f"the Parquet file is damaged after row {number} ({exc})") from None


def file_mtime(path: Path) -> datetime:
    """A file's modification time, naive UTC (the timestamp of log lines that carry none)."""
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).replace(tzinfo=None)


# --- log lines ---------------------------------------------------------------------------


def _log_records(
    lines: Iterable[str], source_file: str, settings: SourceSettings, mtime: datetime
) -> Iterator[Record]:
    repeats: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        try:
            parsed = parse_log_line(line)
        except LogLineError as exc:
            yield Problem(number, str(exc))
            continue
        if parsed is None:
            continue
        if isinstance(parsed, LegacyV1Line):
            yield Skipped(number, SkipReason.LEGACY_V1)
            continue
        if parsed.contaminated and not settings.include_contaminated:
            yield Skipped(number, SkipReason.CONTAMINATED)
            continue
        key = _log_key(parsed, repeats)
        try:
            yield _log_sample(parsed, number, key, source_file, settings, mtime)
        except OverflowError:  # a timestamp near year 1 or 9999 moved by --log-utc-offset
            yield Problem(number, "timestamp out of range in UTC")


def _log_key(sample: LogSample, repeats: dict[str, int]) -> str:
    """Timestamp to the second plus the fields; without a timestamp, identical lines of one
    file are told apart by their occurrence."""
    when = sample.timestamp.replace(microsecond=0).isoformat() if sample.timestamp else ""
    basis = f"{when}\x00{sample.payload}"
    if sample.timestamp is None:
        seen = repeats.get(basis, 0) + 1
        repeats[basis] = seen
        basis = f"{basis}\x00#{seen}"
    return "log:" + hashlib.sha256(basis.encode()).hexdigest()[:32]


def _log_sample(
    sample: LogSample,
    number: int,
    key: str,
    source_file: str,
    settings: SourceSettings,
    mtime: datetime,
) -> ImportSample:
    if sample.timestamp is None:
        when = mtime
    elif sample.timestamp_has_offset:
        when = sample.timestamp
    else:
        when = sample.timestamp - settings.log_utc_offset
    predicted, actual = sample.predicted_output, sample.actual
    if sample.contaminated:
        # As the original's fallback writer stored them: total tokens, never "truncated".
        truncated, stop_reason = False, None
    else:
        stop_reason = sample.stop_reason
        truncated = (
            sample.truncated if sample.truncated is not None else stop_reason == "max_tokens"
        )
    event: dict[str, Any] = {
        "timestamp": when,
        "category": sample.category or DEFAULT_CATEGORY,
        "complexity": normalize_complexity(sample.complexity),
        "deliverable_count": sample.deliverables or 0,
        "deliverables_json": "[]",
        "predicted_output_tokens": predicted,
        "actual_output_tokens": actual,
        "selected_budget": sample.selected_budget or 0,
        "actual_max_tokens": None,
        # Unknown outcome → not a success: calibration only trusts success=True samples.
        "success": bool(sample.success),
        "truncated": truncated,
        "stop_reason": stop_reason,
        "model": sample.model or UNKNOWN_MODEL,
        "smape_percent": smape_percent(actual, predicted),
        "waste_ratio": waste_ratio(actual, predicted),
        "underestimated": actual > predicted if predicted > 0 else None,
        "is_truncated_output": truncated,
        "is_sot_file": False,
        "created_at": when,
    }
    return ImportSample(
        line=number,
        sample_key=key,
        run_id=None,
        phase_id=None,
        event=event,
        source=SOURCE_IMPORT_CONTAMINATED if sample.contaminated else SOURCE_IMPORT,
        source_file=source_file,
        source_line=number,
    )


# --- NDJSON and CSV ----------------------------------------------------------------------


def _ndjson_records(lines: Iterable[str], source_file: str) -> Iterator[Record]:
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            yield Problem(number, f"not JSON ({exc.msg})")
            continue
        except RecursionError:
            yield Problem(number, "JSON nested too deeply")
            continue
        if not isinstance(data, dict):
            yield Problem(number, "not a JSON object")
            continue
        yield _record(data, number, source_file)


def _csv_records(lines: Iterable[str], source_file: str) -> Iterator[Record]:
    reader = csv.DictReader(lines)
    header = reader.fieldnames or []
    missing = [name for name in OWN_REQUIRED if name not in header]
    if missing:
        raise SourceError(f"not an autopack telemetry CSV export (no {', '.join(missing)} column)")
    start = reader.line_num + 1
    for row in reader:
        if None in row:
            yield Problem(start, "more cells than the header has columns")
        else:
            cells = {key: (value if value != "" else None) for key, value in row.items()}
            yield _record(cells, start, source_file)
        start = reader.line_num + 1


def _record(data: Mapping[str, Any], number: int, source_file: str) -> Record:
    try:
        if "deliverables_json" in data:
            return _own_record(data, number, source_file)
        return _original_record(data, number, source_file)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        return Problem(number, str(exc) or type(exc).__name__)


def _own_record(data: Mapping[str, Any], number: int, source_file: str) -> ImportSample:
    """A record of our own export: every column kept as it is (a lossless round trip)."""
    _require(data, OWN_REQUIRED)
    event: dict[str, Any] = {}
    for name in EVENT_COLUMNS:
        if name in ("event_id", "run_id", "phase_id"):
            continue
        event[name] = _typed(name, data.get(name))
    event["complexity"] = normalize_complexity(event["complexity"])
    event["truncated"] = bool(event["truncated"])
    if event["is_truncated_output"] is None:
        event["is_truncated_output"] = event["truncated"]
    if event["deliverables_json"] is None:
        event["deliverables_json"] = "[]"
    if event["created_at"] is None:
        event["created_at"] = event["timestamp"]
    if event["is_sot_file"] is None and "is_sot_file" not in data:
        event["is_sot_file"] = False
    run_id, phase_id = _text(data, "run_id"), _text(data, "phase_id")
    key = _text(data, "sample_key") or row_key(run_id, phase_id, event)
    has_origin = bool(_text(data, "source_file"))
    return ImportSample(
        line=number,
        sample_key=key,
        run_id=run_id,
        phase_id=phase_id,
        event=event,
        source=_text(data, "source") or SOURCE_IMPORT,
        coefficient_set=_text(data, "coefficient_set"),
        coefficient_set_hash=_text(data, "coefficient_set_hash"),
        source_file=_text(data, "source_file") if has_origin else source_file,
        source_line=_typed("source_line", data.get("source_line")) if has_origin else number,
    )


def _original_record(data: Mapping[str, Any], number: int, source_file: str) -> ImportSample:
    """A line of the original's NDJSON export: it lacks actual_max_tokens, the doc features,
    is_truncated_output and created_at, which get the original writer's values or null."""
    _require(data, ORIGINAL_REQUIRED)
    predicted = _typed("predicted_output_tokens", data["predicted_output_tokens"])
    actual = _typed("actual_output_tokens", data["actual_output_tokens"])
    timestamp = _typed("timestamp", data["timestamp"])
    truncated = bool(_typed("truncated", data.get("truncated")))
    deliverables = data.get("deliverables")
    listed = tuple(str(item) for item in deliverables) if isinstance(deliverables, list) else ()
    count = _typed("deliverable_count", data.get("deliverable_count"))
    event: dict[str, Any] = {
        "timestamp": timestamp,
        "category": _text(data, "category") or DEFAULT_CATEGORY,
        "complexity": normalize_complexity(_text(data, "complexity")),
        "deliverable_count": len(listed) if count is None else count,
        "deliverables_json": deliverables_json(listed),
        "predicted_output_tokens": predicted,
        "actual_output_tokens": actual,
        "selected_budget": _typed("selected_budget", data.get("selected_budget")) or 0,
        "actual_max_tokens": None,
        "success": bool(_typed("success", data["success"])),
        "truncated": truncated,
        "stop_reason": _text(data, "stop_reason"),
        "model": _text(data, "model") or UNKNOWN_MODEL,
        "smape_percent": (
            _typed("smape_percent", data["smape_percent"])
            if "smape_percent" in data
            else smape_percent(actual, predicted)
        ),
        "waste_ratio": (
            _typed("waste_ratio", data["waste_ratio"])
            if "waste_ratio" in data
            else waste_ratio(actual, predicted)
        ),
        "underestimated": (
            _typed("underestimated", data["underestimated"])
            if "underestimated" in data
            else (actual > predicted if predicted > 0 else None)
        ),
        "is_truncated_output": truncated,
        "is_sot_file": False,
        "created_at": timestamp,
    }
    run_id, phase_id = _text(data, "run_id"), _text(data, "phase_id")
    return ImportSample(
        line=number,
        sample_key=row_key(run_id, phase_id, event),
        run_id=run_id,
        phase_id=phase_id,
        event=event,
        source=SOURCE_IMPORT,
        source_file=source_file,
        source_line=number,
    )


def row_key(run_id: str | None, phase_id: str | None, event: Mapping[str, Any]) -> str:
    """The key of a sample that came from a DB row: its identity and its logged figures."""
    timestamp = event["timestamp"]
    basis = [
        run_id,
        phase_id,
        timestamp.isoformat(timespec="microseconds") if timestamp else None,
        event["category"],
        event["complexity"],
        event["deliverable_count"],
        event["predicted_output_tokens"],
        event["actual_output_tokens"],
        event["selected_budget"],
        bool(event["success"]),
        bool(event["truncated"]),
        event["stop_reason"],
        event["model"],
    ]
    text = json.dumps(basis, separators=(",", ":"))
    return "row:" + hashlib.sha256(text.encode()).hexdigest()[:32]


def _require(data: Mapping[str, Any], names: tuple[str, ...]) -> None:
    missing = [name for name in names if data.get(name) in (None, "")]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")


def _text(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    text = str(value)
    return text if text.strip() else None


INTEGER_LIMIT: Final = 2**63
"""Integers are stored as 64-bit signed: a value at or past this does not fit."""


def _typed(name: str, value: Any) -> Any:
    """A cell or JSON value as the column's type (autopack.telemetry.columns); ValueError names
    the column when it is not one."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    kind = COLUMNS_BY_NAME[name].kind
    try:
        if kind is Kind.TIMESTAMP:
            if isinstance(value, datetime):  # from Parquet: naive UTC
                return value if value.tzinfo is None else parse_timestamp(value.isoformat())
            if not isinstance(value, str):
                raise ValueError("not a timestamp")
            return parse_timestamp(value)
        if kind is Kind.BOOLEAN:
            return parse_bool(value)
        if kind is Kind.INTEGER:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError("not a whole number")
            number = int(value)
            if number < 0:
                raise ValueError("negative")
            if number >= INTEGER_LIMIT:
                raise ValueError("too large for a 64-bit integer")
            return number
        if kind is Kind.FLOAT:
            if isinstance(value, bool):
                raise ValueError("not a number")
            return float(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValueError(f"{name}={_show(value)}: {exc}") from None
    return str(value)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"
