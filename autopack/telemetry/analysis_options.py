"""The options of `telemetry analyze`: which rows to analyse and how, checked on creation.

Their own module, below the scan and the planning that read them and the entry point
(autopack.telemetry.analyze) that takes them, so that no module imports upwards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from autopack.errors import ConfigError
from autopack.estimator import COMPLEXITY_LEVELS
from autopack.telemetry.choices import DEFAULT_MIN_TOTAL
from autopack.telemetry.columns import parse_timestamp


def parse_time_bound(value: str, option: str) -> datetime:
    """An ISO 8601 date or date-time as naive UTC (a bare date is its midnight; `Z` allowed)."""
    try:
        return parse_timestamp(value)  # the one timestamp parser (telemetry import's too)
    except ValueError:
        raise ConfigError(
            f"{option} {value!r} is not an ISO 8601 date or date-time.",
            hint=f"e.g. {option} 2025-12-29 or {option} 2025-12-29T14:00:00Z (naive = UTC)",
        ) from None


@dataclass(frozen=True)
class AnalyzeOptions:
    """Which rows to analyse and how; filters combine with AND, repeated values with OR."""

    success_only: bool = False
    """Only builder-level successes (success = true)."""
    run_ids: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    """Matched after normalisation: `tests` also selects rows stored as `testing`."""
    complexities: tuple[str, ...] = ()
    """low, medium, high or maintenance; matched against normalised stored values."""
    since: datetime | None = None
    """Inclusive lower bound on `timestamp` (naive UTC)."""
    until: datetime | None = None
    """Exclusive upper bound on `timestamp` (naive UTC)."""
    under_multiplier: float = 1.0
    stratify: bool = False
    coverage_goal: int = DEFAULT_MIN_TOTAL
    allow_empty_db: bool = False

    def __post_init__(self) -> None:
        if not math.isfinite(self.under_multiplier) or self.under_multiplier <= 0:
            raise ConfigError(
                f"--under-multiplier {self.under_multiplier} must be a positive number.",
                hint="e.g. --under-multiplier 1.0 (actual > predicted) or 1.2 (20 % tolerance)",
            )
        if self.coverage_goal < 1:
            raise ConfigError(
                f"--coverage-goal {self.coverage_goal} must be at least 1.",
                hint=f"the runbook's goal is {DEFAULT_MIN_TOTAL} clean samples",
            )
        for value in self.complexities:
            if value.strip().lower() not in COMPLEXITY_LEVELS:
                raise ConfigError(
                    f"unknown complexity {value!r}.",
                    hint=f"use one of {', '.join(COMPLEXITY_LEVELS)}",
                )
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ConfigError(
                f"--since {self.since.isoformat()} is not before --until {self.until.isoformat()}.",
                hint="--since is inclusive and --until exclusive, e.g. "
                "--since 2025-12-29 --until 2025-12-30 selects the 29th",
            )
