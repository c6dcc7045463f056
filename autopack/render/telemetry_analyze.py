"""Rendering `telemetry analyze`: Rich tables on stdout, and the Markdown report file.

Both render the same `AnalysisReport`; neither computes anything. The Markdown writer has no
Rich in it (it is a file format), and lives here next to the terminal view so the two stay in
step when a figure is added.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from rich.markup import escape

from autopack.console import report_console, warn
from autopack.db.identity import TargetInfo
from autopack.output_file import check_output_path, open_output
from autopack.render.fit import Column, fit_table
from autopack.telemetry.analysis_report import (
    AnalysisReport,
    Filters,
    Stratum,
    TargetCheck,
    WasteStats,
)
from autopack.telemetry.coverage import CoverageReport

MET = "✅ met"
MISSED = "❌ missed"


# --------------------------------------------------------------------------------------------
# Formatting (shared by both views)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _smape(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}%"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def _tokens(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _mark(check: TargetCheck) -> str:
    if check.met is None:
        return "—"
    return MET if check.met else MISSED


def _target(check: TargetCheck) -> str:
    return "—" if check.target is None else f"≤ {_pct(check.target)}"


def _filters(filters: Filters, multiplier: float) -> str:
    parts: list[str] = []
    if filters.success_only:
        parts.append("success only")
    if filters.run_ids:
        parts.append("run " + " | ".join(filters.run_ids))
    if filters.categories:
        parts.append("category " + " | ".join(filters.categories))
    if filters.complexities:
        parts.append("complexity " + " | ".join(filters.complexities))
    if filters.since:
        parts.append(f"since {filters.since.isoformat(sep=' ')}")
    if filters.until:
        parts.append(f"until {filters.until.isoformat(sep=' ')} (exclusive)")
    shown = ", ".join(parts) if parts else "none (all rows)"
    return f"{shown}; underestimated = actual > predicted × {multiplier}"


def _tier1_rows(report: AnalysisReport) -> list[tuple[str, TargetCheck]]:
    tier1 = report.tier1
    return [
        ("underestimation", tier1.underestimation),
        ("truncation", tier1.truncation),
        ("success (builder parse)", tier1.success),
    ]


def _waste_note(stats: WasteStats) -> str:
    if stats.p90_guide is None or stats.p90 is None:
        return ""
    side = "<" if stats.p90 < stats.p90_guide else "≥"
    return f"p90 {side} {stats.p90_guide:g}× guide"


def _stratum_cells(stratum: Stratum) -> list[str]:
    return [
        f"{stratum.rows:,}",
        _pct(stratum.success_rate),
        _pct(stratum.truncation_rate),
        _pct(stratum.underestimation_rate),
        _smape(stratum.smape_mean),
        _ratio(stratum.waste_mean),
    ]


STRATUM_HEADERS = ("rows", "success", "truncated", "underestimated", "SMAPE mean", "waste mean")


def _coverage_grid(
    coverage: CoverageReport,
) -> tuple[list[str], list[tuple[str, str, dict[str, int]]]]:
    """Bucket columns and (category, complexity, {bucket: samples}) rows, in report order."""
    buckets: list[str] = []
    rows: dict[tuple[str, str], dict[str, int]] = {}
    for cell in coverage.cells:
        if cell.deliverable_bucket not in buckets:
            buckets.append(cell.deliverable_bucket)
        rows.setdefault((cell.category, cell.complexity), {})[cell.deliverable_bucket] = (
            cell.samples
        )
    order = {bucket: index for index, bucket in enumerate(("0", "1", "2-5", "6+"))}
    buckets.sort(key=lambda b: (order.get(b, len(order)), b))
    return buckets, [(c, x, counts) for (c, x), counts in rows.items()]


# --------------------------------------------------------------------------------------------
# The terminal


_TIER1_COLUMNS = (
    Column("gate", "id"),
    Column("count", justify="right"),
    Column("rate", justify="right"),
    Column("target", justify="right", priority=1),
    Column("verdict", "id"),
)
_WASTE_COLUMNS = (
    Column("waste", "text"),
    Column("n", justify="right"),
    Column("median", justify="right"),
    Column("p90", justify="right"),
    Column("mean", justify="right", priority=2),
    Column("", "text", priority=1),
)
_SMAPE_COLUMNS = (
    Column("n", justify="right"),
    Column("mean", justify="right"),
    Column("median", justify="right"),
    Column("min", justify="right", priority=2),
    Column("max", justify="right", priority=2),
    Column("predicted mean", justify="right", priority=1),
    Column("actual mean", justify="right", priority=1),
)
# Stratified tables: the stratum's value (a category, complexity or bucket) is an id; the
# figures that matter most for tuning are kept longest.
_STRATUM_PRIORITY = {"SMAPE mean": 3, "waste mean": 2, "success": 1}


def _stratum_columns(title: str) -> list[Column]:
    return [
        Column(title, "id"),
        *(
            Column(header, justify="right", priority=_STRATUM_PRIORITY.get(header))
            for header in STRATUM_HEADERS
        ),
    ]


def show_analysis(report: AnalysisReport) -> None:
    """The report as Rich tables on stdout (warnings on stderr)."""
    out = report_console()
    width = out.width
    out.print(
        f"[bold]telemetry analysis[/]: {report.rows:,} of {report.table_rows:,} rows "
        f"(filters: {escape(_filters(report.filters, report.under_multiplier))})"
    )
    if report.first_timestamp and report.last_timestamp:
        out.print(
            f"samples from {report.first_timestamp:%Y-%m-%d %H:%M} to "
            f"{report.last_timestamp:%Y-%m-%d %H:%M} UTC"
        )
    tier1 = [
        (name, f"{check.count:,} / {check.rows:,}", _pct(check.rate), _target(check), _mark(check))
        for name, check in _tier1_rows(report)
    ]
    out.print(
        fit_table(
            _TIER1_COLUMNS,
            tier1,
            width=width,
            title=escape(f"Tier 1 — risk ({report.tier1.population})"),
        )
    )
    style = {"within_targets": "green", "tuning_needed": "red", "no_samples": "yellow"}[
        report.verdict.status
    ]
    out.print(f"[bold {style}]{escape(report.verdict.summary)}[/]")
    waste = [
        (
            escape(stats.definition),
            f"{stats.n:,}",
            _ratio(stats.median),
            _ratio(stats.p90),
            _ratio(stats.mean),
            _waste_note(stats),
        )
        for stats in report.waste
    ]
    out.print(
        fit_table(
            _WASTE_COLUMNS,
            waste,
            width=width,
            title="Tier 2 — cost: waste = tokens allowed / actual (non-truncated rows)",
        )
    )
    smape = (
        f"{report.smape.n:,}",
        _smape(report.smape.mean),
        _smape(report.smape.median),
        _smape(report.smape.min),
        _smape(report.smape.max),
        _tokens(report.non_truncated.predicted_mean),
        _tokens(report.non_truncated.actual_mean),
    )
    out.print(
        fit_table(
            _SMAPE_COLUMNS,
            [smape],
            width=width,
            title=escape(f"SMAPE ({report.smape.population})"),
        )
    )
    truncated = report.truncated
    if truncated.rows:
        out.print(
            f"truncated rows (lower bounds, apart): {truncated.rows:,}; predicted mean "
            f"{_tokens(truncated.predicted_mean)}, actual mean ≥ {_tokens(truncated.actual_mean)}; "
            f"underestimated {truncated.underestimated:,} "
            f"({_pct(truncated.underestimated_rate)})"
        )
    else:
        out.print("truncated rows: none")
    if report.strata is not None:
        for title, strata in (
            ("by category", report.strata.by_category),
            ("by complexity", report.strata.by_complexity),
            ("by deliverable count", report.strata.by_deliverable_bucket),
        ):
            rows = [(escape(stratum.value), *_stratum_cells(stratum)) for stratum in strata]
            columns = _stratum_columns(title.removeprefix("by "))
            out.print(fit_table(columns, rows, width=width, title=f"stratified {title}"))
        out.print(escape(report.strata.note))
    _show_coverage(report.coverage)
    for message in report.warnings:
        warn(message)
    out.print(
        "median = true median (mean of the two middle values for even n); p90 = the exclusive "
        "quantile of Python's statistics (the maximum below 10 values)"
    )


def show_written(path: Path) -> None:
    report_console().print(f"report written to {escape(str(path))}", soft_wrap=True)


def _show_coverage(coverage: CoverageReport) -> None:
    out = report_console()
    buckets, grid = _coverage_grid(coverage)
    columns = [
        Column("category", "id"),
        Column("complexity", "id"),
        *(Column(bucket, justify="right") for bucket in buckets),
        Column("total", justify="right"),
    ]
    rows = [
        (
            escape(category),
            escape(complexity),
            *(str(counts[b]) if b in counts else "" for b in buckets),
            str(sum(counts.values())),
        )
        for category, complexity, counts in grid
    ]
    title = "coverage: clean samples (success, not truncated) per deliverable bucket"
    out.print(fit_table(columns, rows, width=out.width, title=title))
    style = "green" if coverage.ready else "yellow"
    out.print(f"[bold {style}]{escape(coverage.verdict)}[/]")


# --------------------------------------------------------------------------------------------
# Markdown


def _md(text: object) -> str:
    """A table cell: pipes escaped, never multi-line."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], right: int = 1) -> list[str]:
    """A Markdown table; columns from `right` on are right-aligned."""
    align = ["---" if i < right else "---:" for i in range(len(headers))]
    lines = ["| " + " | ".join(_md(h) for h in headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(_md(cell) for cell in row) + " |" for row in rows]
    return lines


def to_markdown(report: AnalysisReport, target: TargetInfo | None = None) -> str:
    """The report as a Markdown document (the `--output report.md` file)."""
    lines = ["# Token-estimation telemetry analysis", ""]
    lines += [
        f"- generated: {report.generated_at.isoformat(sep=' ', timespec='seconds')} UTC",
    ]
    if target is not None:
        where = target.path or ("in-memory" if target.in_memory else target.backend)
        lines.append(f"- database: `{target.url}` ({where}; role {target.role})")
    lines += [
        "- source: the `token_estimation_v2_events` table (not log files)",
        f"- filters: {_filters(report.filters, report.under_multiplier)}",
        f"- rows analysed: {report.rows:,} of {report.table_rows:,}",
    ]
    if report.first_timestamp and report.last_timestamp:
        lines.append(
            f"- samples from {report.first_timestamp:%Y-%m-%d %H:%M} to "
            f"{report.last_timestamp:%Y-%m-%d %H:%M} UTC"
        )
    lines += ["", "## Verdict", "", f"**{report.verdict.summary}**", ""]
    lines += [f"- {action}" for action in report.verdict.actions] + [""]
    lines += [
        "## Tier 1 — risk (the tuning gates)",
        "",
        f"Population: {report.tier1.population}.",
        "",
    ]
    lines += _table(
        ("gate", "count", "rate", "target", "verdict"),
        [
            (name, f"{c.count:,} / {c.rows:,}", _pct(c.rate), _target(c), _mark(c))
            for name, c in _tier1_rows(report)
        ],
    )
    lines += ["", "## Tier 2 — cost (waste)", ""]
    lines += [
        "Waste is the tokens allowed over the tokens used. Three definitions are in use; all "
        "three are reported, each over its own population:",
        "",
    ]
    lines += _table(
        ("waste", "population", "n", "median", "p90", "mean"),
        [
            (
                w.definition,
                w.population,
                f"{w.n:,}",
                _ratio(w.median),
                _ratio(w.p90),
                _ratio(w.mean),
            )
            for w in report.waste
        ],
        right=2,
    )
    guide = next((w for w in report.waste if w.p90_guide is not None), None)
    if guide is not None and guide.p90 is not None and guide.p90_guide is not None:
        lines += [
            "",
            f"Secondary (informational) target: p90 of {guide.definition} below "
            f"{guide.p90_guide:g}× — {_waste_note(guide)}.",
        ]
    lines += ["", "## Accuracy (SMAPE)", "", f"Population: {report.smape.population}.", ""]
    lines += _table(
        ("n", "mean", "median", "min", "max", "predicted mean", "actual mean"),
        [
            (
                f"{report.smape.n:,}",
                _smape(report.smape.mean),
                _smape(report.smape.median),
                _smape(report.smape.min),
                _smape(report.smape.max),
                _tokens(report.non_truncated.predicted_mean),
                _tokens(report.non_truncated.actual_mean),
            )
        ],
        right=0,
    )
    t = report.truncated
    lines += ["", "### Truncated rows (lower bounds, reported apart)", ""]
    if t.rows:
        lines += [
            f"{t.rows:,} truncated rows: predicted mean {_tokens(t.predicted_mean)}, actual mean "
            f"≥ {_tokens(t.actual_mean)} (a lower bound: the call hit max_tokens); "
            f"{t.underestimated:,} underestimated ({_pct(t.underestimated_rate)}).",
        ]
    else:
        lines.append("None.")
    if report.strata is not None:
        lines += ["", "## Stratified", "", f"Population: {report.strata.population}.", ""]
        lines += [report.strata.note + ".", ""]
        for title, strata in (
            ("category", report.strata.by_category),
            ("complexity", report.strata.by_complexity),
            ("deliverable count", report.strata.by_deliverable_bucket),
        ):
            lines += [f"### By {title}", ""]
            lines += _table(
                (title, *STRATUM_HEADERS),
                [(s.value, *_stratum_cells(s)) for s in strata],
            )
            lines.append("")
    lines += _coverage_markdown(report.coverage)
    if report.next_steps:
        lines += ["", "## Next steps", ""] + [f"- {step}" for step in report.next_steps]
    if report.warnings:
        lines += ["", "## Warnings", ""] + [f"- {message}" for message in report.warnings]
    lines += ["", "## Definitions", ""]
    lines += [f"- **{name}**: {text}" for name, text in report.definitions.items()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).rstrip() + "\n"


def _coverage_markdown(coverage: CoverageReport) -> list[str]:
    buckets, rows = _coverage_grid(coverage)
    lines = ["", "## Coverage", "", f"Clean samples: {coverage.population}.", ""]
    lines += [
        f"Goal: at least {coverage.min_total} in all, and every category "
        f"({', '.join(coverage.required_categories)}), complexity "
        f"({', '.join(coverage.required_complexities)}) and deliverable bucket "
        f"({', '.join(coverage.required_buckets)}) represented.",
        "",
    ]
    lines += _table(
        ("category", "complexity", *buckets, "total"),
        [
            (c, x, *(str(counts[b]) if b in counts else "" for b in buckets), sum(counts.values()))
            for c, x, counts in rows
        ],
        right=2,
    )
    lines += ["", f"**{coverage.verdict}**"]
    return lines


def output_path(path: Path, target: TargetInfo | None = None) -> Path:
    """The `--output` destination (symlinks followed), refusing (exit 2) a directory, a missing
    folder, or the database itself — checked before the analysis runs, not after."""
    database = Path(target.path) if target is not None and target.path is not None else None
    return check_output_path(path, database=database, what="analysed")


def write_markdown(report: AnalysisReport, path: Path, target: TargetInfo | None = None) -> Path:
    """Write the Markdown report to `path` (atomically for a regular file, straight into a
    FIFO or device: autopack.output_file); returns the path written."""
    output_path(path, target)
    with open_output(path) as file:
        file.stream.write(to_markdown(report, target).encode("utf-8"))
    return file.path
