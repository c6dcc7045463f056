"""`autopack telemetry analyze`: figures checked by hand against the reference samples.

The reference CSV (read in place, never copied) holds 61 rows: the 60 `[TokenEstimationV2]`
log lines and the reconstructed v5 d3 row. Every row becomes one telemetry event in a seed DB;
the expected figures are recomputed here in plain Python from the CSV, independently of the
analyzer's SQL.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sqlite3
import statistics
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import Session

import autopack.telemetry.analysis_quantiles as quantiles_module
import autopack.telemetry.analysis_scan as scan_module
import autopack.telemetry.analyze as analyze_module
from autopack.db.engine import Database, OpenMode, open_database
from autopack.db.lifecycle import init_database
from autopack.db.models import Phase, Run, Tier, TokenEstimationV2Event, table_of
from autopack.errors import ConfigError, GuardError, SchemaError
from autopack.estimator import deliverable_count_bucket, normalize_category
from autopack.render.telemetry_analyze import write_markdown
from autopack.seed.model import create_seed_run
from autopack.settings import DatabaseTarget, build_target
from autopack.telemetry.analysis_quantiles import quantile_of_sorted
from autopack.telemetry.analyze import (
    AnalysisReport,
    AnalyzeOptions,
    analyze_telemetry,
    parse_time_bound,
)
from autopack.telemetry.coverage import assess_coverage
from tests.conftest import REFERENCE_DATA, CliRunner, build_original_db, reference_seed_spec

SAMPLES_CSV = REFERENCE_DATA / "token_estimation_v2_log_samples.csv"
HEADLINES = REFERENCE_DATA / "headline_figures.json"
V5 = "telemetry-collection-v5"
# The reconstructed d3 row has no log line and so no timestamp; it ran after d2's retry.
D3_TIMESTAMP = datetime(2025, 12, 29, 20, 20, 0)


# --------------------------------------------------------------------------------------------
# The reference samples, as plain Python


@dataclass(frozen=True)
class Sample:
    run_id: str
    phase_id: str
    timestamp: datetime
    category: str
    complexity: str
    deliverables: int
    predicted: int
    actual: int
    budget: int
    ceiling: int | None
    success: bool
    truncated: bool
    stop_reason: str | None
    model: str

    @property
    def clean(self) -> bool:
        return self.success and not self.truncated


def reference_samples() -> list[Sample]:
    with SAMPLES_CSV.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [
        Sample(
            run_id=row["run_id"] or row["dataset"],
            phase_id=row["phase_id"],
            timestamp=(
                datetime.fromisoformat(row["timestamp_local"])
                if row["timestamp_local"]
                else D3_TIMESTAMP
            ),
            category=row["category"],
            complexity=row["complexity"],
            deliverables=int(row["deliverable_count"]),
            predicted=int(row["predicted_output_tokens"]),
            actual=int(row["actual_output_tokens"]),
            budget=int(row["selected_budget"]),
            ceiling=int(row["max_tokens_sent"]) if row["max_tokens_sent"] else None,
            success=row["success"] == "True",
            truncated=row["truncated"] == "True",
            stop_reason=row["stop_reason"] or None,
            model=row["model"],
        )
        for row in rows
    ]


def load_samples(db: Database, samples: list[Sample]) -> None:
    """Insert placeholder runs/tiers/phases where missing, then one event per sample."""
    with Session(db.engine) as session:
        runs = {r for (r,) in session.execute(sa.select(table_of(Run).c.id))}
        phases = {
            (r, p)
            for r, p in session.execute(
                sa.select(table_of(Phase).c.run_id, table_of(Phase).c.phase_id)
            )
        }
        tiers: dict[str, int] = {}
        for sample in samples:
            if sample.run_id not in runs:
                session.add(Run(id=sample.run_id))
                session.flush()
                runs.add(sample.run_id)
            if (sample.run_id, sample.phase_id) in phases:
                continue
            if sample.run_id not in tiers:
                tier = Tier(tier_id="T1", run_id=sample.run_id, tier_index=0, name="placeholder")
                session.add(tier)
                session.flush()
                assert tier.id is not None
                tiers[sample.run_id] = tier.id
            session.add(
                Phase(
                    phase_id=sample.phase_id,
                    run_id=sample.run_id,
                    tier_id=tiers[sample.run_id],
                    phase_index=len(phases),
                    name=sample.phase_id,
                    task_category=sample.category,
                    complexity=sample.complexity,
                )
            )
            session.flush()
            phases.add((sample.run_id, sample.phase_id))
        session.execute(
            sa.insert(TokenEstimationV2Event),
            [event_for(sample).model_dump(exclude={"event_id"}) for sample in samples],
        )
        session.commit()


def event_for(sample: Sample) -> TokenEstimationV2Event:
    a, p = sample.actual, sample.predicted
    return TokenEstimationV2Event(
        run_id=sample.run_id,
        phase_id=sample.phase_id,
        timestamp=sample.timestamp,
        category=sample.category,
        complexity=sample.complexity,
        deliverable_count=sample.deliverables,
        deliverables_json="[]",
        predicted_output_tokens=p,
        actual_output_tokens=a,
        selected_budget=sample.budget,
        actual_max_tokens=sample.ceiling,
        success=sample.success,
        truncated=sample.truncated,
        is_truncated_output=sample.truncated,
        stop_reason=sample.stop_reason,
        model=sample.model,
        smape_percent=200 * abs(a - p) / (a + p),
        waste_ratio=p / a,
        underestimated=a > p,
    )


def smape(s: Sample) -> float:
    return 200 * abs(s.actual - s.predicted) / (s.actual + s.predicted)


def p90(values: list[float]) -> float:
    """The original analyzer's p90: statistics.quantiles (exclusive) from 10 values, else max."""
    return statistics.quantiles(values, n=10)[8] if len(values) >= 10 else max(values)


