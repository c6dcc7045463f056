"""The proposal document (`estimator_calibration_proposal_<stamp>.json`) as typed models.

Every number in it is finite: `document_text` refuses NaN and infinity (a degenerate input must give
a clear refusal or a sensible figure, never a JSON that other tools cannot read).
"""

from __future__ import annotations

import json
from typing import Any, Final, Literal

from pydantic import BaseModel, PrivateAttr

from autopack.calibrate.backtest import BacktestResult
from autopack.calibrate.charts import ChartData
from autopack.calibrate.size_term import SizeTermBacktest

PROPOSAL_FORMAT: Final = "autopack-estimator-calibration-proposal"
PROPOSAL_FORMAT_VERSION: Final = 1


class BudgetParams(BaseModel):
    base: int
    buffer: float


class GroupEvidence(BaseModel):
    """One (category, complexity) group: the evidence, the current and proposed numbers."""

    category: str
    complexity: str
    n: int
    """Clean rows (point estimates)."""
    censored: int
    """Truncated rows (budgets only)."""
    ratio_median: float | None
    """Median of actual / current prediction over the group's clean rows."""
    ratio_p25: float | None
    ratio_p75: float | None
    rule: Literal["own", "pooled", "unchanged"]
    category_ratio_median: float | None
    current_scale: float
    proposed_scale: float
    step: float
    """proposed_scale / current_scale: the multiplier on today's estimate."""
    step_interval: tuple[float, float] | None
    """95 % bootstrap interval of the step (resampling the evidence)."""
    move_percent: float
    max_deliverables: int
    """The step applies to phases of the group with 1 to this many deliverables."""
    current_budget: BudgetParams
    proposed_budget: BudgetParams
    budget_rule: Literal["fitted", "compensated", "unchanged"]
    """fitted: chosen by the budget rule; compensated: the buffer divided by the step so the
    group's budgets stay as today; unchanged: as today."""


class SampleSummary(BaseModel):
    model: str
    models: dict[str, int]
    clean: int
    censored: int
    runs: int
    without_paths: int
    """Clean rows without deliverable paths, costed as generic new files of their count."""
    excluded_without_deliverables: int
    actual_rounded: bool
    """Actual outputs were read rounded to 3 significant digits (more than 200,000 rows)."""
    include_simulated: bool
    require_phase_complete: bool
    run_ids: list[str]


class Method(BaseModel):
    min_samples: int
    min_group_samples: int
    damping: float
    damping_candidates: list[float]
    smape_by_damping: dict[str, float]
    step_bounds: tuple[float, float]
    truncation_target: float
    censored_need: float
    headroom: float
    split: str
    folds: int
    shrinkage_rule: str
    budget_rule: str


class Proposal(BaseModel):
    format: str = PROPOSAL_FORMAT
    format_version: int = PROPOSAL_FORMAT_VERSION
    estimator_version: str
    coefficients_format_version: int
    generated_at: str
    target: dict[str, Any]
    base_set: dict[str, str]
    """The set the proposal was measured against and would replace: name and hash."""
    changed: bool
    verdict: str
    samples: SampleSummary
    coverage: dict[str, Any]
    method: Method
    groups: list[GroupEvidence]
    backtest: BacktestResult
    backtest_size_term: SizeTermBacktest | None = None
    """The prompt-size term's backtest (absent from proposals made before it existed)."""
    coefficients: dict[str, Any]
    """The full proposed set, in the format the estimator loads."""
    charts: list[str] = []
    _chart_data: ChartData | None = PrivateAttr(default=None)

    @property
    def chart_data(self) -> ChartData | None:
        """What the charts are drawn from (not part of the document)."""
        return self._chart_data

    def to_json(self) -> dict[str, Any]:
        """The `--json` document (docs/json.md)."""
        document: dict[str, Any] = self.model_dump(mode="json")
        return document

    def document_text(self) -> str:
        """The document as the proposal file holds it; raises ValueError on NaN or infinity."""
        return json.dumps(self.to_json(), indent=2, allow_nan=False) + "\n"
