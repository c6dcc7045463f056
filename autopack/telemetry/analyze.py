"""Analyse token-estimation telemetry from the database: risk, cost, accuracy and coverage.

`analyze_telemetry(db, options)` reads `token_estimation_v2_events` (never log files, as the
original's V3 analyzer did) and returns an `AnalysisReport`:

- Tier 1 (risk, the tuning gates): underestimation rate (actual > predicted × multiplier),
  truncation rate and success rate over all analysed rows, judged against the runbook's targets
  (underestimation ≤ 5 %, truncation ≤ 2 %);
- Tier 2 (cost): the three waste ratios (predicted, selected budget and max_tokens sent, each
  over actual), with median, p90 and mean, over non-truncated rows;
- SMAPE mean, median, min and max over non-truncated rows; truncated rows apart, as lower bounds;
- the same rates stratified by normalised category, complexity and deliverable-count bucket;
- coverage of clean samples against the seeding goal (autopack.telemetry.coverage).

This module holds the options, the entry point and the assembly of the report (tiers, strata,
verdict, next steps). The figures come from one scan of the table, exact and fast on millions
of rows: how is explained in autopack.telemetry.analysis_scan. The report's models and fixed
definitions are in autopack.telemetry.analysis_report.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from autopack.db.engine import Database
from autopack.db.models import utc_now
from autopack.errors import ConfigError
from autopack.estimator import COMPLEXITY_LEVELS, normalize_category
from autopack.telemetry.analysis_report import (
    ALL_ROWS,
    DEFINITIONS,
    MEDIAN,
    NON_TRUNCATED,
    P90,
    TRUNCATED_ROWS,
    TRUNCATION_TARGET,
    UNDERESTIMATION_TARGET,
    WASTE_DEFINITIONS,
    WASTE_P90_GUIDE,
    WASTE_POPULATIONS,
    AnalysisReport,
    Filters,
    SmapeStats,
    Strata,
    Stratum,
    TargetCheck,
    Tier1,
    TokenMeans,
    TruncatedStats,
    Verdict,
    WasteStats,
)
from autopack.telemetry.analysis_scan import Cell, CellKey, EventScan, scan_events
from autopack.telemetry.coverage import (
    DEFAULT_MIN_TOTAL,
    REQUIRED_BUCKETS,
    REQUIRED_CATEGORIES,
    REQUIRED_COMPLEXITIES,
    CoverageReport,
    assess_coverage,
)
from autopack.telemetry.exchange import parse_timestamp

__all__ = ["AnalysisReport", "AnalyzeOptions", "analyze_telemetry", "parse_time_bound"]


# --------------------------------------------------------------------------------------------
# Options


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


def analyze_telemetry(db: Database, options: AnalyzeOptions | None = None) -> AnalysisReport:
    """Analyse the telemetry of `db` (opened read-only is enough); see the module docstring.

    Raises GuardError for an empty DB (0 runs, 0 phases) unless `options.allow_empty_db`, and
    SchemaError when the DB has no telemetry table. Zero matching rows give a report whose
    verdict is `no_samples`.
    """
    options = options or AnalyzeOptions()
    return _assemble(options, scan_events(db, options))


# --------------------------------------------------------------------------------------------
# Assembling the report


def _rate(count: int, rows: int) -> float | None:
    return count / rows if rows else None


def _check(count: int, rows: int, target: float | None) -> TargetCheck:
    rate = _rate(count, rows)
    met = None if rate is None or target is None else rate <= target
    return TargetCheck(count=count, rows=rows, rate=rate, target=target, met=met)


def _mean(total: float, n: int) -> float | None:
    return total / n if n else None


def _strata(
    decoded: Sequence[tuple[CellKey, Cell]],
    label: Callable[[CellKey], str],
    order: Sequence[str],
) -> list[Stratum]:
    groups: dict[str, list[tuple[CellKey, Cell]]] = {}
    for key, cell in decoded:
        groups.setdefault(label(key), []).append((key, cell))
    rank = {value: index for index, value in enumerate(order)}
    strata: list[Stratum] = []
    for value in sorted(groups, key=lambda v: (rank.get(v, len(rank)), v)):
        members = groups[value]
        rows = sum(cell.rows for _, cell in members)
        success = sum(cell.rows for key, cell in members if key.success)
        truncated = sum(cell.rows for key, cell in members if key.truncated)
        under = sum(cell.rows for key, cell in members if key.underestimated)
        smape_n = sum(cell.smape_n for _, cell in members)
        waste_n = sum(cell.waste_n for _, cell in members)
        strata.append(
            Stratum(
                value=value,
                rows=rows,
                success=success,
                truncated=truncated,
                underestimated=under,
                success_rate=success / rows,
                truncation_rate=truncated / rows,
                underestimation_rate=under / rows,
                smape_n=smape_n,
                smape_mean=_mean(math.fsum(c.smape_sum for _, c in members), smape_n),
                waste_mean=_mean(math.fsum(c.waste_sum for _, c in members), waste_n),
            )
        )
    return strata


def _verdict(tier1: Tier1) -> Verdict:
    if tier1.rows == 0:
        return Verdict(
            status="no_samples",
            summary="no samples: no telemetry row matches, so nothing can be judged",
            reasons=["0 rows analysed"],
            actions=["drain phases with telemetry on, or widen the filters"],
        )
    reasons: list[str] = []
    actions: list[str] = []
    under, trunc = tier1.underestimation, tier1.truncation
    if under.met is False:
        reasons.append(
            f"underestimation {_pct(under.rate)} > {_pct(under.target)} "
            f"({under.count} of {under.rows} calls needed more than predicted × "
            f"{tier1.under_multiplier})"
        )
        actions.append(
            "raise the base estimates of the groups that under-predict (see --stratify), or "
            "budget from a high quantile (p90) of actual/predicted instead of the median"
        )
    if trunc.met is False:
        reasons.append(
            f"truncation {_pct(trunc.rate)} > {_pct(trunc.target)} "
            f"({trunc.count} of {trunc.rows} calls hit max_tokens)"
        )
        actions.append(
            "raise the budget margins or floors for the truncating groups so fewer calls hit "
            "max_tokens (each truncation costs an escalation and a retry)"
        )
    if reasons:
        return Verdict(
            status="tuning_needed",
            summary="tuning needed: " + "; ".join(reasons),
            reasons=reasons,
            actions=actions,
        )
    return Verdict(
        status="within_targets",
        summary=(
            f"within targets: underestimation {_pct(under.rate)} ≤ {_pct(under.target)}, "
            f"truncation {_pct(trunc.rate)} ≤ {_pct(trunc.target)}; no tuning needed"
        ),
        reasons=[],
        actions=["keep collecting telemetry; re-run the analysis after the next drains"],
    )


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _assemble(options: AnalyzeOptions, scan: EventScan) -> AnalysisReport:
    decoded, counts, quantiles, sums = scan.cells, scan.counts, scan.quantiles, scan.sums
    warnings = list(scan.warnings)
    rows = sum(cell.rows for _, cell in decoded)
    success = sum(cell.rows for key, cell in decoded if key.success)
    clean_cells = [(k, c) for k, c in decoded if not k.truncated]
    truncated_cells = [(k, c) for k, c in decoded if k.truncated]
    n_truncated = sum(c.rows for _, c in truncated_cells)
    under = sum(cell.rows for key, cell in decoded if key.underestimated)
    tier1 = Tier1(
        population=ALL_ROWS,
        rows=rows,
        under_multiplier=options.under_multiplier,
        underestimation=_check(under, rows, UNDERESTIMATION_TARGET),
        truncation=_check(n_truncated, rows, TRUNCATION_TARGET),
        success=_check(success, rows, None),
    )
    waste = [
        WasteStats(
            metric=metric,
            definition=definition,
            population=WASTE_POPULATIONS[metric],
            n=counts[metric],
            mean=_mean(sums[metric], counts[metric]),
            median=quantiles.get((metric, MEDIAN)),
            p90=quantiles.get((metric, P90)),
            p90_guide=WASTE_P90_GUIDE if metric == "waste_predicted" else None,
        )
        for metric, definition in WASTE_DEFINITIONS.items()
    ]
    smape = SmapeStats(
        population=f"{NON_TRUNCATED} with actual > 0 and predicted > 0",
        n=counts["smape"],
        mean=_mean(sums["smape"], counts["smape"]),
        median=quantiles.get(("smape", MEDIAN)),
        min=scan.smape_min,
        max=scan.smape_max,
    )
    n_clean = sum(c.rows for _, c in clean_cells)
    non_truncated = TokenMeans(
        population=NON_TRUNCATED,
        rows=n_clean,
        predicted_mean=_mean(sum(c.predicted_sum for _, c in clean_cells), n_clean),
        actual_mean=_mean(sum(c.actual_sum for _, c in clean_cells), n_clean),
    )
    truncated_under = sum(c.rows for k, c in truncated_cells if k.underestimated)
    truncated = TruncatedStats(
        population=TRUNCATED_ROWS,
        rows=n_truncated,
        predicted_mean=_mean(sum(c.predicted_sum for _, c in truncated_cells), n_truncated),
        actual_mean=_mean(sum(c.actual_sum for _, c in truncated_cells), n_truncated),
        underestimated=truncated_under,
        underestimated_rate=_rate(truncated_under, n_truncated),
    )
    strata = None
    if options.stratify:
        strata = Strata(
            population=ALL_ROWS + "; SMAPE and waste over each stratum's non-truncated rows",
            note=DEFINITIONS["categories"],
            by_category=_strata(decoded, lambda k: k.category, REQUIRED_CATEGORIES),
            by_complexity=_strata(decoded, lambda k: k.complexity, COMPLEXITY_LEVELS),
            by_deliverable_bucket=_strata(decoded, lambda k: k.bucket, ("0", *REQUIRED_BUCKETS)),
        )
    clean_counts: dict[tuple[str, str, str], int] = {}
    for key, cell in decoded:
        if key.success and not key.truncated:
            cell_key = (key.category, key.complexity, key.bucket)
            clean_counts[cell_key] = clean_counts.get(cell_key, 0) + cell.rows
    coverage = assess_coverage(
        clean_counts,
        min_total=options.coverage_goal,
        categories=_required(options.categories, REQUIRED_CATEGORIES, normalize_category),
        complexities=_required(
            options.complexities, REQUIRED_COMPLEXITIES, lambda v: (v or "").strip().lower()
        ),
    )
    verdict = _verdict(tier1)
    if options.success_only and rows:
        warnings.append("--success-only: the success rate is 100 % by construction")
    if n_truncated:
        warnings.append(
            f"{n_truncated} truncated row(s) count as underestimated on their lower bound; they "
            "are left out of SMAPE and waste"
        )
    return AnalysisReport(
        generated_at=utc_now(),
        filters=Filters(
            success_only=options.success_only,
            run_ids=list(options.run_ids),
            categories=list(options.categories),
            complexities=list(options.complexities),
            since=options.since,
            until=options.until,
        ),
        under_multiplier=options.under_multiplier,
        table_rows=scan.table_rows,
        rows=rows,
        first_timestamp=scan.first_timestamp,
        last_timestamp=scan.last_timestamp,
        tier1=tier1,
        waste=waste,
        smape=smape,
        non_truncated=non_truncated,
        truncated=truncated,
        strata=strata,
        coverage=coverage,
        verdict=verdict,
        next_steps=_next_steps(options, verdict, coverage),
        definitions=dict(DEFINITIONS) | {k: v for k, v in WASTE_DEFINITIONS.items()},
        warnings=warnings,
    )


def _next_steps(options: AnalyzeOptions, verdict: Verdict, coverage: CoverageReport) -> list[str]:
    steps = list(verdict.actions) if verdict.status == "tuning_needed" else []
    if verdict.status != "no_samples" and not options.success_only:
        steps.append(
            "re-run with --success-only to judge the estimator on builder successes only "
            "(failed parses are not representative samples)"
        )
    if coverage.ready:
        steps.append(
            "coverage is enough to calibrate: propose coefficients from the clean samples "
            "(autopack calibrate propose)"
        )
    elif coverage.seed_cells or coverage.more_samples_needed:
        steps.append(f"before calibrating, collect more clean samples: {coverage.verdict}")
    if verdict.status == "no_samples":
        steps.extend(verdict.actions)
    return steps


def _required(
    given: Sequence[str], default: Sequence[str], normalise: Callable[[str | None], str]
) -> list[str]:
    """A filter narrows the coverage goal to what it selects (`--category tests` → tests)."""
    if not given:
        return list(default)
    chosen: list[str] = []
    for value in given:
        label = normalise(value)
        if label and label not in chosen:
            chosen.append(label)
    return chosen