# --------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    return reference_samples()


def make_db(path: Path, samples: list[Sample]) -> DatabaseTarget:
    """A seed DB (role seed, the v4 seed run) holding `samples` as telemetry."""
    target = build_target(f"sqlite:///{path}", source="test", cwd=path.parent)
    init_database(target, "seed")
    with open_database(target, OpenMode.READ_WRITE) as db:
        create_seed_run(db.engine, reference_seed_spec("telemetry-collection-v4"))
        load_samples(db, samples)
    return target


@pytest.fixture(scope="module")
def reference_target(
    tmp_path_factory: pytest.TempPathFactory, samples: list[Sample]
) -> DatabaseTarget:
    """Built once: the 61 reference samples (tests open it read-only and never change it)."""
    return make_db(tmp_path_factory.mktemp("analyze") / "reference.db", samples)


@pytest.fixture
def read_only(reference_target: DatabaseTarget) -> Iterator[Database]:
    db = open_database(reference_target, OpenMode.READ_ONLY)
    yield db
    db.close()


@pytest.fixture
def loaded(seed_db: Database, samples: list[Sample]) -> Database:
    """A fresh seed DB in the work dir with the reference samples (for tests that change it)."""
    load_samples(seed_db, samples)
    return seed_db


def run(db: Database, **options: Any) -> AnalysisReport:
    return analyze_telemetry(db, AnalyzeOptions(**options))


def r(value: float | None, digits: int = 1) -> float:
    """A figure rounded as the reports print it (and known to be there)."""
    assert value is not None
    return round(value, digits)


def waste(report: AnalysisReport, metric: str) -> Any:
    return next(w for w in report.waste if w.metric == metric)


def non_truncated(samples: list[Sample]) -> list[Sample]:
    return [s for s in samples if not s.truncated]


# --------------------------------------------------------------------------------------------
# The 61 reference samples, checked by hand


def test_tier1_rates_are_counted_over_all_rows(read_only: Database, samples: list[Sample]) -> None:
    report = run(read_only)
    n = len(samples)
    assert report.rows == report.table_rows == n == 61
    under = sum(s.actual > s.predicted for s in samples)
    truncated = sum(s.truncated for s in samples)
    success = sum(s.success for s in samples)
    assert (under, truncated, success) == (21, 7, 38)  # the CSV's own flags agree
    tier1 = report.tier1
    assert (tier1.underestimation.count, tier1.underestimation.rows) == (under, n)
    assert tier1.underestimation.rate == pytest.approx(under / n)
    assert tier1.truncation.count == truncated
    assert tier1.truncation.rate == pytest.approx(truncated / n)
    assert tier1.success.count == success
    assert tier1.success.rate == pytest.approx(success / n)
    assert tier1.underestimation.target == 0.05
    assert tier1.underestimation.met is False
    assert tier1.truncation.target == 0.02
    assert tier1.truncation.met is False
    assert tier1.success.target is None
    assert tier1.success.met is None
    assert report.verdict.status == "tuning_needed"
    assert len(report.verdict.reasons) == 2
    assert len(report.verdict.actions) == 2
    assert report.first_timestamp == min(s.timestamp for s in samples)
    assert report.last_timestamp == max(s.timestamp for s in samples)


def test_smape_is_over_non_truncated_rows(read_only: Database, samples: list[Sample]) -> None:
    values = [smape(s) for s in non_truncated(samples)]
    report = run(read_only)
    assert report.smape.n == len(values) == 54
    assert report.smape.mean == pytest.approx(statistics.fmean(values))
    assert report.smape.median == pytest.approx(statistics.median(values))
    assert report.smape.min == pytest.approx(min(values))
    assert report.smape.max == pytest.approx(max(values))
    clean = non_truncated(samples)
    assert report.non_truncated.rows == len(clean)
    assert report.non_truncated.predicted_mean == pytest.approx(
        statistics.fmean(s.predicted for s in clean)
    )
    assert report.non_truncated.actual_mean == pytest.approx(
        statistics.fmean(s.actual for s in clean)
    )


@pytest.mark.parametrize(
    ("metric", "allowed"),
    [
        ("waste_predicted", lambda s: s.predicted),
        ("waste_selected_budget", lambda s: s.budget),
        ("waste_max_tokens", lambda s: s.ceiling),
    ],
)
def test_all_three_wastes_are_reported(
    read_only: Database, samples: list[Sample], metric: str, allowed: Callable[[Sample], int | None]
) -> None:
    values = [allowed(s) / s.actual for s in non_truncated(samples) if allowed(s)]  # type: ignore[operator]
    stats = waste(run(read_only), metric)
    assert stats.n == len(values)
    assert stats.mean == pytest.approx(statistics.fmean(values))
    assert stats.median == pytest.approx(statistics.median(values))
    assert stats.p90 == pytest.approx(p90(values))
    assert "non-truncated" in stats.population


def test_max_tokens_waste_skips_rows_without_a_recorded_ceiling(
    read_only: Database, samples: list[Sample]
) -> None:
    missing = [s for s in non_truncated(samples) if s.ceiling is None]
    assert len(missing) == 1  # the reconstructed v5 d3 row
    assert waste(run(read_only), "waste_max_tokens").n == len(non_truncated(samples)) - 1


def test_truncated_rows_are_reported_apart_as_lower_bounds(
    read_only: Database, samples: list[Sample]
) -> None:
    truncated = [s for s in samples if s.truncated]
    report = run(read_only)
    assert report.truncated.rows == len(truncated) == 7
    assert report.truncated.predicted_mean == pytest.approx(
        statistics.fmean(s.predicted for s in truncated)
    )
    assert report.truncated.actual_mean == pytest.approx(
        statistics.fmean(s.actual for s in truncated)
    )
    assert report.truncated.underestimated == sum(s.actual > s.predicted for s in truncated)
    assert "lower bound" in report.truncated.population
    assert any("lower bound" in w for w in report.warnings)


