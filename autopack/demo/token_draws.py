"""How many output tokens the simulated model spends: drawn from the original's real figures.

Every figure below is from `original_spec.md` §12.3 (telemetry-collection-v5, 2025-12-29, the
original's main calibration dataset: 25 clean builder events). The simulated model spends
`predicted × ratio` output tokens, where `predicted` is what the default estimator predicts
for the phase and `ratio` (actual / predicted) is drawn from a log-normal distribution whose
median is the group's published median and whose spread covers the published range.

Draws are reproducible: each is seeded from the demo's seed, the phase id and the attempt
number, so the same demo gives the same figures whatever order its threads run in.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class RatioDistribution:
    """actual/predicted output tokens of one group: median and the published (low, high) range."""

    median: float
    low: float
    high: float
    source: str

    @property
    def sigma(self) -> float:
        """Log-normal spread: the published range taken as about ±2σ around the median."""
        return max(math.log(self.high / self.low) / 4.0, 0.05)


# §12.3, "Per-group medians of actual/predicted": (category, complexity) → median, range.
PUBLISHED_GROUPS: Final[dict[tuple[str, str], RatioDistribution]] = {
    ("implementation", "low"): RatioDistribution(0.313, 0.215, 0.443, "§12.3 n=8"),
    ("implementation", "medium"): RatioDistribution(0.379, 0.257, 0.477, "§12.3 n=7"),
    ("tests", "low"): RatioDistribution(0.370, 0.328, 0.468, "§12.3 n=4"),
    ("tests", "medium"): RatioDistribution(0.727, 0.537, 1.124, "§12.3 n=3"),
    ("docs", "low"): RatioDistribution(1.402, 1.340, 6.233, "§12.3 n=3"),
}

# §12.3, "By category": mean waste (predicted/actual) implementation 3.05×, tests 2.10×,
# docs 0.54×; used for the groups with no published median (e.g. high complexity), with the
# overall spread of waste (median 2.64×, maximum 4.66×: ratios 0.215 to 0.379 and above).
_CATEGORY_WASTE: Final[dict[str, float]] = {"implementation": 3.05, "tests": 2.10, "docs": 0.54}
_OVERALL_WASTE: Final = 2.49  # §12.3 mean waste over all 25 clean samples
_FALLBACK_SPREAD: Final = 4.66 / 2.64  # §12.3 max waste / median waste: high/median ratio

TRUNCATION_PROBABILITY: Final = 1 / 26
"""§12.3: 26 builder events, one of them (d2's first attempt) truncated at 16384 output tokens.
A first attempt is cut off at this rate on top of the draws that overrun their budget."""

MIN_OUTPUT_TOKENS: Final = 64
"""Above the recorder's < 50 tokens validity guard: a real reply with files is never that small."""


def distribution_for(category: str, complexity: str) -> RatioDistribution:
    """The published group's distribution, else one built from its category's mean waste."""
    published = PUBLISHED_GROUPS.get((category, complexity))
    if published is not None:
        return published
    median = 1.0 / _CATEGORY_WASTE.get(category, _OVERALL_WASTE)
    return RatioDistribution(
        median,
        median / _FALLBACK_SPREAD,
        median * _FALLBACK_SPREAD,
        f"§12.3 {category} mean waste" if category in _CATEGORY_WASTE else "§12.3 overall",
    )


@dataclass(frozen=True)
class TokenDraw:
    """One call's output tokens and whether the reply is cut off at `max_tokens`."""

    output_tokens: int
    truncated: bool
    ratio: float


def rng_for(seed: int, phase_key: str, attempt: int) -> random.Random:
    """A generator for one call, independent of every other call's order."""
    digest = hashlib.sha256(f"{seed}\0{phase_key}\0{attempt}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def draw_output_tokens(
    rng: random.Random,
    *,
    category: str,
    complexity: str,
    predicted: int,
    max_tokens: int,
    first_attempt: bool,
    truncation_probability: float = TRUNCATION_PROBABILITY,
) -> TokenDraw:
    """Draw one call's output tokens; a draw at or over `max_tokens` is a truncation."""
    distribution = distribution_for(category, complexity)
    ratio = math.exp(rng.gauss(math.log(distribution.median), distribution.sigma))
    wanted = max(MIN_OUTPUT_TOKENS, round(predicted * ratio))
    forced = first_attempt and rng.random() < truncation_probability
    if forced or wanted >= max_tokens:
        return TokenDraw(max_tokens, True, ratio)
    return TokenDraw(wanted, False, ratio)


__all__ = [
    "MIN_OUTPUT_TOKENS",
    "PUBLISHED_GROUPS",
    "TRUNCATION_PROBABILITY",
    "RatioDistribution",
    "TokenDraw",
    "distribution_for",
    "draw_output_tokens",
    "rng_for",
]
