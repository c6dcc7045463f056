"""Rendering for `autopack seed …`: built-in runs, a run's phases, the coverage matrix, the mix.

Every figure printed comes from the typed results of `autopack.seed`; nothing is typed here.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.markup import escape
from rich.table import Table

from autopack.console import stderr_console
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


def coverage_table(coverage: Coverage, *, title: str = "coverage") -> Table:
    """Rows: categories; columns: complexity × deliverable bucket; cells: phase counts."""
    buckets = list(coverage.by_deliverables)
    table = Table(title=title, title_justify="left")
    table.add_column("category")
    columns = [(level, bucket) for level in TARGET_COMPLEXITIES for bucket in buckets]
    for level, bucket in columns:
        table.add_column(f"{level}\n{bucket}", justify="right")
    table.add_column("total", justify="right")
    counts = {(c.category, c.complexity, c.deliverable_bucket): c.phases for c in coverage.cells}
    for category, mix in coverage.by_category.items():
        row = [str(counts.get((category, level, bucket), 0)) for level, bucket in columns]
        table.add_row(escape(category), *row, str(mix.phases))
    totals = [
        str(sum(counts.get((category, level, bucket), 0) for category in coverage.by_category))
        for level, bucket in columns
    ]
    table.add_row("total", *totals, str(coverage.phases), style="bold")
    return table


def _print_mix(coverage: Coverage) -> None:
    out = stderr_console()
    out.print(coverage_table(coverage))
    for line in mix_lines(coverage):
        out.print(escape(line), soft_wrap=True)


def show_builtins(summaries: Sequence[BuiltinSummary]) -> None:
    table = Table(
        title="built-in seed runs", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False
    )
    table.add_column("name", no_wrap=True)
    table.add_column("phases", justify="right", no_wrap=True)
    for category in ("impl", "tests", "docs"):
        table.add_column(f"{category}\n(l/m/h)", justify="right", no_wrap=True)
    table.add_column("cells", justify="right", no_wrap=True)
    for summary in summaries:
        mixes = summary.coverage.by_category
        split = [
            f"{mixes[c].phases} ({mixes[c].low}/{mixes[c].medium}/{mixes[c].high})"
            for c in ("implementation", "tests", "docs")
        ]
        table.add_row(
            escape(summary.name),
            str(summary.phases),
            *split,
            f"{summary.coverage.covered_target_cells}/{summary.coverage.target_cells}",
        )
    out = stderr_console()
    out.print(table)
    for summary in summaries:
        out.print(f"{escape(summary.name)}: {escape(summary.description)}", soft_wrap=True)
    out.print(
        "impl/tests/docs: phases (low/medium/high); cells: how many of the 18 category × "
        "complexity × (1 or 2-5 deliverables) cells have a phase. Details: autopack seed show NAME",
        soft_wrap=True,
    )


def _phase_table(rows: Sequence[tuple[int, str, str, str, int]], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("phase", overflow="fold")
    table.add_column("category")
    table.add_column("complexity")
    table.add_column("deliverables", justify="right")
    for index, phase_id, category, complexity, deliverables in rows:
        table.add_row(
            str(index + 1),
            escape(phase_id),
            escape(category),
            escape(complexity),
            str(deliverables),
        )
    return table


def show_plan(plan: SeedPlan) -> None:
    out = stderr_console()
    origin = _origin(plan.builtin, plan.file)
    out.print(f"[bold]{escape(plan.run_id)}[/] ({escape(origin)})", soft_wrap=True)
    if plan.description:
        out.print(escape(plan.description), soft_wrap=True)
    out.print(
        f"run: token_cap {plan.token_cap:,}, max_phases {plan.max_phases}, "
        f"max_duration_minutes {plan.max_duration_minutes}; tier T1 {escape(plan.tier_name)!r}: "
        f"token_cap {plan.tier_token_cap:,}, ci_run_cap {plan.ci_run_cap}; per phase: "
        f"max_builder_attempts {plan.max_builder_attempts}, max_auditor_attempts "
        f"{plan.max_auditor_attempts}, incident_token_cap {plan.incident_token_cap:,}",
        soft_wrap=True,
    )
    rows = [
        (p.phase_index, p.phase_id, p.task_category, p.complexity, len(p.scope.deliverables))
        for p in plan.phases
    ]
    out.print(_phase_table(rows, "phases (in drain order)"))
    _print_mix(plan.coverage)


def show_report(report: SeedReport, *, quiet: bool) -> None:
    out = stderr_console()
    if not quiet:
        rows = [
            (p.phase_index, p.phase_id, p.task_category, p.complexity, p.deliverables)
            for p in report.phases
        ]
        out.print(_phase_table(rows, "phases created (QUEUED)"))
    origin = _origin(report.builtin, report.file)
    out.print(
        f"created run [bold]{escape(report.run_id)}[/] from {escape(origin)}: tier "
        f"{report.tier_id}, {_plural(report.phases_created, 'QUEUED phase')}",
        soft_wrap=True,
    )
    _print_mix(report.coverage)
