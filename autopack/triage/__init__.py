"""Triage: find the phases nothing will ever pick up again, and (explicitly) fail them."""

from autopack.triage.stale import (
    DEFAULT_STALE_HOURS,
    STALE_TAG,
    MarkResult,
    StaleKind,
    StalePhase,
    StaleQuery,
    StaleReport,
    StaleTally,
    find_stale,
    iter_stale,
    mark_stale_failed,
    stale_query,
    stale_reason,
    stale_threshold,
    summarize_stale,
)

__all__ = [
    "DEFAULT_STALE_HOURS",
    "STALE_TAG",
    "MarkResult",
    "StaleKind",
    "StalePhase",
    "StaleQuery",
    "StaleReport",
    "StaleTally",
    "find_stale",
    "iter_stale",
    "mark_stale_failed",
    "stale_query",
    "stale_reason",
    "stale_threshold",
    "summarize_stale",
]
