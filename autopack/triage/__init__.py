"""Triage: find the phases nothing will ever pick up again, and (explicitly) fail them.

The API: `stale_report(db, threshold, …)` reads the stale and unleased phases from one
snapshot; `mark_stale_failed(db, report, …)` fails them in one transaction.
"""

from autopack.triage.stale import (
    DEFAULT_STALE_HOURS,
    STALE_TAG,
    MarkResult,
    StaleKind,
    StaleList,
    StalePhase,
    StaleQuery,
    StaleReport,
    mark_stale_failed,
    stale_reason,
    stale_report,
    stale_threshold,
)

__all__ = [
    "DEFAULT_STALE_HOURS",
    "STALE_TAG",
    "MarkResult",
    "StaleKind",
    "StaleList",
    "StalePhase",
    "StaleQuery",
    "StaleReport",
    "mark_stale_failed",
    "stale_reason",
    "stale_report",
    "stale_threshold",
]
