"""Tamper evidence for the telemetry rows a drain writes (issue 11, defect 2).

Each row this process writes carries an HMAC (in `autopack_telemetry_provenance.seal`) keyed
by a random secret made when the process starts and kept only in its memory: never written,
never passed to a child. After the model's code has run, the drain re-reads the rows this
process wrote and recomputes their seals; a row changed, deleted or re-sealed by anyone else
no longer matches. The key dies with the process, so a seal proves nothing to a later process:
it is evidence for the drain that wrote it, while it runs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import weakref
from collections.abc import Iterable, Mapping
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from autopack.db.models import TelemetryProvenance, TokenEstimationV2Event, table_of

EVENTS = table_of(TokenEstimationV2Event)
PROVENANCE = table_of(TelemetryProvenance)
SEALED_COLUMNS: Final = (
    "event_id",
    "run_id",
    "phase_id",
    "category",
    "complexity",
    "deliverable_count",
    "predicted_output_tokens",
    "actual_output_tokens",
    "selected_budget",
    "actual_max_tokens",
    "success",
    "truncated",
    "stop_reason",
    "model",
)
_JOIN: Final = PROVENANCE.c.event_id == EVENTS.c.event_id
_KEY: Final = secrets.token_bytes(32)
_CHUNK: Final = 500

# The rows each engine (database) got from this process, to check after model code ran.
_written: weakref.WeakKeyDictionary[Engine, set[int]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def lacks_seal_column(engine: Engine) -> bool:
    """Whether the provenance table is there without revision 0009's `seal` column."""
    with engine.connect() as connection:
        inspector = sa.inspect(connection)
        if not inspector.has_table(PROVENANCE.name):
            return False
        return all(c["name"] != "seal" for c in inspector.get_columns(PROVENANCE.name))


def seal(row: Mapping[str, object]) -> str:
    """The HMAC-SHA256 (hex) of a telemetry row's sealed columns."""
    values = [_plain(row.get(column)) for column in SEALED_COLUMNS]
    message = json.dumps(values, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return hmac.new(_KEY, message, hashlib.sha256).hexdigest()


def _plain(value: object) -> object:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    return str(value)


def remember(engine: Engine, event_id: int) -> None:
    """Note a row this process wrote and sealed (after its transaction committed)."""
    with _lock:
        _written.setdefault(engine, set()).add(event_id)


def tampered_rows(engine: Engine, event_ids: Iterable[int] | None = None) -> list[str]:
    """One line per sealed row (of `event_ids`, default all this process wrote to `engine`)
    that is missing or no longer matches its seal; [] when all hold. A row reported once is
    forgotten, so the next check does not blame the next phase for it."""
    with _lock:
        known = set(_written.get(engine, ()))
    wanted = sorted(known if event_ids is None else known & set(event_ids))
    problems: list[str] = []
    found: set[int] = set()
    columns = [EVENTS.c[name] for name in SEALED_COLUMNS]
    with engine.connect() as connection:
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            query = (
                sa.select(*columns, PROVENANCE.c.seal)
                .select_from(
                    EVENTS.outerjoin(PROVENANCE, PROVENANCE.c.event_id == EVENTS.c.event_id)
                )
                .where(EVENTS.c.event_id.in_(chunk))
            )
            for row in connection.execute(query).mappings():
                found.add(int(row["event_id"]))
                stored = row["seal"]
                if not isinstance(stored, str) or not hmac.compare_digest(stored, seal(dict(row))):
                    problems.append(f"telemetry row {row['event_id']} was changed")
    problems += [
        f"telemetry row {missing} was deleted" for missing in wanted if missing not in found
    ]
    if problems:
        bad = {int(line.split()[2]) for line in problems}
        with _lock:
            _written.get(engine, set()).difference_update(bad)
    return sorted(problems)


__all__ = ["SEALED_COLUMNS", "lacks_seal_column", "remember", "seal", "tampered_rows"]
