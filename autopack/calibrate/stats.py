"""Weighted statistics over aggregated samples (a value and how many rows share it)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


def weighted_quantile(values: Array, weights: Array, q: float) -> float:
    """The q-quantile of values repeated `weights` times (weights are row counts).

    For q = 0.5 this is the ordinary median of the expanded rows: the mean of the two middle
    rows when their count is even. Empty input gives NaN (callers check counts first).
    """
    total = float(weights.sum())
    if values.size == 0 or total <= 0:
        return float("nan")
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    cumulative = np.cumsum(weights[order])
    position = q * total
    index = int(np.searchsorted(cumulative, position, side="left"))
    index = min(index, sorted_values.size - 1)
    if np.isclose(cumulative[index], position) and index + 1 < sorted_values.size:
        return float((sorted_values[index] + sorted_values[index + 1]) / 2)
    return float(sorted_values[index])


def weighted_median(values: Array, weights: Array) -> float:
    return weighted_quantile(values, weights, 0.5)


def weighted_mean(values: Array, weights: Array) -> float:
    total = float(weights.sum())
    return float((values * weights).sum() / total) if total > 0 else float("nan")


def weighted_share(flags: npt.NDArray[np.bool_], weights: Array) -> float:
    """The fraction of rows (by weight) where `flags` holds."""
    total = float(weights.sum())
    return float(weights[flags].sum() / total) if total > 0 else float("nan")
