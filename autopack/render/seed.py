"""Rendering for `autopack seed …`: built-in runs, a run's phases, the coverage matrix, the mix.

Every figure printed comes from the typed results of `autopack.seed`; nothing is typed here.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.console import RenderableType
from rich.markup import escape

from autopack.console import report_console
from autopack.render.fit import Column, Row, TableStyle, fit_table
from autopack.seed.coverage import TARGET_COMPLEXITIES, Coverage
from autopack.seed.create import SeedReport
from autopack.seed.plan import BuiltinSummary, SeedPlan


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _origin(builtin: str | None, file: str | None) -> str:
    if builtin:
        return f"built-in {builtin}"
    return f"file {file}" if file else "a spec given in Python"


def _complexity_split(low: int, medium: int, high: int) -> str:
    return f"{low} low, {medium} medium, {high} high"


def mix_lines(coverage: Coverage) -> list[str]:
    """The real mix, in words: per category by complexity, by deliverable count, the gaps."""
    lines = [
        f"{category}: {_plural(mix.phases, 'phase')} "
        f"({_complexity_split(mix.low, mix.medium, mix.high)})"
        for category, mix in coverage.by_category.items()
    ]
    buckets = ", ".join(
        f"{count} with {bucket}" for bucket, count in coverage.by_deliverables.items()
    )
    lines.append(f"deliverables per phase: {buckets}")
    for level in TARGET_COMPLEXITIES:
        if coverage.by_complexity.get(level, 0) == 0:
            lines.append(f"no {level}-complexity phase")
    lines.append(
        f"covers {coverage.covered_target_cells} of {coverage.target_cells} target cells "
        "(implementation/tests/docs × low/medium/high × 1 or 2-5 deliverables)"
    )
    if coverage.missing_cells:
        lines.append(f"missing: {', '.join(coverage.missing_cells)}")
    return lines


def coverage_table(coverage: Coverage, *, width: int, title: str = "coverage") -> RenderableType:
    """Rows: categories; columns: complexity × deliverable bucket; cells: phase counts."""
    buckets = list(coverage.by_deliverables)
    pairs = [(level, bucket) for level in TARGET_COMPLEXITIES for bucket in buckets]
    columns = [
        Column("category", "id"),
        *(Column(f"{level}\n{bucket}", justify="right") for level, bucket in pairs),
        Column("total", justify="right"),
    ]
    counts = {(c.category, c.complexity, c.deliverable_bucket): c.phases for c in coverage.cells}
    rows = [
        Row(
            (
                escape(category),
                *(str(counts.get((category, level, bucket), 0)) for level, bucket in pairs),
                str(mix.phases),
            )
        )
        for category, mix in coverage.by_category.items()
    ]
    totals = [
        str(sum(counts.get((category, level, bucket), 0) for category in coverage.by_category))
        for level, bucket in pairs
    ]
    rows.append(Row(("total", *totals, str(coverage.phases)), style="bold"))
    return fit_table(columns, rows, width=width, title=title)


def _print_mix(coverage: Coverage) -> None:
    out = report_console()
    out.print(coverage_table(coverage, width=out.width))
    for line in mix_lines(coverage):
        out.print(escape(line))


_BUILTIN_COLUMNS = (
    Column("name", "id"),
    Column("phases", justify="right"),
    *(Column(f"{category} (l/m/h)", justify="right") for category in ("impl", "tests", "docs")),
    Column("cells", justify="right"),
)


def show_builtins(summaries: Sequence[BuiltinSummary]) -> None:
    rows = []
    for summary in summaries:
        mixes = summary.coverage.by_category
        split = [
            f"{mixes[c].phases} ({mixes[c].low}/{mixes[c].medium}/{mixes[c].high})"
            for c in ("implementation", "tests", "docs")
        ]
        rows.append(
            (
                escape(summary.name),
                str(summary.phases),
                *split,
                f"{summary.coverage.covered_target_cells}/{summary.coverage.target_cells}",
            )
        )
    out = report_console()
    out.print(
        fit_table(
            _BUILTIN_COLUMNS,
            rows,
            width=out.width,
            title="built-in seed runs",
            style=TableStyle(box=box.SIMPLE_HEAD, pad_edge=False),
        )
    )
    for summary in summaries:
        out.print(f"{escape(summary.name)}: {escape(summary.description)}")
    out.print(
        "impl/tests/docs: phases (low/medium/high); cells: how many of the 18 category × "
        "complexity × (1 or 2-5 deliverables) cells have a phase. Details: autopack seed show NAME"
    )


_PHASE_COLUMNS = (
    Column("#", justify="right", priority=1),
    Column("phase", "id"),
    Column("category", "id"),
    Column("complexity", "id"),
    Column("deliverables", justify="right"),
)


def _phase_table(
    rows: Sequence[tuple[int, str, str, str, int]], title: str, width: int
) -> RenderableType:
    cells = [
        (str(index + 1), escape(phase_id), escape(category), escape(complexity), str(count))
        for index, phase_id, category, complexity, count in rows
    ]
    return fit_table(_PHASE_COLUMNS, cells, width=width, title=title)


def show_plan(plan: SeedPlan) -> None:
    out = report_console()
    origin = _origin(plan.builtin, plan.file)
    out.print(f"[bold]{escape(plan.run_id)}[/] ({escape(origin)})")
    if plan.description:
        out.print(escape(plan.description))
    out.print(
        f"run: token_cap {plan.token_cap:,}, max_phases {plan.max_phases}, "
        f"max_duration_minutes {plan.max_duration_minutes}; tier T1 {escape(plan.tier_name)!r}: "
        f"token_cap {plan.tier_token_cap:,}, ci_run_cap {plan.ci_run_cap}; per phase: "
        f"max_builder_attempts {plan.max_builder_attempts}, max_auditor_attempts "
        f"{plan.max_auditor_attempts}, incident_token_cap {plan.incident_token_cap:,}"
    )
    rows = [
        (p.phase_index, p.phase_id, p.task_category, p.complexity, len(p.scope.deliverables))
        for p in plan.phases
    ]
    out.print(_phase_table(rows, "phases (in drain order)", out.width))
    _print_mix(plan.coverage)


def show_report(report: SeedReport, *, quiet: bool) -> None:
    out = report_console()
    if not quiet:
        rows = [
            (p.phase_index, p.phase_id, p.task_category, p.complexity, p.deliverables)
            for p in report.phases
        ]
        out.print(_phase_table(rows, "phases created (QUEUED)", out.width))
    origin = _origin(report.builtin, report.file)
    out.print(
        f"created run [bold]{escape(report.run_id)}[/] from {escape(origin)}: tier "
        f"{report.tier_id}, {_plural(report.phases_created, 'QUEUED phase')}"
    )
    _print_mix(report.coverage)