def test_v5_reproduces_the_recorded_headline_figures(read_only: Database) -> None:
    recorded = json.loads(HEADLINES.read_text())["v5_archive_20251229_222812"]["analysis"]
    report = run(read_only, run_ids=(V5,), success_only=True, stratify=True)
    assert report.rows == 25
    assert report.truncated.rows == 0
    assert r(report.smape.mean, 1) == recorded["smape_mean"] == 85.6
    assert r(report.smape.median, 1) == recorded["smape_median"] == 91.5
    assert r(report.smape.min, 1) == 11.7
    assert r(report.smape.max, 1) == 144.7
    predicted_waste = waste(report, "waste_predicted")
    assert r(predicted_waste.mean, 2) == recorded["waste_ratio_mean"] == 2.49
    # original_spec.md §12.3: median 2.64×, p90 4.04× (the original's exclusive quantile).
    assert r(predicted_waste.median, 2) == 2.64
    assert r(predicted_waste.p90, 2) == 4.04
    assert report.tier1.underestimation.count == 4  # "4/25 (16.0%)"
    assert report.tier1.underestimation.rate == pytest.approx(0.16)
    assert r(report.non_truncated.predicted_mean, 0) == recorded["avg_predicted"]
    assert r(report.non_truncated.actual_mean, 0) == recorded["avg_actual"]
    assert report.strata is not None
    by_category = {s.value: s for s in report.strata.by_category}
    for name, expected in recorded["by_category"].items():
        stratum = by_category[name]
        assert stratum.rows == expected["n"]
        assert stratum.underestimated == expected["under"]
        assert r(stratum.smape_mean, 1) == expected["smape"]
        assert r(stratum.waste_mean, 2) == pytest.approx(expected["waste"])
    by_complexity = {s.value: s for s in report.strata.by_complexity}
    for name, expected in recorded["by_complexity"].items():
        assert by_complexity[name].rows == expected["n"]
        assert by_complexity[name].underestimated == expected["under"]
        assert r(by_complexity[name].smape_mean, 1) == expected["smape"]


def test_stratification_normalises_categories(read_only: Database, samples: list[Sample]) -> None:
    report = run(read_only, stratify=True)
    assert report.strata is not None
    expected = Counter(normalize_category(s.category) for s in samples)
    got = {s.value: s.rows for s in report.strata.by_category}
    assert got == dict(expected)
    assert got["docs"] == 9  # 7 docs + 2 documentation
    assert got["implementation"] == 40  # 34 implementation + 6 IMPLEMENT_FEATURE
    assert "documentation" not in got
    assert "IMPLEMENT_FEATURE" not in got
    assert "tests = testing" in report.strata.note
    docs = next(s for s in report.strata.by_category if s.value == "docs")
    members = [s for s in samples if normalize_category(s.category) == "docs"]
    assert docs.underestimated == sum(s.actual > s.predicted for s in members)
    assert docs.truncated == sum(s.truncated for s in members)
    assert docs.success_rate == pytest.approx(sum(s.success for s in members) / len(members))
    assert docs.smape_mean == pytest.approx(
        statistics.fmean(smape(s) for s in non_truncated(members))
    )
    buckets = {s.value: s.rows for s in report.strata.by_deliverable_bucket}
    assert buckets == dict(Counter(deliverable_count_bucket(s.deliverables) for s in samples))
    assert list(buckets) == ["0", "1", "2-5"]
    assert [s.value for s in report.strata.by_complexity] == ["low", "medium", "high"]


def test_strata_are_left_out_without_stratify(read_only: Database) -> None:
    assert run(read_only).strata is None


def test_under_multiplier_moves_the_threshold(read_only: Database, samples: list[Sample]) -> None:
    report = run(read_only, under_multiplier=1.5)
    assert report.tier1.underestimation.count == sum(s.actual > s.predicted * 1.5 for s in samples)
    assert report.tier1.under_multiplier == 1.5
    assert report.tier1.underestimation.count < run(read_only).tier1.underestimation.count


def test_coverage_counts_clean_cells_and_names_the_gaps(read_only: Database) -> None:
    coverage = run(read_only, run_ids=(V5,)).coverage
    assert coverage.total == 25
    assert coverage.by_category == {"implementation": 15, "tests": 7, "docs": 3}
    assert coverage.by_complexity == {"low": 15, "medium": 10}
    assert coverage.by_deliverable_bucket == {"1": 24, "2-5": 1}
    assert [(g.dimension, g.value) for g in coverage.gaps] == [("complexity", "high")]
    assert coverage.seed_cells == ["implementation/high/1"]
    assert coverage.more_samples_needed == 0
    assert coverage.ready is False
    assert coverage.verdict.startswith("not yet: seed these cells: implementation/high/1")
    cells = {c.label: c.samples for c in coverage.cells}
    assert cells["implementation/low/1"] == 8
    assert cells["implementation/medium/2-5"] == 1
    assert cells["docs/high/2-5"] == 0
    assert "docs/high/6+" not in cells  # 6+ is reported when present, not required
    assert len([c for c in coverage.cells if c.required]) == 18


def test_coverage_uses_only_successful_untruncated_rows(
    read_only: Database, samples: list[Sample]
) -> None:
    coverage = run(read_only).coverage
    assert coverage.total == sum(s.clean for s in samples) == 38
    expected = Counter(
        (normalize_category(s.category), s.complexity, deliverable_count_bucket(s.deliverables))
        for s in samples
        if s.clean
    )
    got = {(c.category, c.complexity, c.deliverable_bucket): c.samples for c in coverage.cells}
    assert {k: v for k, v in got.items() if v} == dict(expected)
    assert not any(c.required for c in coverage.cells if c.category == "configuration")


