"""Estimator coefficient sets: versioned data, never constants in code.

A `CoefficientSet` holds every number the estimator, budget selection and the provider
ceiling use. Built-in sets are JSON files in `autopack/estimator/sets/`; approved calibrations
are further sets (a file, or a row in the database) with their own name. Each set has a content
hash over everything that can change a result, so telemetry can say exactly which numbers
produced a prediction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from autopack.errors import ConfigError
from autopack.estimator.categories import DOC_CATEGORIES, normalize_category

SETS_PACKAGE: Final = "autopack.estimator"
SETS_DIRECTORY: Final = "sets"
DEFAULT_SET_NAME: Final = "default"
HASH_LENGTH: Final = 12
ESTIMATOR_VERSION: Final = "2"
"""The estimator's rules (the code that reads a set). A calibration proposal records it and
`calibrate apply` refuses a proposal made for other rules. 2: group calibration (format 2)."""
LATEST_FORMAT_VERSION: Final = 2

_METADATA_FIELDS: Final = frozenset({"name", "description", "provenance"})

DeliverableKind = Literal["test", "doc", "config", "frontend", "python", "sql", "backend"]
"""Cost classes of a deliverable. `backend` is the fallback when no other kind matches."""

Tokens = Annotated[int, Field(gt=0)]
NonNegativeTokens = Annotated[int, Field(ge=0)]
Factor = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
SetName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]


class CoefficientSetError(ConfigError):
    """A coefficient set could not be found, read or validated."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NewModifyCost(_Frozen):
    """Marginal tokens for one deliverable: a new file, or a change to an existing one."""

    new: Tokens
    modify: Tokens


class Step(_Frozen):
    """`factor` applies to values below `below` (and at or above the previous step's bound)."""

    below: Tokens
    factor: Factor


class StepFactor(_Frozen):
    """A step function: the first step whose bound exceeds the value, else `otherwise`."""

    steps: list[Step]
    otherwise: Factor

    @field_validator("steps")
    @classmethod
    def _ascending(cls, steps: list[Step]) -> list[Step]:
        bounds = [step.below for step in steps]
        if bounds != sorted(set(bounds)):
            raise ValueError("step bounds must be strictly ascending")
        return steps

    def factor_for(self, value: int) -> float:
        """The factor of the first step with `value < below`, else `otherwise`."""
        for step in self.steps:
            if value < step.below:
                return step.factor
        return self.otherwise


class FileComplexityModel(_Frozen):
    """How much more (or less) a modification costs, judged from the existing file."""

    lines_of_code: StepFactor
    imports: StepFactor
    nesting: StepFactor
    minimum: Factor
    maximum: Factor

    @model_validator(mode="after")
    def _ordered_clamp(self) -> Self:
        if self.minimum > self.maximum:
            raise ValueError("minimum must not exceed maximum")
        return self


class MarginalModel(_Frozen):
    """Per-deliverable costs and the order in which deliverable kinds are tried."""

    precedence: list[DeliverableKind]
    costs: dict[DeliverableKind, NewModifyCost]
    file_complexity: FileComplexityModel

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if len(set(self.precedence)) != len(self.precedence):
            raise ValueError("precedence lists a kind twice")
        if "backend" in self.precedence:
            raise ValueError("backend is the fallback and must not appear in precedence")
        missing = {"backend", *self.precedence} - set(self.costs)
        if missing:
            raise ValueError(f"costs missing for: {', '.join(sorted(missing))}")
        return self


class ContextTable(_Frozen):
    """Tokens by context quality (number of scope paths: none, some, strong)."""

    none: NonNegativeTokens
    some: NonNegativeTokens
    strong: NonNegativeTokens

    def for_quality(self, quality: Literal["none", "some", "strong"]) -> int:
        """The tokens for one context quality."""
        return {"none": self.none, "some": self.some, "strong": self.strong}[quality]


class ConfidenceModel(_Frozen):
    """Confidence of an estimate (version-controlled here because it changed so often)."""

    base: Fraction
    file_weight: Fraction
    action_weight: Fraction
    cap: Fraction
    empty_phase: Fraction
    doc_synthesis: Fraction
    sot_update: Fraction


class DocSynthesisModel(_Frozen):
    """Documentation that needs code investigation: investigate + extract + write."""

    investigate: ContextTable
    api_extract: NonNegativeTokens
    examples: NonNegativeTokens
    writing_per_deliverable: Tokens
    coordination_fraction: Fraction
    coordination_min_deliverables: Tokens


class SotUpdateModel(_Frozen):
    """Updates to source-of-truth ledgers (BUILD_LOG.md, CHANGELOG.md, …)."""

    context: ContextTable
    write_per_entry: Tokens
    consistency_fraction: Fraction


