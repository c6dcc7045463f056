"""The one place where categories, complexities and deliverable counts are normalised.

Telemetry, analysis, calibration and the estimator all group phases by (category, complexity)
and by a deliverable-count bucket. They must agree on what "the same category" means, so they
all import these functions instead of keeping their own alias tables.

Category aliases (the original `select_budget` normalisation, which is the only one the original
applied consistently):

- `testing` → `tests`
- `documentation`, `doc`, `doc_write` → `docs`
- `implement_feature` → `implementation`

`doc_synthesis` and `doc_sot_update` stay distinct: they are separate estimation models.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from autopack.db.buckets import DELIVERABLE_BUCKETS as DELIVERABLE_BUCKETS
from autopack.db.buckets import deliverable_bucket
from autopack.errors import ConfigError
from autopack.text import closest

CATEGORY_ALIASES: Final[dict[str, str]] = {
    "testing": "tests",
    "documentation": "docs",
    "doc": "docs",
    "doc_write": "docs",
    "implement_feature": "implementation",
}
"""Lower-cased category → the key it is estimated, calibrated and reported under."""

DOC_SYNTHESIS: Final = "doc_synthesis"
DOC_SOT_UPDATE: Final = "doc_sot_update"

DOC_CATEGORIES: Final[frozenset[str]] = frozenset({"docs", DOC_SYNTHESIS, DOC_SOT_UPDATE})
"""Normalised categories whose phases are documentation work."""

COMPLEXITY_LEVELS: Final[tuple[str, ...]] = ("low", "medium", "high", "maintenance")
"""The complexities the telemetry tables accept (the SQL schema's CHECK constraint)."""

DEFAULT_COMPLEXITY: Final = "medium"

_COMPLEXITY_SUFFIXES: Final[tuple[str, ...]] = (
    "_complexity",
    "-complexity",
    "_level",
    "-level",
    "_mode",
    "-mode",
    "_task",
    "_tier",
)
_COMPLEXITY_ALIASES: Final[dict[str, str]] = {
    "med": "medium",
    "maint": "maintenance",
    "maintain": "maintenance",
    "maintenance_mode": "maintenance",
}


def normalize_category(category: str | None) -> str:
    """Return the estimation key of a category: stripped, lower-cased, aliases folded.

    `None` and blank strings give `""` (no category). Unknown categories keep their lower-cased
    value, so `misc` stays `misc`.
    """
    if category is None:
        return ""
    key = category.strip().lower()
    return CATEGORY_ALIASES.get(key, key)


def same_category(first: str | None, second: str | None) -> bool:
    """Whether two raw categories are the same category for estimation (`tests` ≡ `testing`)."""
    return normalize_category(first) == normalize_category(second)


def is_doc_category(category: str | None) -> bool:
    """Whether a category (raw or normalised) is documentation work, SOT and synthesis included."""
    return normalize_category(category) in DOC_CATEGORIES


def normalize_complexity(complexity: str | None) -> str:
    """Return one of `COMPLEXITY_LEVELS`, as the original telemetry writer did.

    Strip and lower-case; remove suffixes such as `_complexity`, `-level`, `_mode`, `_task` and
    `_tier` (repeatedly, so `high_complexity_level` is `high`); fold `med` → `medium` and
    `maint`/`maintain`/`maintenance_mode` → `maintenance`; anything else (including `None`)
    becomes `medium`.
    """
    if complexity is None:
        return DEFAULT_COMPLEXITY
    return known_complexity(complexity) or DEFAULT_COMPLEXITY


def known_complexity(complexity: str) -> str | None:
    """The level `normalize_complexity` reads `complexity` as, or None where it would only
    fall back to `medium` (an operator's typo is refused, not estimated as medium)."""
    value = complexity.strip().lower()
    value = _COMPLEXITY_ALIASES.get(value, value)
    stripped = True
    while stripped:
        stripped = False
        for suffix in _COMPLEXITY_SUFFIXES:
            if value.endswith(suffix) and len(value) > len(suffix):
                value = value[: -len(suffix)]
                stripped = True
                break
    value = _COMPLEXITY_ALIASES.get(value, value)
    return value if value in COMPLEXITY_LEVELS else None


def require_known_complexity(complexity: str) -> str:
    """`complexity` as given, or a refusal naming the levels (and the closest one)."""
    if known_complexity(complexity) is None:
        raise ConfigError(
            f"--complexity {complexity!r} is not a complexity.",
            hint=_choices(complexity, COMPLEXITY_LEVELS),
        )
    return complexity


def require_known_category(category: str, known: Iterable[str]) -> str:
    """`category` as given, or a refusal when its normalised key is none of `known` (keys).

    Aliases are accepted (`testing`, `IMPLEMENT_FEATURE`): they normalise to a known key.
    """
    keys = sorted(set(known))
    if normalize_category(category) not in keys:
        raise ConfigError(
            f"--category {category!r} is not a category this estimator knows.",
            hint=_choices(normalize_category(category), keys),
        )
    return category


def _choices(value: str, valid: Iterable[str]) -> str:
    names = list(valid)
    guess = closest(value.strip().lower(), names)
    listing = f"valid values: {', '.join(names)}"
    return f"did you mean {guess!r}? {listing}" if guess else listing


def deliverable_count_bucket(count: int | None) -> str:
    """Bucket a deliverable count for stratified reports: `0`, `1`, `2-5`, `6+`, or `unknown`
    for a null or negative count (the rule lives in autopack.db.buckets)."""
    return deliverable_bucket(count)
