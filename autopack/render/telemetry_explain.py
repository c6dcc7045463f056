"""Rendering zero-yield explanations: by reason, then run and phase, with the evidence."""

from __future__ import annotations

from itertools import groupby
from typing import Any

from rich.markup import escape

from autopack.console import report_console
from autopack.render.fit import PLAIN, Column, fit_table
from autopack.telemetry.explain import ExplainReport

_EVIDENCE_KEYS = (
    "preflight_passed",
    "provider_called",
    "answered_calls",
    "failed_calls",
    "telemetry_enabled",
    "telemetry_tables_present",
    "rows_written",
    "guard_rejections",
    "write_errors",
    "last_rejection",
    "last_write_error",
)


_COLUMNS = (
    Column("run", "id"),
    Column("phase", "id"),
    Column("outcome", "id", priority=1),
    Column("failure", "text", priority=3),
    Column("evidence", "text", priority=2),
)


def show_explanation(report: ExplainReport, *, quiet: bool) -> None:
    """Why phases produced no telemetry (stdout): by reason, what to do, then the phases."""
    out = report_console()
    scope = ", ".join(f"{k} {v}" for k, v in report.scope.items() if v) or "all drains"
    out.print(
        f"{scope}: {report.attempts} attempts, {report.with_telemetry} with telemetry, "
        f"{report.zero_yield} without"
    )
    for reason, entries in groupby(report.entries, key=lambda e: e.reason):
        items = list(entries)
        out.print(f"\n[bold]{escape(reason)}[/] — {len(items)}")
        remedy = report.remedies.get(reason)
        if remedy:
            out.print(f"  what to do: {escape(remedy)}")
        if quiet:
            continue
        rows = [
            (
                escape(entry.run_id),
                escape(entry.phase_id),
                escape(entry.outcome),
                escape(entry.failure_reason or ""),
                escape(_evidence(entry.evidence)),
            )
            for entry in items
        ]
        out.print(fit_table(_COLUMNS, rows, width=out.width, style=PLAIN))
    if report.unexplained:
        out.print(f"[red]{report.unexplained} attempts have no recorded reason[/]")


def _evidence(facts: dict[str, Any]) -> str:
    """The facts that say something (set, non-zero), in a fixed order."""
    return ", ".join(
        f"{key}={facts[key]}"
        for key in _EVIDENCE_KEYS
        if key in facts and facts[key] not in (None, 0, False)
    )