class BudgetModel(_Frozen):
    """Turning an estimate into the selected output budget, and escalating it once."""

    base: dict[str, dict[str, Tokens]]
    fallback: dict[str, Tokens]
    fallback_other: Tokens
    buffer: Factor
    low_confidence_below: Fraction
    low_confidence_buffer: Factor
    many_deliverables_from: Tokens
    many_deliverables_buffer: Factor
    high_complexity_categories: list[str]
    high_complexity_buffer: Factor
    doc_model_buffer: Factor
    cap: Tokens
    escalation_factor: Factor
    escalation_utilisation: Fraction

    @field_validator("base")
    @classmethod
    def _normalised_keys(cls, base: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
        stray = sorted(key for key in base if normalize_category(key) != key)
        if stray:
            raise ValueError(
                "base categories are looked up normalised, so these keys would never match: "
                + ", ".join(stray)
            )
        return base

    @field_validator("high_complexity_categories")
    @classmethod
    def _sorted_unique(cls, values: list[str]) -> list[str]:
        return sorted(set(values))

    def base_for(self, category_key: str, complexity: str) -> int:
        """The base budget of a normalised category and a raw complexity."""
        row = self.base.get(category_key)
        if row is not None and complexity in row:
            return row[complexity]
        return self.fallback.get(complexity, self.fallback_other)


class ProviderModel(_Frozen):
    """Floors and the hard ceiling applied when the budget becomes the provider's max_tokens."""

    ceiling: Tokens
    lockfile_markers: list[str]
    lockfile_floor: Tokens
    large_categories: list[str]
    large_category_floor: Tokens
    backend_min_scope_paths: Tokens
    backend_floor: Tokens
    large_change_floor: Tokens
    docs_exempt_from_large_change_floor: bool
    invalid_fallback: Tokens

    @field_validator("lockfile_markers", "large_categories")
    @classmethod
    def _sorted_unique(cls, values: list[str]) -> list[str]:
        return sorted(set(values))


class GroupCalibration(_Frozen):
    """A calibrated (category, complexity) group: format version 2 (`calibrate apply`).

    Applies to phases of the group with 1 to `max_deliverables` deliverables, the range the
    evidence behind it covered; larger phases keep the base numbers (evidence from small
    phases must not move what it never measured).
    """

    scale: Factor
    """Multiplies the estimate (after the safety margin)."""
    buffer: Factor | None = None
    """Replaces the budget buffer's starting value (the set's `budget.buffer`)."""
    max_deliverables: Tokens


class CoefficientSet(_Frozen):
    """Every number the estimator uses, under a name, hashed by content."""

    schema_version: Literal[1, 2] = 1
    """1: the original's model. 2: adds `calibration` (per-group scale and budget buffer)."""
    name: SetName
    description: str = ""
    provenance: dict[str, str] = Field(default_factory=dict)
    category_lookup: Literal["raw", "normalized"]
    safety_margin: Factor
    context_strong_above: NonNegativeTokens
    empty_phase_tokens: dict[str, Tokens]
    empty_phase_default: Tokens
    phase_overhead: dict[str, dict[str, NonNegativeTokens]]
    phase_overhead_default: NonNegativeTokens
    marginal: MarginalModel
    confidence: ConfidenceModel
    doc_synthesis: DocSynthesisModel
    sot_update: SotUpdateModel
    budget: BudgetModel
    provider: ProviderModel
    calibration: dict[str, dict[str, GroupCalibration]] = Field(default_factory=dict)
    """{normalised category: {complexity: GroupCalibration}}; format version 2 only."""

    @model_validator(mode="after")
    def _calibration_needs_version_2(self) -> Self:
        if self.calibration and self.schema_version < 2:
            raise ValueError("calibration needs schema_version 2")
        stray = sorted(key for key in self.calibration if normalize_category(key) != key)
        if stray:
            raise ValueError(
                "calibration is looked up by normalised category, so these keys would never "
                "match: " + ", ".join(stray)
            )
        return self

    @model_validator(mode="after")
    def _lookup_keys_reachable(self) -> Self:
        if self.category_lookup == "normalized":
            stray = sorted(key for key in self.phase_overhead if normalize_category(key) != key)
            if stray:
                raise ValueError(
                    "phase_overhead is looked up by normalised category, so these keys would "
                    "never match: " + ", ".join(stray)
                )
        return self

    def known_categories(self) -> frozenset[str]:
        """The normalised categories this set has numbers or rules for: what `estimate`
        accepts (an alias of one, such as `testing`, is accepted too)."""
        names = [
            *self.phase_overhead,
            *self.budget.base,
            *self.calibration,
            *self.budget.high_complexity_categories,
            *self.provider.large_categories,
            *DOC_CATEGORIES,
        ]
        return frozenset(normalize_category(name) for name in names)

    def category_key(self, category: str) -> str:
        """The key a category is looked up under in this set (raw, or normalised)."""
        return normalize_category(category) if self.category_lookup == "normalized" else category

    def overhead_for(self, category_key: str, complexity: str) -> int:
        """The fixed phase overhead for a lookup key and a raw complexity."""
        row = self.phase_overhead.get(category_key)
        if row is not None and complexity in row:
            return row[complexity]
        return self.phase_overhead_default

    def empty_phase_estimate(self, complexity: str) -> int:
        """The estimate of a phase without deliverables."""
        return self.empty_phase_tokens.get(complexity, self.empty_phase_default)

    def group_calibration(
        self, category: str, complexity: str, deliverable_count: int
    ) -> GroupCalibration | None:
        """The calibration that applies to a phase, if any (None: the base numbers)."""
        group = self.calibration.get(normalize_category(category), {}).get(complexity)
        if group is None or not 1 <= deliverable_count <= group.max_deliverables:
            return None
        return group


def _hashed_content(coefficients: CoefficientSet) -> dict[str, Any]:
    content = coefficients.model_dump(mode="json", exclude=set(_METADATA_FIELDS))
    if not content["calibration"]:
        # A version-1 set hashes exactly as before version 2 existed (telemetry keeps its
        # recorded hashes meaningful).
        del content["calibration"]
    return content


def coefficient_set_hash(coefficients: CoefficientSet, *, full: bool = False) -> str:
    """The sha256 of the set's canonical JSON (sorted keys, no whitespace).

    Only content that can change a result is hashed: `name`, `description` and `provenance` are
    not, so a renamed copy has the same hash. Returns the first 12 hex digits unless `full`.
    """
    canonical = json.dumps(
        _hashed_content(coefficients), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return digest if full else digest[:HASH_LENGTH]


def coefficient_set_to_json(coefficients: CoefficientSet) -> str:
    """The set as an indented JSON document, the format `load_set_from_file` reads."""
    # A set without calibration is written as format 1 was (the built-in files stay canonical).
    exclude = None if coefficients.calibration else {"calibration"}
    return coefficients.model_dump_json(indent=2, exclude=exclude) + "\n"


def _describe_validation(error: ValidationError) -> str:
    parts = []
    for detail in error.errors()[:3]:
        where = ".".join(str(item) for item in detail["loc"]) or "(top level)"
        parts.append(f"{where}: {detail['msg']}")
    more = error.error_count() - len(parts)
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def load_set_from_json(text: str, *, source: str) -> CoefficientSet:
    """Parse and validate a coefficient set; `source` names it in error messages."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CoefficientSetError(
            f"Coefficient set {source} is not valid JSON (line {exc.lineno}, column {exc.colno}).",
            hint="Write the set with `coefficient_set_to_json`, or copy a built-in set's file.",
        ) from exc
    try:
        return CoefficientSet.model_validate(data)
    except ValidationError as exc:
        raise CoefficientSetError(
            f"Coefficient set {source} is invalid: {_describe_validation(exc)}.",
            hint="Compare it with a built-in set in autopack/estimator/sets/.",
        ) from exc


def load_set_from_file(path: Path | str) -> CoefficientSet:
    """Read a coefficient set from a JSON file, with a clear error when that is impossible."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise CoefficientSetError(
            f"Coefficient set file {file} does not exist.",
            hint=f"Check the path, or use a built-in set: {', '.join(builtin_set_names())}.",
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise CoefficientSetError(
            f"Coefficient set file {file} cannot be read ({exc.__class__.__name__}).",
            hint="Give the path of a readable UTF-8 JSON file.",
        ) from exc
    return load_set_from_json(text, source=str(file))


def builtin_set_names() -> list[str]:
    """The names of the sets shipped with autopack, sorted."""
    directory = resources.files(SETS_PACKAGE) / SETS_DIRECTORY
    return sorted(
        entry.name.removesuffix(".json")
        for entry in directory.iterdir()
        if entry.is_file() and entry.name.endswith(".json")
    )


def load_builtin_set(name: str = DEFAULT_SET_NAME) -> CoefficientSet:
    """Load a built-in set by name (`default`, `original-head`, `original-2025-12-25`)."""
    names = builtin_set_names()
    if name not in names:
        raise CoefficientSetError(
            f"There is no built-in coefficient set named {name!r}.",
            hint=f"Built-in sets: {', '.join(names)}; or load one from a file.",
        )
    resource = resources.files(SETS_PACKAGE) / SETS_DIRECTORY / f"{name}.json"
    return load_set_from_json(resource.read_text(encoding="utf-8"), source=f"built-in {name!r}")


def derive_set(
    base: CoefficientSet,
    *,
    name: str,
    description: str,
    phase_overhead: Mapping[tuple[str, str], int],
    provenance: Mapping[str, str] | None = None,
) -> CoefficientSet:
    """A new, validated set: `base` with some (category, complexity) overheads replaced.

    Categories are mapped to the base set's lookup keys, so with a normalised set `testing`
    updates the `tests` row. This is how an approved calibration becomes a set.
    """
    table = {category: dict(row) for category, row in base.phase_overhead.items()}
    for (category, complexity), tokens in phase_overhead.items():
        table.setdefault(base.category_key(category), {})[complexity] = tokens
    data = base.model_dump(mode="json")
    data.update(
        name=name,
        description=description,
        provenance=dict(provenance or {}),
        phase_overhead=table,
    )
    try:
        return CoefficientSet.model_validate(data)
    except ValidationError as exc:
        raise CoefficientSetError(
            f"The derived coefficient set {name!r} is invalid: {_describe_validation(exc)}.",
            hint="Overheads must be non-negative integers; names use letters, digits, . _ -.",
        ) from exc
