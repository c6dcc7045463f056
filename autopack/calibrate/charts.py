"""The proposal's pictures, as PNG (matplotlib, Agg backend; imported only when drawing).

1. predicted vs actual per category, log scale, with the current and proposed estimates;
2. the distribution of actual / current prediction per group (median, quartiles, 5–95 %);
3. truncation vs waste as the budget buffer moves, for the current and the proposed set.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from autopack.calibrate.samples import FloatArray

MAX_POINTS_PER_CATEGORY: Final = 2000
"""More points than this are drawn as a weighted sample of them (a chart, not the data)."""
CHART_NAMES: Final = ("predicted_vs_actual", "ratios", "truncation_vs_waste")


@dataclass
class CategoryPoints:
    actual: FloatArray
    current: FloatArray
    proposed: FloatArray
    weight: FloatArray


@dataclass
class GroupRatios:
    label: str
    p5: float
    p25: float
    median: float
    p75: float
    p95: float
    n: int


@dataclass
class TradeOff:
    """Truncation rate and median waste as the buffer is multiplied by each factor."""

    factors: list[float]
    current: list[tuple[float, float]]
    proposed: list[tuple[float, float]]


@dataclass
class ChartData:
    categories: dict[str, CategoryPoints] = field(default_factory=dict)
    ratios: list[GroupRatios] = field(default_factory=list)
    trade_off: TradeOff | None = None


def _thin(points: CategoryPoints, seed: int) -> CategoryPoints:
    if points.actual.size <= MAX_POINTS_PER_CATEGORY:
        return points
    rng = np.random.default_rng(seed)
    chosen = rng.choice(
        points.actual.size,
        size=MAX_POINTS_PER_CATEGORY,
        replace=False,
        p=points.weight / points.weight.sum(),
    )
    return CategoryPoints(
        points.actual[chosen], points.current[chosen], points.proposed[chosen], np.ones(chosen.size)
    )


def _save(figure: Any, path: Path) -> Path:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        figure.savefig(temporary, format="png", dpi=110)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def draw_charts(data: ChartData, directory: Path, stem: str) -> list[Path]:
    """Draw the three charts into `directory` as `<stem>_<chart>.png`; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    written: list[Path] = []
    try:
        for name, draw in zip(
            CHART_NAMES, (_predicted_vs_actual, _ratios, _trade_off), strict=True
        ):
            figure = draw(pyplot, data)
            try:
                written.append(_save(figure, directory / f"{stem}_{name}.png"))
            finally:
                pyplot.close(figure)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written


def _predicted_vs_actual(pyplot: Any, data: ChartData) -> Any:
    count = max(1, len(data.categories))
    columns = min(3, count)
    rows = (count + columns - 1) // columns
    figure, axes = pyplot.subplots(
        rows, columns, figsize=(4.2 * columns, 3.8 * rows), squeeze=False
    )
    for index, (category, points) in enumerate(sorted(data.categories.items())):
        axis = axes[index // columns][index % columns]
        shown = _thin(points, index)
        axis.scatter(shown.actual, shown.current, s=12, alpha=0.6, label="current", marker="o")
        axis.scatter(shown.actual, shown.proposed, s=12, alpha=0.6, label="proposed", marker="x")
        low = float(min(shown.actual.min(), shown.current.min(), shown.proposed.min()))
        high = float(max(shown.actual.max(), shown.current.max(), shown.proposed.max()))
        axis.plot([low, high], [low, high], color="grey", linewidth=1, label="exact")
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_title(f"{category} (n={int(points.weight.sum())})")
        axis.set_xlabel("actual output tokens")
        axis.set_ylabel("predicted")
        axis.legend(fontsize="small")
    for index in range(len(data.categories), rows * columns):
        axes[index // columns][index % columns].axis("off")
    figure.suptitle("Predicted vs actual output tokens (held-in rows, log scale)")
    figure.tight_layout()
    return figure


def _ratios(pyplot: Any, data: ChartData) -> Any:
    groups = data.ratios
    figure, axis = pyplot.subplots(figsize=(7.5, 0.45 * max(4, len(groups)) + 1.2))
    stats = [
        {
            "label": f"{g.label} (n={g.n})",
            "med": g.median,
            "q1": g.p25,
            "q3": g.p75,
            "whislo": g.p5,
            "whishi": g.p95,
            "fliers": [],
        }
        for g in groups
    ]
    if stats:
        axis.bxp(stats, orientation="horizontal", showfliers=False)
    axis.axvline(1.0, color="grey", linewidth=1)
    axis.set_xscale("log")
    axis.set_xlabel("actual / current prediction (box: quartiles, whiskers: 5-95 %)")
    axis.set_title("How far off the current set is, per group")
    figure.tight_layout()
    return figure


def _trade_off(pyplot: Any, data: ChartData) -> Any:
    figure, axis = pyplot.subplots(figsize=(6.5, 4.5))
    trade = data.trade_off
    if trade is not None:
        for label, curve, marker in (
            ("current", trade.current, "o"),
            ("proposed", trade.proposed, "x"),
        ):
            waste = [point[1] for point in curve]
            truncation = [point[0] * 100 for point in curve]
            axis.plot(waste, truncation, marker=marker, label=label)
            at_one = trade.factors.index(1.0) if 1.0 in trade.factors else None
            if at_one is not None:
                axis.annotate(
                    "as proposed" if label == "proposed" else "as today",
                    (waste[at_one], truncation[at_one]),
                    textcoords="offset points",
                    xytext=(6, 6),
                    fontsize="small",
                )
    axis.axhline(2.0, color="grey", linestyle="--", linewidth=1, label="2 % target")
    axis.set_xlabel("median waste (budget / actual)")
    axis.set_ylabel("truncation rate (%)")
    axis.set_title("Truncation vs waste as the budget buffer moves (x0.6 ... x2)")
    axis.legend(fontsize="small")
    figure.tight_layout()
    return figure