# --------------------------------------------------------------------------------------------
# Coverage rules


def full_grid(samples: int) -> dict[tuple[str, str, str], int]:
    return {
        (c, x, b): samples
        for c in ("implementation", "tests", "docs")
        for x in ("low", "medium", "high")
        for b in ("1", "2-5")
    }


def test_coverage_is_ready_when_every_value_is_represented_and_the_total_met() -> None:
    counts = {
        ("implementation", "low", "1"): 18,
        ("tests", "medium", "2-5"): 1,
        ("docs", "high", "6+"): 1,
    }
    report = assess_coverage(counts)
    assert report.ready
    assert report.gaps == []
    assert report.seed_cells == []
    assert report.verdict.startswith("ready to calibrate: 20 clean samples")
    report = assess_coverage({**counts, ("implementation", "low", "1"): 17})
    assert not report.ready
    assert report.more_samples_needed == 1
    assert report.verdict == "not yet: 1 more clean sample (19 of the goal's 20)"


def test_coverage_pairs_missing_values_into_few_cells() -> None:
    counts = {("implementation", "low", "1"): 30, ("implementation", "medium", "2-5"): 2}
    report = assess_coverage(counts)
    assert [(g.dimension, g.value) for g in report.gaps] == [
        ("category", "tests"),
        ("category", "docs"),
        ("complexity", "high"),
    ]
    # Two cells close all three gaps; they borrow the best-covered complexity and bucket.
    assert report.seed_cells == ["tests/high/1", "docs/low/1"]
    assert "category tests" in report.verdict
    assert "complexity high" in report.verdict


def test_coverage_of_nothing_lists_every_value() -> None:
    report = assess_coverage({}, min_total=20)
    assert report.total == 0
    assert report.more_samples_needed == 20
    assert len(report.gaps) == 8
    assert report.seed_cells == ["implementation/low/1", "tests/medium/2-5", "docs/high/1"]
    assert all(c.samples == 0 for c in report.cells)


def test_coverage_keeps_cells_outside_the_goal_but_does_not_require_them() -> None:
    counts = full_grid(1) | {("configuration", "low", "0"): 4}
    report = assess_coverage(counts)
    assert report.ready
    assert report.total == 22
    extra = [c for c in report.cells if not c.required]
    assert [(c.label, c.samples) for c in extra] == [("configuration/low/0", 4)]
    assert report.cells[-1].category == "configuration"
    with_six = assess_coverage(counts | {("docs", "high", "6+"): 2})
    assert ("docs/high/6+", 2, False) in [(c.label, c.samples, c.required) for c in with_six.cells]
    assert with_six.by_deliverable_bucket["6+"] == 2


# --------------------------------------------------------------------------------------------
# Filters


def test_category_filter_matches_after_normalisation(
    read_only: Database, samples: list[Sample]
) -> None:
    by_alias = run(read_only, categories=("documentation",))
    by_name = run(read_only, categories=("docs",))
    assert by_alias.rows == by_name.rows == 9
    assert by_alias.coverage.required_categories == ["docs"]
    assert run(read_only, categories=("Testing",)).rows == 7


def test_unknown_category_gives_no_samples_and_a_warning(read_only: Database) -> None:
    report = run(read_only, categories=("tset",))
    assert report.rows == 0
    assert report.verdict.status == "no_samples"
    assert any("no telemetry row has category 'tset'" in w for w in report.warnings)
    assert report.smape.n == 0
    assert report.smape.mean is None
    assert report.smape.median is None
    assert all(w.median is None and w.p90 is None for w in report.waste)
    assert report.tier1.underestimation.rate is None
    assert report.tier1.underestimation.met is None


def test_complexity_run_and_success_filters(read_only: Database, samples: list[Sample]) -> None:
    assert run(read_only, complexities=("HIGH",)).rows == sum(
        s.complexity == "high" for s in samples
    )
    assert run(read_only, complexities=("low", "high")).rows == 38
    v4 = run(read_only, run_ids=("telemetry-collection-v4",))
    assert v4.rows == 6
    in_v4 = [s.timestamp for s in samples if s.run_id == "telemetry-collection-v4"]
    assert (v4.first_timestamp, v4.last_timestamp) == (min(in_v4), max(in_v4))
    both = run(read_only, run_ids=("telemetry-collection-v4", V5))
    assert both.rows == 32
    success = run(read_only, success_only=True)
    assert success.rows == 38
    assert success.tier1.success.rate == 1.0
    assert any("100 % by construction" in w for w in success.warnings)


def test_since_is_inclusive_and_until_exclusive(read_only: Database, samples: list[Sample]) -> None:
    start = datetime(2025, 12, 29, 19, 40, 2)  # exactly the first v5 row
    end = datetime(2025, 12, 29, 19, 46, 4)  # exactly the sixth v5 row: excluded
    report = run(read_only, since=start, until=end)
    assert report.rows == sum(start <= s.timestamp < end for s in samples) == 5
    day = run(
        read_only,
        since=parse_time_bound("2025-12-23", "--since"),
        until=parse_time_bound("2025-12-24", "--until"),
    )
    assert day.rows == sum(s.timestamp.date().isoformat() == "2025-12-23" for s in samples) == 21


