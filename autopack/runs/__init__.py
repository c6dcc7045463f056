"""Runs and phases as an operator asks about them: which runs there are, what one holds, and
everything that happened to one phase (its attempts across drain sessions, its telemetry).

The API: `list_runs(db, filters) -> RunList`, `show_run(db, run_id) -> RunDetail`,
`show_phase(db, run_id, phase_id) -> PhaseDetail`. Each reads one snapshot, in plain SQL.
"""

from autopack.runs.detail import show_run
from autopack.runs.listing import list_runs
from autopack.runs.model import (
    DEFAULT_LIMIT,
    PhaseAttempt,
    PhaseDetail,
    PhaseEscalation,
    PhaseSummary,
    PhaseTelemetryRow,
    RunDetail,
    RunFields,
    RunFilters,
    RunList,
    RunSummary,
    TelemetrySummary,
)
from autopack.runs.phase import show_phase

__all__ = [
    "DEFAULT_LIMIT",
    "PhaseAttempt",
    "PhaseDetail",
    "PhaseEscalation",
    "PhaseSummary",
    "PhaseTelemetryRow",
    "RunDetail",
    "RunFields",
    "RunFilters",
    "RunList",
    "RunSummary",
    "TelemetrySummary",
    "list_runs",
    "show_phase",
    "show_run",
]
