"""Rendering `estimate`: the prediction, its breakdown and the budget it selects (stdout)."""

from __future__ import annotations

from rich.markup import escape

from autopack.console import report_console
from autopack.estimator.report import EstimateReport
from autopack.render.fit import KEY_VALUE, Column, fit_table


def show_estimate(report: EstimateReport) -> None:
    predicted = report.estimate
    rows = [
        ("predicted output tokens", f"{predicted.estimated_tokens:,}"),
        ("category (effective)", escape(predicted.category)),
        ("complexity", escape(predicted.complexity)),
        ("deliverables", str(predicted.deliverable_count)),
        ("model", escape(predicted.model)),
    ]
    rows += [(f"  {escape(part)}", f"{tokens:,}") for part, tokens in predicted.breakdown.items()]
    floors = f" ({', '.join(report.floors)})" if report.floors else ""
    rows += [
        ("confidence", f"{predicted.confidence:.2f}"),
        ("selected budget", f"{report.selected_budget:,}"),
        ("max_tokens sent", f"{report.max_tokens:,}{escape(floors)}"),
        (
            "coefficient set",
            escape(f"{predicted.coefficient_set} ({predicted.coefficient_set_hash})"),
        ),
    ]
    columns = (Column("", "id", style="bold"), Column("", "text", justify="right"))
    out = report_console()
    out.print(fit_table(columns, rows, width=out.width, title="token estimate", style=KEY_VALUE))
