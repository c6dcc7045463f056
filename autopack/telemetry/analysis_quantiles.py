"""Exact quantiles for `telemetry analyze`: the quantile definition, and brackets.

`quantile_of_sorted` is the one definition of the reported medians and p90s (see
`DEFINITIONS` in autopack.telemetry.analysis_report). A *bracket* is a value range placed from
a stride sample where one quantile should lie: the scan (autopack.telemetry.analysis_scan)
counts the rows below it and collects the values inside it, and `resolve_quantile` reads the
exact quantile from those, or reports a miss so the scan reads the whole column instead.
Plain Python: nothing here touches the database.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Final

from autopack.telemetry.analysis_report import MEDIAN, METRICS, QUANTILES, MetricName

BRACKET_SIGMAS: Final = 4.0
"""Half-width of a bracket in standard errors of the sample quantile's rank."""
MIN_BRACKET_SAMPLE: Final = 200
"""A metric with fewer sampled values gets no bracket: all of its values are read."""


def _quantile_ranks(n: int, quantile: Fraction) -> tuple[int, Fraction]:
    """(j, f) such that the quantile of n sorted values x[0..n-1] is x[j] + f·(x[j+1] − x[j]).

    The "exclusive" definition of Python's `statistics.quantiles` (the original analyzer's):
    the 1-based position h = q·(n+1), clamped to [1, n]. Exact for any n (no float ranks).
    """
    position = min(max(quantile * (n + 1), Fraction(1)), Fraction(n))
    whole = math.floor(position)
    return whole - 1, position - whole


def quantile_of_sorted(values: Sequence[float], quantile: Fraction) -> float | None:
    """A quantile of already sorted values, by the definition in `_quantile_ranks`.

    The 1/2 quantile is the true median (the mean of the two middle values when n is even);
    the 9/10 quantile of fewer than 10 values is the maximum, as the original analyzer had it.
    """
    if not values:
        return None
    index, fraction = _quantile_ranks(len(values), quantile)
    return _interpolate(values[index], values[index + 1] if fraction else None, fraction)


def _interpolate(low: float, high: float | None, fraction: Fraction) -> float:
    if high is None or fraction == 0:
        return low
    if fraction == MEDIAN:
        return (low + high) / 2
    return low + float(fraction) * (high - low)


@dataclass(frozen=True)
class Bracket:
    """A value range [lo, hi] (None = unbounded) expected to hold one quantile's ranks."""

    metric: MetricName
    quantile: Fraction
    lo: float | None
    hi: float | None

    @property
    def bounds(self) -> tuple[float, float]:
        return (
            -math.inf if self.lo is None else self.lo,
            math.inf if self.hi is None else self.hi,
        )


def place_brackets(sampled: dict[MetricName, list[float]] | None) -> list[Bracket]:
    """One bracket per (metric, quantile); unbounded when there is no usable sample."""
    brackets: list[Bracket] = []
    for metric in METRICS:
        values = sampled.get(metric, []) if sampled is not None else []
        for quantile in QUANTILES[metric]:
            if len(values) < MIN_BRACKET_SAMPLE:
                brackets.append(Bracket(metric, quantile, None, None))
                continue
            q = float(quantile)
            size = len(values)
            spread = BRACKET_SIGMAS * math.sqrt(q * (1 - q) / size) + 2 / size
            low = math.floor((q - spread) * (size - 1))
            high = math.ceil((q + spread) * (size - 1))
            brackets.append(
                Bracket(
                    metric,
                    quantile,
                    values[low] if low > 0 else None,
                    values[high] if high < size - 1 else None,
                )
            )
    return brackets


def resolve_quantile(
    n: int, quantile: Fraction, below: int, inside: Sequence[float]
) -> tuple[bool, float | None]:
    """(found, value) from the rows below a bracket and the sorted values inside it."""
    if n == 0:
        return True, None
    index, fraction = _quantile_ranks(n, quantile)
    last = index + 1 if fraction else index
    if not (below <= index and last - below < len(inside)):
        return False, None
    high = inside[last - below] if fraction else None
    return True, _interpolate(inside[index - below], high, fraction)
