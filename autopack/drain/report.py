"""The results of the drain commands: a session's report (one entry per phase attempt, and
totals), and the list of sessions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, field_serializer

from autopack.db.clock import UtcTimestamp, utc_text
from autopack.errors import EXIT_FOUND_PROBLEMS, EXIT_OK, EXIT_REFUSED


def telemetry_per_minute(events: int, seconds: float | None) -> float | None:
    """Telemetry yield: rows per minute of wall time (None without a duration)."""
    if not seconds or seconds <= 0:
        return None
    return round(events / (seconds / 60), 3)


def per_hour(count: int, seconds: float | None) -> float | None:
    """A rate per hour of the time spent draining (None without a duration).

    Per hour because a drain's phases take minutes: a per-minute rate over one short phase
    reads as noise ("1546.392/min").
    """
    if not seconds or seconds <= 0:
        return None
    return round(count / (seconds / 3600), 1)


class DrainTotals(BaseModel):
    processed: int = 0
    succeeded: int = 0
    failed: int = 0
    refused: int = 0
    timeouts: int = 0
    provider_unavailable: int = 0
    dry_run: int = 0
    telemetry_events: int = 0
    escalation_events: int = 0
    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    duration_s: float = 0.0
    telemetry_per_minute: float | None = None
    telemetry_per_hour: float | None = None
    phases_per_hour: float | None = None
    """Phase attempts per hour of the attempts' summed duration."""
    zero_yield_reasons: dict[str, int] = Field(default_factory=dict)


class RunSummary(BaseModel):
    processed: int = 0
    succeeded: int = 0
    failed: int = 0
    timeouts: int = 0
    telemetry_events: int = 0
    stopped: str | None = None


class Forecast(BaseModel):
    """The dry-run plan's token forecast. The estimator predicts output tokens only, while
    --max-total-tokens counts input and output: the forecast is a lower bound of the use."""

    predicted_output_tokens: int = 0
    selected_budget_tokens: int = 0
    max_total_tokens: int | None = None
    within_max_total_tokens: bool | None = None


