"""Rendering zero-yield explanations: by reason, then run and phase, with the evidence."""

from __future__ import annotations

from itertools import groupby

from rich.markup import escape
from rich.table import Table

from autopack.console import stderr_console
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


def show_explanation(report: ExplainReport, *, quiet: bool) -> None:
    out = stderr_console()
    scope = ", ".join(f"{k} {v}" for k, v in report.scope.items() if v) or "all drains"
    out.print(
        f"{scope}: {report.attempts} attempts, {report.with_telemetry} with telemetry, "
        f"{report.zero_yield} without",
        soft_wrap=True,
    )
    for reason, entries in groupby(report.entries, key=lambda e: e.reason):
        items = list(entries)
        out.print(f"\n[bold]{escape(reason)}[/] — {len(items)}", soft_wrap=True)
        remedy = report.remedies.get(reason)
        if remedy:
            out.print(f"  what to do: {escape(remedy)}", soft_wrap=True)
        if quiet:
            continue
        table = Table(show_header=True, box=None, padding=(0, 1))
        for column in ("run", "phase", "outcome", "failure", "evidence"):
            table.add_column(column, overflow="fold")
        for entry in items:
            evidence = ", ".join(
                f"{key}={entry.evidence[key]}"
                for key in _EVIDENCE_KEYS
                if key in entry.evidence and entry.evidence[key] not in (None, 0, False)
            )
            table.add_row(
                escape(entry.run_id),
                escape(entry.phase_id),
                entry.outcome,
                escape(entry.failure_reason or ""),
                escape(evidence),
            )
        out.print(table)
    if report.unexplained:
        out.print(f"[red]{report.unexplained} attempts have no recorded reason[/]")