def test_time_bounds_match_rows_stored_without_microseconds(read_only: Database) -> None:
    """The original wrote '2025-12-29 19:40:02' (no fraction); a bound on that second still
    includes it with --since and excludes it with --until."""
    with read_only.engine.connect() as connection:
        stored = connection.execute(
            sa.text("SELECT timestamp FROM token_estimation_v2_events ORDER BY timestamp LIMIT 1")
        ).scalar_one()
    first = datetime.fromisoformat(stored)
    with (
        open_database(read_only.target, OpenMode.READ_WRITE) as db,
        db.engine.begin() as connection,
    ):
        connection.execute(
            sa.text("UPDATE token_estimation_v2_events SET timestamp = :t WHERE timestamp = :s"),
            {"t": first.isoformat(sep=" "), "s": stored},
        )
    assert run(read_only, since=first, until=datetime(2025, 12, 23, 19, 48)).rows == 1
    assert run(read_only, since=datetime(2025, 12, 1), until=first).rows == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-12-29", datetime(2025, 12, 29)),
        ("2025-12-29T14:00", datetime(2025, 12, 29, 14, 0)),
        ("2025-12-29 14:00:05.5", datetime(2025, 12, 29, 14, 0, 5, 500000)),
        ("2025-12-29T14:00:00Z", datetime(2025, 12, 29, 14, 0)),
        ("2025-12-29T16:00:00+02:00", datetime(2025, 12, 29, 14, 0)),
    ],
)
def test_time_bounds_are_naive_utc(text: str, expected: datetime) -> None:
    assert parse_time_bound(text, "--since") == expected


def test_bad_options_are_refused() -> None:
    with pytest.raises(ConfigError, match="not an ISO 8601"):
        parse_time_bound("yesterday", "--since")
    with pytest.raises(ConfigError, match="must be a positive number"):
        AnalyzeOptions(under_multiplier=0)
    with pytest.raises(ConfigError, match="must be a positive number"):
        AnalyzeOptions(under_multiplier=math.nan)
    with pytest.raises(ConfigError, match="unknown complexity 'hgih'"):
        AnalyzeOptions(complexities=("hgih",))
    with pytest.raises(ConfigError, match="is not before"):
        AnalyzeOptions(since=datetime(2025, 12, 30), until=datetime(2025, 12, 29))
    with pytest.raises(ConfigError, match="at least 1"):
        AnalyzeOptions(coverage_goal=0)


# --------------------------------------------------------------------------------------------
# Quantiles and the big-table path


def test_median_and_p90_definitions() -> None:
    assert quantile_of_sorted([1.0, 2.0, 3.0, 4.0], Fraction(1, 2)) == 2.5
    assert quantile_of_sorted([1.0, 2.0, 3.0], Fraction(1, 2)) == 2.0
    assert quantile_of_sorted([5.0], Fraction(9, 10)) == 5.0
    assert quantile_of_sorted([], Fraction(1, 2)) is None
    nine = [float(i) for i in range(1, 10)]
    assert quantile_of_sorted(nine, Fraction(9, 10)) == 9.0  # fewer than 10 values: the max
    ten = [float(i) for i in range(1, 11)]
    assert quantile_of_sorted(ten, Fraction(9, 10)) == pytest.approx(9.9)
    for n in range(1, 40):
        values = sorted((i * 7919 % 101) / 7 for i in range(n))
        assert quantile_of_sorted(values, Fraction(1, 2)) == statistics.median(values)
        assert quantile_of_sorted(values, Fraction(9, 10)) == pytest.approx(p90(values))


def test_deliverable_clip_keeps_buckets_intact() -> None:
    clip = scan_module.DELIVERABLE_CLIP
    assert {deliverable_count_bucket(n) for n in range(clip, 500)} == {
        deliverable_count_bucket(clip)
    }
    assert deliverable_count_bucket(clip - 1) != deliverable_count_bucket(clip)


def synthetic_samples(n: int) -> list[Sample]:
    """Deterministic, varied rows: ties, truncations, failures, missing ceilings."""
    out: list[Sample] = []
    for i in range(n):
        predicted = 400 + (i * 7919) % 9000
        actual = 50 + (i * 104729) % 16000
        truncated = i % 23 == 0
        out.append(
            Sample(
                run_id="telemetry-collection-v4",
                phase_id="telemetry-p1-string-util",
                timestamp=datetime(2025, 12, 1)
                + (datetime(2025, 12, 2) - datetime(2025, 12, 1)) * (i / n),
                category=("implementation", "tests", "testing", "docs", "documentation")[i % 5],
                complexity=("low", "medium", "high")[i % 3],
                deliverables=i % 9,
                predicted=predicted,
                actual=16384 if truncated else actual,
                budget=(0, 8192, 12288)[i % 3],
                ceiling=None if i % 11 == 0 else 16384,
                success=i % 4 != 0,
                truncated=truncated,
                stop_reason="max_tokens" if truncated else "end_turn",
                model="claude-sonnet-4-5",
            )
        )
    return out


def figures(report: AnalysisReport) -> dict[str, Any]:
    doc = report.model_dump(mode="json")
    for key in ("generated_at",):
        doc.pop(key)
    return doc


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    target = make_db(tmp_path_factory.mktemp("synthetic") / "synthetic.db", synthetic_samples(3000))
    db = open_database(target, OpenMode.READ_ONLY)
    yield db
    db.close()