class DrainReport(BaseModel):
    session_id: str
    kind: str = "phase"
    dry_run: bool = False
    telemetry_enabled: bool = True
    results: list[dict[str, Any]]
    totals: DrainTotals
    runs: dict[str, RunSummary] = Field(default_factory=dict)
    stopped_runs: dict[str, str] = Field(default_factory=dict)
    skipped_phases: dict[str, str] = Field(default_factory=dict)
    blocked_runs: dict[str, str] = Field(default_factory=dict)
    forecast: Forecast | None = None
    """A dry run's plan: the selected phases' predicted tokens against the token budget."""
    """Runs whose head is not in a drained state: their later phases wait (run → why)."""
    stop_reason: str | None = None
    hint: str | None = Field(default=None, exclude=True)
    """For a refused `drain phase`: what the operator can do (shown, not part of the JSON)."""

    @field_serializer("results", when_used="json")
    def _results_json(self, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # Entries are plain dicts (an attempt's values, or stored rows): their datetimes take
        # the one timestamp text here, as the typed fields do through UtcTimestamp.
        return [
            {key: utc_text(v) if isinstance(v, datetime) else v for key, v in entry.items()}
            for entry in results
        ]

    @property
    def any_failed(self) -> bool:
        return (
            self.totals.failed > 0
            or self.totals.timeouts > 0
            or self.totals.provider_unavailable > 0
        )

    @property
    def refused(self) -> bool:
        """A `drain phase` whose phase was refused (a batch counts refusals as results)."""
        return self.kind == "phase" and self.totals.refused > 0

    @property
    def exit_code(self) -> int:
        """docs/exit-codes.md: 2 a refused phase, 1 any phase failed or timed out, else 0."""
        if self.refused:
            return EXIT_REFUSED
        return EXIT_FOUND_PROBLEMS if self.any_failed else EXIT_OK

    def to_json(self) -> dict[str, Any]:
        """The document of docs/json.md (without `target`, which the command adds)."""
        return self.model_dump(mode="json")


_COUNTERS = {
    "complete": "succeeded",
    "timeout": "timeouts",
    "refused": "refused",
    "provider_unavailable": "provider_unavailable",
    "dry_run": "dry_run",
}


def summarise(
    session_id: str,
    entries: Sequence[dict[str, Any]],
    *,
    kind: str,
    telemetry_enabled: bool,
    dry_run: bool = False,
    stopped_runs: dict[str, str] | None = None,
    skipped_phases: dict[str, str] | None = None,
    stop_reason: str | None = None,
    hint: str | None = None,
    blocked_runs: dict[str, str] | None = None,
    max_total_tokens: int | None = None,
) -> DrainReport:
    """Totals and per-run figures over result entries (DrainResult rows as dicts, in order)."""
    totals = DrainTotals(processed=len(entries))
    reasons: Counter[str] = Counter()
    runs: dict[str, RunSummary] = {}
    for entry in entries:
        counter = _COUNTERS.get(entry["outcome"], "failed")
        setattr(totals, counter, getattr(totals, counter) + 1)
        run = runs.setdefault(entry["run_id"], RunSummary())
        run.processed += 1
        if counter in ("succeeded", "failed", "timeouts"):
            setattr(run, counter, getattr(run, counter) + 1)
        run.telemetry_events += entry["telemetry_events"]
        for name in (
            "telemetry_events",
            "escalation_events",
            "llm_calls",
            "input_tokens",
            "output_tokens",
        ):
            setattr(totals, name, getattr(totals, name) + (entry.get(name) or 0))
        totals.duration_s += entry.get("duration_s") or 0.0
        if entry.get("zero_yield_reason"):
            reasons[entry["zero_yield_reason"]] += 1
    for run_id, reason in (stopped_runs or {}).items():
        runs.setdefault(run_id, RunSummary()).stopped = reason
    totals.zero_yield_reasons = dict(sorted(reasons.items()))
    totals.telemetry_per_minute = telemetry_per_minute(totals.telemetry_events, totals.duration_s)
    totals.telemetry_per_hour = per_hour(totals.telemetry_events, totals.duration_s)
    totals.phases_per_hour = per_hour(totals.processed, totals.duration_s)
    totals.duration_s = round(totals.duration_s, 3)
    forecast = _forecast(entries, max_total_tokens) if dry_run else None
    return DrainReport(
        forecast=forecast,
        session_id=session_id,
        kind=kind,
        dry_run=dry_run,
        telemetry_enabled=telemetry_enabled,
        results=list(entries),
        totals=totals,
        runs=dict(sorted(runs.items())),
        stopped_runs=stopped_runs or {},
        skipped_phases=skipped_phases or {},
        blocked_runs=blocked_runs or {},
        stop_reason=stop_reason,
        hint=hint,
    )


class SessionSummary(BaseModel):
    """One line of `drain sessions`."""

    id: str
    kind: str
    status: str
    started_at: UtcTimestamp
    finished_at: UtcTimestamp | None
    worker: str | None
    stop_reason: str | None
    results: int
    succeeded: int
    telemetry_events: int


class SessionList(BaseModel):
    """`drain sessions`: the newest sessions first."""

    sessions: list[SessionSummary]

    def to_json(self) -> dict[str, Any]:
        """The document of docs/json.md (without `target`, which the command adds)."""
        return self.model_dump(mode="json")


def _forecast(entries: Sequence[dict[str, Any]], max_total_tokens: int | None) -> Forecast:
    predicted = sum(entry.get("estimated_tokens") or 0 for entry in entries)
    return Forecast(
        predicted_output_tokens=predicted,
        selected_budget_tokens=sum(entry.get("selected_budget") or 0 for entry in entries),
        max_total_tokens=max_total_tokens,
        within_max_total_tokens=None if max_total_tokens is None else predicted <= max_total_tokens,
    )
