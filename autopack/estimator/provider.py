"""From the selected budget to the provider's `max_tokens`, and the escalate-once retry budget.

`select_budget` states the estimator's intent. The builder then applies floors for phases
known to need room (lockfiles, deployment and frontend work, multi-path backend work, full-file
or large-refactor phases), never goes below the intent, and never above the provider ceiling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from autopack.estimator.categories import is_doc_category, normalize_category
from autopack.estimator.coefficients import CoefficientSet

LARGE_REFACTOR: Final = "large_refactor"
FULL_FILE: Final = "full_file"

EscalationSource = Literal[
    "selected_budget", "actual_max_tokens", "actual_output_tokens", "complexity_default"
]


@dataclass(frozen=True, slots=True)
class MaxTokensDecision:
    """The output ceiling for one builder call and why it has that value."""

    max_tokens: int
    """The ceiling after floors and the never-below-intent rule (telemetry's actual_max_tokens)."""
    request_max_tokens: int
    """What is sent to the provider: `max_tokens` limited to the provider ceiling."""
    selected_budget: int | None
    change_size: str | None
    """The phase's change size after the floors (lockfile, deployment and frontend phases are
    marked `large_refactor` when they had none)."""
    floors: tuple[str, ...]
    """The names of the rules that raised the value, in the order they were applied."""


def provider_max_tokens(
    selected_budget: int | None,
    complexity: str,
    *,
    coefficients: CoefficientSet,
    task_category: str | None = None,
    scope_paths: Sequence[str] = (),
    builder_mode: str | None = None,
    change_size: str | None = None,
    requested: int | None = None,
) -> MaxTokensDecision:
    """Apply the builder's floors and ceiling to a selected budget.

    `requested` is an explicit ceiling from the caller (e.g. an escalated retry budget); without
    it the selected budget is the starting point, or the complexity default if there is none.
    `task_category` is the phase's own category (not the estimator's).
    """
    provider = coefficients.provider
    floors: list[str] = []

    def raise_to(value: int, floor: int, rule: str) -> int:
        if value < floor:
            floors.append(rule)
            return floor
        return value

    if requested is not None:
        value = requested
    elif selected_budget:
        value = selected_budget
    else:
        value = coefficients.budget.fallback.get(complexity, coefficients.budget.fallback_other)

    category = normalize_category(task_category)
    if any(marker in path for path in scope_paths for marker in provider.lockfile_markers):
        value = raise_to(value, provider.lockfile_floor, "lockfile")
        change_size = change_size or LARGE_REFACTOR
    if category in provider.large_categories:
        value = raise_to(value, provider.large_category_floor, "large_category")
        change_size = change_size or LARGE_REFACTOR
    if category == "backend" and len(scope_paths) >= provider.backend_min_scope_paths:
        value = raise_to(value, provider.backend_floor, "backend_multi_path")

    if builder_mode == FULL_FILE or change_size == LARGE_REFACTOR:
        exempt = (
            provider.docs_exempt_from_large_change_floor
            and is_doc_category(task_category)
            and bool(selected_budget)
            and (selected_budget or 0) < provider.large_change_floor
        )
        if not exempt:
            value = raise_to(value, provider.large_change_floor, "large_change")
    elif value <= 0:
        floors.append("invalid")
        value = provider.invalid_fallback

    if selected_budget:
        value = raise_to(value, selected_budget, "selected_budget")
    return MaxTokensDecision(
        max_tokens=value,
        request_max_tokens=min(value, provider.ceiling),
        selected_budget=selected_budget,
        change_size=change_size,
        floors=tuple(floors),
    )


@dataclass(frozen=True, slots=True)
class Escalation:
    """The retry budget after a truncated (or nearly truncated) builder call."""

    base: int
    base_source: EscalationSource
    retry_budget: int


def should_escalate(
    *,
    truncated: bool,
    output_tokens: int | None,
    max_tokens: int | None,
    already_escalated: bool,
    attempt_index: int,
    max_attempts: int,
    coefficients: CoefficientSet,
) -> bool:
    """Escalate once: the call was truncated or used ≥ 95 % of its ceiling, it has not been
    escalated yet, and another attempt remains."""
    if already_escalated or attempt_index >= max_attempts - 1:
        return False
    if truncated:
        return True
    if not output_tokens or not max_tokens or max_tokens <= 0:
        return False
    return output_tokens / max_tokens >= coefficients.budget.escalation_utilisation


def escalation_budget(
    *,
    selected_budget: int | None,
    actual_max_tokens: int | None,
    actual_output_tokens: int | None,
    complexity: str,
    coefficients: CoefficientSet,
) -> Escalation:
    """The escalate-once retry budget: the largest known budget × the escalation factor, capped.

    The base is the largest of the selected budget, the ceiling that was sent and the output
    tokens (the first one listed wins a tie); when all are missing or zero it is the
    complexity default.
    """
    budget = coefficients.budget
    candidates: list[tuple[EscalationSource, int]] = [
        ("selected_budget", selected_budget or 0),
        ("actual_max_tokens", actual_max_tokens or 0),
        ("actual_output_tokens", actual_output_tokens or 0),
    ]
    source, base = candidates[0]
    for name, value in candidates[1:]:
        if value > base:
            source, base = name, value
    if base <= 0:
        source = "complexity_default"
        base = budget.fallback.get(complexity, budget.fallback_other)
    retry = min(int(base * budget.escalation_factor), budget.cap)
    return Escalation(base=base, base_source=source, retry_budget=retry)