def test_sampled_brackets_give_the_exact_figures_in_one_scan(
    synthetic: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    direct = run(synthetic, stratify=True)
    values = sorted(smape(s) for s in non_truncated(synthetic_samples(3000)))
    assert direct.smape.median == pytest.approx(statistics.median(values))
    monkeypatch.setattr(scan_module, "DIRECT_LIMIT", 10)
    monkeypatch.setattr(scan_module, "SAMPLE_SIZE", 600)
    monkeypatch.setattr(quantiles_module, "MIN_BRACKET_SAMPLE", 50)
    scans: list[bool] = []
    bounded: list[Any] = []
    real_scan, real_brackets = scan_module._grouped_scan, quantiles_module.place_brackets

    def spy_scan(connection: sa.Connection, *args: Any) -> Any:
        # sqlite3 itself is inside a transaction: the scan reads the sample's snapshot.
        scans.append(connection.connection.dbapi_connection.in_transaction)  # type: ignore[union-attr]
        return real_scan(connection, *args)

    def spy_brackets(sampled_values: Any) -> Any:
        made = real_brackets(sampled_values)
        bounded.extend(b for b in made if b.lo is not None and b.hi is not None)
        return made

    monkeypatch.setattr(scan_module, "_grouped_scan", spy_scan)
    monkeypatch.setattr(scan_module, "place_brackets", spy_brackets)
    sampled = run(synthetic, stratify=True)
    assert scans == [True]  # one GROUP BY over the whole table, in the scan's transaction
    assert len(bounded) == 7  # every quantile was found through a real bracket
    assert _close(figures(sampled), figures(direct))


def test_a_missed_bracket_falls_back_to_the_exact_column(
    synthetic: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    direct = run(synthetic)
    monkeypatch.setattr(scan_module, "DIRECT_LIMIT", 10)
    monkeypatch.setattr(scan_module, "SAMPLE_SIZE", 600)
    monkeypatch.setattr(quantiles_module, "MIN_BRACKET_SAMPLE", 50)
    # Brackets nowhere near the quantiles: every one misses.
    monkeypatch.setattr(
        scan_module, "place_brackets", _narrow_brackets(quantiles_module.place_brackets)
    )
    fallbacks: list[str] = []
    real = scan_module._all_values

    def counting(connection: sa.Connection, plan: Any, metric: str) -> list[float]:
        fallbacks.append(metric)
        return real(connection, plan, metric)  # type: ignore[arg-type]

    monkeypatch.setattr(scan_module, "_all_values", counting)
    sampled = run(synthetic)
    assert fallbacks  # the fallback ran …
    assert _close(figures(sampled), figures(direct))  # … and the figures are still exact


def _narrow_brackets(real: Callable[..., Any]) -> Callable[..., Any]:
    def narrow(sampled: Any) -> Any:
        brackets = real(sampled)
        return [quantiles_module.Bracket(b.metric, b.quantile, 0.5, 0.5000001) for b in brackets]

    return narrow


def _close(first: Any, second: Any) -> bool:
    if isinstance(first, dict) and isinstance(second, dict):
        return first.keys() == second.keys() and all(_close(first[k], second[k]) for k in first)
    if isinstance(first, list) and isinstance(second, list):
        return len(first) == len(second) and all(
            _close(a, b) for a, b in zip(first, second, strict=False)
        )
    if isinstance(first, float) and isinstance(second, float):
        return math.isclose(first, second, rel_tol=1e-9, abs_tol=1e-12)
    return bool(first == second)


# --------------------------------------------------------------------------------------------
# Databases that are not what the command expects


def test_original_db_is_analysed_as_it_is(original_db: tuple[Path, dict[str, int]]) -> None:
    path, counts = original_db
    target = build_target(f"sqlite:///{path}", source="test", cwd=path.parent)
    with open_database(target, OpenMode.READ_ONLY) as db:
        report = run(db, stratify=True)
    assert report.rows == counts["token_estimation_v2_events"] == 4
    assert report.truncated.rows == 1
    assert report.tier1.success.count == 3
    assert waste(report, "waste_predicted").median == pytest.approx(2.5)


def test_a_db_without_actual_max_tokens_still_analyses(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    build_original_db(path)
    with sqlite3.connect(path) as connection:
        connection.execute("ALTER TABLE token_estimation_v2_events DROP COLUMN actual_max_tokens")
    target = build_target(f"sqlite:///{path}", source="test", cwd=tmp_path)
    with open_database(target, OpenMode.READ_ONLY) as db:
        report = run(db)
    assert report.rows == 4
    assert waste(report, "waste_max_tokens").n == 0
    assert waste(report, "waste_max_tokens").median is None
    assert any("no actual_max_tokens column" in w for w in report.warnings)


def test_missing_telemetry_table_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "alembic_made.db"
    build_original_db(path, with_telemetry_tables=False)
    target = build_target(f"sqlite:///{path}", source="test", cwd=tmp_path)
    with open_database(target, OpenMode.READ_ONLY) as db, pytest.raises(SchemaError) as caught:
        run(db)
    assert "no telemetry table" in caught.value.message
    assert caught.value.exit_code == 2


def test_empty_db_is_refused_unless_allowed(tmp_path: Path) -> None:
    target = build_target(f"sqlite:///{tmp_path / 'empty.db'}", source="test", cwd=tmp_path)
    init_database(target, "seed")
    with open_database(target, OpenMode.READ_ONLY) as db:
        with pytest.raises(GuardError):
            run(db)
        report = run(db, allow_empty_db=True, stratify=True)
    assert report.rows == 0
    assert report.table_rows == 0
    assert report.verdict.status == "no_samples"
    assert report.strata is not None
    assert report.strata.by_category == []
    assert report.coverage.total == 0
    assert not report.coverage.ready


# --------------------------------------------------------------------------------------------
# The command (the lead registers it as `autopack telemetry analyze`)


def url_of(target: DatabaseTarget) -> str:
    return f"sqlite:///{target.sqlite_path}"


def test_json_document(cli: CliRunner, reference_target: DatabaseTarget) -> None:
    result = cli(
        "telemetry", "analyze", "--database-url", url_of(reference_target), "--json", "--stratify"
    )
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["target"]["path"] == str(reference_target.sqlite_path)
    assert doc["target"]["read_only"] is True
    assert {
        "filters",
        "tier1",
        "waste",
        "smape",
        "non_truncated",
        "truncated",
        "strata",
        "coverage",
        "verdict",
        "next_steps",
        "definitions",
        "warnings",
        "rows",
        "table_rows",
    } <= doc.keys()
    assert doc["rows"] == 61
    assert doc["output"] is None
    assert doc["tier1"]["underestimation"] == {
        "count": 21,
        "rows": 61,
        "rate": pytest.approx(21 / 61),
        "target": 0.05,
        "met": False,
    }
    assert [w["metric"] for w in doc["waste"]] == [
        "waste_predicted",
        "waste_selected_budget",
        "waste_max_tokens",
    ]
    assert doc["verdict"]["status"] == "tuning_needed"
    assert doc["strata"]["by_category"][0]["value"] == "implementation"
    # All 61 rows: 38 clean, and every category, complexity and bucket has one.
    assert doc["coverage"]["ready"] is True
    assert doc["coverage"]["verdict"].startswith("ready to calibrate: 38 clean samples")
    assert "mean of the two middle values" in doc["definitions"]["median"]
    assert "panel" not in result.stderr
    assert "target database" not in result.stderr


def test_the_report_goes_to_stdout(cli: CliRunner, reference_target: DatabaseTarget) -> None:
    result = cli(
        "telemetry", "analyze", "--database-url", url_of(reference_target),
        "--run-id", V5, "--success-only", "--stratify",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "target database" in result.stderr  # the panel, before acting
    assert "Tier 1" not in result.stderr
    assert "warning: --success-only" in result.stderr  # warnings stay on stderr
    err = result.stdout
    assert "Tier 1" in err
    assert "❌ missed" in err
    assert "✅ met" in err
    assert "16.0%" in err
    assert "85.6%" in err
    assert "91.5%" in err
    assert "4.04×" in err
    assert "tuning needed: underestimation 16.0% > 5.0%" in err
    assert "stratified by category" in err
    assert "tests = testing" in err
    assert "not yet: seed these cells: implementation/high/1" in err


def test_check_exits_1_only_when_a_target_is_missed(
    cli: CliRunner, reference_target: DatabaseTarget
) -> None:
    url = url_of(reference_target)
    assert cli("telemetry", "analyze", "--database-url", url, "-q").exit_code == 0
    assert cli("telemetry", "analyze", "--database-url", url, "-q", "--check").exit_code == 1
    passing = ("--run-id", "telemetry-collection-v4", "--success-only")
    result = cli("telemetry", "analyze", "--database-url", url, *passing, "--check")
    assert result.exit_code == 0, result.stderr
    assert "within targets" in result.stdout


def test_no_samples_is_a_report_not_an_error(
    cli: CliRunner, reference_target: DatabaseTarget
) -> None:
    url = url_of(reference_target)
    result = cli("telemetry", "analyze", "--database-url", url, "--category", "tset")
    assert result.exit_code == 0, result.stderr
    assert "no samples" in result.stdout
    assert "no telemetry row has category 'tset'" in result.stderr  # a warning
    checked = cli(
        "telemetry", "analyze", "--database-url", url, "--category", "tset", "--check", "--json"
    )
    assert checked.exit_code == 1
    assert json.loads(checked.stdout)["verdict"]["status"] == "no_samples"


def test_output_writes_a_markdown_report(
    cli: CliRunner, reference_target: DatabaseTarget, workdir: Path
) -> None:
    result = cli(
        "telemetry", "analyze", "--database-url", url_of(reference_target),
        "--run-id", V5, "--success-only", "--stratify", "--output", "report.md",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert f"report written to {workdir / 'report.md'}" in result.stdout
    text = (workdir / "report.md").read_text()
    assert text.startswith("# Token-estimation telemetry analysis\n")
    for heading in (
        "## Verdict",
        "## Tier 1",
        "## Tier 2",
        "## Accuracy (SMAPE)",
        "### Truncated",
        "## Stratified",
        "## Coverage",
        "## Next steps",
        "## Definitions",
    ):
        assert heading in text, heading
    assert "| underestimation | 4 / 25 | 16.0% | ≤ 5.0% | ❌ missed |" in text
    assert "| truncation | 0 / 25 | 0.0% | ≤ 2.0% | ✅ met |" in text
    assert "| predicted / actual |" in text
    assert "| 2.64× | 4.04× | 2.49× |" in text
    assert "| 25 | 85.6% | 91.5% | 11.7% | 144.7% | 5,054 | 2,854 |" in text
    assert "normalize_category (tests = testing" in text
    assert "**not yet: seed these cells: implementation/high/1" in text
    assert str(reference_target.sqlite_path) in text
    assert not list(workdir.glob(".report.md.*"))  # no temporary left behind
    again = cli(
        "telemetry",
        "analyze",
        "--database-url",
        url_of(reference_target),
        "-q",
        "-o",
        "report.md",
        "--json",
    )
    assert again.exit_code == 0
    assert json.loads(again.stdout)["output"] == str(workdir / "report.md")
    assert "| underestimation | 21 / 61 |" in (workdir / "report.md").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--since", "yesterday"), "--since 'yesterday' is not an ISO 8601 date"),
        (("--until", "2025-13-01"), "--until '2025-13-01' is not an ISO 8601 date"),
        (("--since", "2025-12-30", "--until", "2025-12-29"), "is not before --until"),
        (("--under-multiplier", "0"), "--under-multiplier 0.0 must be a positive number"),
        (("--complexity", "hgih"), "unknown complexity 'hgih'"),
        (("--coverage-goal", "0"), "--coverage-goal 0 must be at least 1"),
        (("--output", "no/such/dir/report.md"), "does not exist"),
        (("--output", "."), "is a directory"),
    ],
)
def test_bad_input_is_refused_with_a_hint(
    cli: CliRunner, reference_target: DatabaseTarget, args: tuple[str, ...], message: str
) -> None:
    result = cli("telemetry", "analyze", "--database-url", url_of(reference_target), *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "hint:" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_output_may_not_overwrite_the_database(cli: CliRunner, loaded: Database) -> None:
    path = loaded.target.sqlite_path
    assert path is not None
    before = path.read_bytes()
    result = cli("telemetry", "analyze", "--db", "seed", "--output", str(path))
    assert result.exit_code == 2
    assert "is the database being analysed" in result.stderr
    assert path.read_bytes() == before


def test_empty_db_guard_and_its_override(cli: CliRunner) -> None:
    assert cli("db", "init", "--db", "seed").exit_code == 0
    refused = cli("telemetry", "analyze", "--db", "seed")
    assert refused.exit_code == 2
    assert "is empty (0 runs, 0 phases)" in refused.stderr
    assert "--allow-empty-db" in refused.stderr
    allowed = cli("telemetry", "analyze", "--db", "seed", "--allow-empty-db", "--json")
    assert allowed.exit_code == 0, allowed.stderr
    assert json.loads(allowed.stdout)["verdict"]["status"] == "no_samples"


def test_missing_tables_and_missing_files_exit_2(cli: CliRunner, workdir: Path) -> None:
    build_original_db(workdir / "autopack_legacy.db", with_telemetry_tables=False)
    result = cli("telemetry", "analyze", "--db", "legacy")
    assert result.exit_code == 2
    assert "has no telemetry table (token_estimation_v2_events)" in result.stderr
    assert "autopack db upgrade" in result.stderr
    missing = cli("telemetry", "analyze", "--database-url", "sqlite:///nope.db")
    assert missing.exit_code == 2
    assert "no database file" in missing.stderr
    assert not (workdir / "nope.db").exists()


def test_analysis_never_changes_the_database(cli: CliRunner, loaded: Database) -> None:
    path = loaded.target.sqlite_path
    assert path is not None
    loaded.close()
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    result = cli("telemetry", "analyze", "--db", "seed", "--stratify", "-q", "-o", "r.md")
    assert result.exit_code == 0, result.stderr
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


# --------------------------------------------------------------------------------------------
# PostgreSQL: the same figures


@pytest.mark.postgres
def test_postgres_gives_the_sqlite_figures(
    postgres_url: str,
    workdir: Path,
    read_only: Database,
    samples: list[Sample],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    target = build_target(postgres_url, source="test", cwd=workdir)
    init_database(target, "seed")
    with open_database(target, OpenMode.READ_WRITE) as db:
        create_seed_run(db.engine, reference_seed_spec("telemetry-collection-v4"))
        load_samples(db, samples)
    expected = figures(run(read_only, stratify=True))
    with open_database(target, OpenMode.READ_ONLY) as db:
        assert _close(figures(run(db, stratify=True)), expected)
        v5 = run(db, run_ids=(V5,), success_only=True, since=datetime(2025, 12, 29))
        assert v5.rows == 25
        assert r(v5.smape.median) == 91.5
        # The sampled, bracketed path (count packing, json_agg) on PostgreSQL too.
        monkeypatch.setattr(scan_module, "DIRECT_LIMIT", 10)
        monkeypatch.setattr(scan_module, "SAMPLE_SIZE", 40)
        monkeypatch.setattr(quantiles_module, "MIN_BRACKET_SAMPLE", 5)
        monkeypatch.setattr(quantiles_module, "BRACKET_SIGMAS", 1.0)
        assert _close(figures(run(db, stratify=True)), expected)


def test_python_and_sql_compute_bit_identical_metrics(read_only: Database) -> None:
    """Bracket values are recomputed in Python from integers; they must equal what the
    database compared against the bracket bounds, bit for bit."""
    pairs = [(p, a) for p in (1, 7, 462, 5200, 7014) for a in (50, 123, 1218, 16205, 3)]
    for p, a in pairs:
        smape_value, waste_value, by_budget, _ = scan_module._row_metrics(p, a, 8192, None)
        assert scan_module._pair_values("smape", [(p, a)]) == [smape_value]
        assert scan_module._pair_values("waste_predicted", [(p, a)]) == [waste_value]
        assert scan_module._pair_values("waste_selected_budget", [(8192, a)]) == [by_budget]
    with read_only.engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT predicted_output_tokens, actual_output_tokens, "
                "200.0 * abs(actual_output_tokens * 1.0 - predicted_output_tokens * 1.0) "
                "/ (actual_output_tokens * 1.0 + predicted_output_tokens * 1.0), "
                "predicted_output_tokens * 1.0 / actual_output_tokens "
                "FROM token_estimation_v2_events"
            )
        ).all()
    for p, a, smape_sql, waste_sql in rows:
        assert scan_module._pair_values("smape", [(p, a)]) == [smape_sql]
        assert scan_module._pair_values("waste_predicted", [(p, a)]) == [waste_sql]


def test_output_is_checked_before_the_analysis_runs(
    cli: CliRunner, reference_target: DatabaseTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the analysis ran before --output was checked")

    # The command imports it when it runs: replacing it in its module reaches the command.
    monkeypatch.setattr(analyze_module, "analyze_telemetry", never)
    result = cli(
        "telemetry", "analyze", "--database-url", url_of(reference_target), "-o", "no/x.md"
    )
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


def test_a_failed_write_leaves_nothing_behind(
    read_only: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = run(read_only)

    def full_disk(source: object, destination: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)  # the last step of the atomic write
    with pytest.raises(ConfigError, match="No space left on device"):
        write_markdown(report, tmp_path / "report.md")
    assert list(tmp_path.iterdir()) == []
