"""Rendering `db identity`: the database's panel, its state counts and telemetry (stdout)."""

from __future__ import annotations

from collections.abc import Mapping

from rich.console import RenderableType
from rich.markup import escape

from autopack.console import report_console, show_panel, warn
from autopack.db.identity import IdentityReport, TargetPanel, TelemetryStats
from autopack.render.fit import KEY_VALUE, Column, fit_table

_KEY_VALUE_COLUMNS = (Column("", "id"), Column("", "figure", justify="right"))


def _counts_table(title: str, counts: Mapping[str, int], width: int) -> RenderableType:
    rows = [(escape(key), f"{value:,}") for key, value in counts.items()]
    return fit_table(_KEY_VALUE_COLUMNS, rows, width=width, title=title, style=KEY_VALUE)


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _telemetry_table(stats: TelemetryStats, width: int) -> RenderableType | None:
    if not stats.available:
        return None
    rows = [
        ("events", f"{stats.events:,}"),
        ("success", f"{stats.success:,} ({_rate(stats.success_rate)})"),
        ("truncated", f"{stats.truncated:,} ({_rate(stats.truncation_rate)})"),
        ("clean samples (success, not truncated)", f"{stats.clean_samples:,}"),
    ]
    for label, breakdown in (
        ("by category", stats.by_category),
        ("by complexity", stats.by_complexity),
        ("by deliverables", stats.by_deliverable_bucket),
    ):
        rows += [(f"  {label}: {escape(key)}", f"{value:,}") for key, value in breakdown.items()]
    if stats.escalation_events is not None:
        rows.append(("escalation events", f"{stats.escalation_events:,}"))
    if stats.llm_usage_events is not None:
        rows.append(("LLM usage events", f"{stats.llm_usage_events:,}"))
    return fit_table(
        _KEY_VALUE_COLUMNS,
        rows,
        width=width,
        title="telemetry (token_estimation_v2_events)",
        style=KEY_VALUE,
    )


def show_identity(report: IdentityReport) -> None:
    """`db identity`'s report, panel included, on stdout (`… | grep role` reads it); its
    warnings on stderr."""
    out = report_console()
    show_panel(
        TargetPanel(target=report.target, counts=report.counts, warnings=[]),
        title="database identity",
        out=out,
    )
    for warning in report.warnings:
        warn(warning)
    out.print(_counts_table("phases by state", report.phase_states, out.width))
    out.print(_counts_table("runs by state", report.run_states, out.width))
    telemetry = _telemetry_table(report.telemetry, out.width)
    if telemetry is None:
        out.print("[yellow]telemetry:[/] table token_estimation_v2_events is missing")
    else:
        out.print(telemetry)
    if report.missing_tables:
        out.print(f"[yellow]missing tables:[/] {', '.join(report.missing_tables)}", soft_wrap=True)
