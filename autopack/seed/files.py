"""Seed files (TOML or JSON): read, validate strictly, and turn into a `SeedRunSpec`.

The built-in seed runs are files in this format too (`autopack/seed/runs/*.toml`), so they go
through exactly the validation a user's file does. The format (docs/seeding.md):

    [run]              id, description, token_cap, max_phases, max_duration_minutes
    [tier]             name, description, token_cap, ci_run_cap
    [phase_defaults]   max_builder_attempts, max_auditor_attempts, incident_token_cap, paths
    [[phases]]         phase_id, name, description, task_category, complexity,
                       deliverables, read_only_context, paths

Every problem found is reported, phase by phase ("phase 3 (id 'x'): complexity must be low,
medium or high"), in one `SeedFileError`; nothing is half-accepted. The Python API
(`SeedRunSpec`) stays permissive on purpose: tests and tools may seed deliberately odd phases.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails

from autopack.errors import ConfigError
from autopack.executor.workspace import normalize_relative_path
from autopack.seed.model import SeedPhase, SeedRunSpec, SeedScope
from autopack.text import closest

SeedFormat = Literal["toml", "json"]

FORMATS_BY_SUFFIX: Final[dict[str, SeedFormat]] = {".toml": "toml", ".json": "json"}
COMPLEXITIES: Final[tuple[str, ...]] = ("low", "medium", "high")
ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ID_RULE: Final = (
    "must start with a letter or digit and hold only letters, digits, '.', '_' and '-' "
    "(at most 128 characters)"
)
_SECTIONS: Final = ("run", "tier", "phase_defaults", "phases")
_FIELD_HINTS: Final[dict[str, str]] = {
    "phase_index": "phases are numbered by their order in the file",
    "scope": "give paths, deliverables and read_only_context as fields of the phase",
    "state": "seeded phases are always QUEUED",
}
_SPEC_DEFAULTS: Final = {
    name: info.default for name, info in SeedRunSpec.model_fields.items() if not info.is_required()
}


class SeedFileError(ConfigError):
    """A seed file that cannot be used; `problems` lists every problem, one line each."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        if len(self.problems) == 1:
            message = f"{source} is not a valid seed file: {self.problems[0]}"
        else:
            listed = "\n".join(f"  {problem}" for problem in self.problems)
            message = (
                f"{source} is not a valid seed file ({len(self.problems)} problems):\n{listed}"
            )
        super().__init__(
            message,
            hint="fix the file and run again; nothing was written (format: docs/seeding.md)",
        )


def validate_id(value: str, *, what: str) -> str:
    """Return a run or phase id unchanged, or raise `ValueError` saying what is wrong."""
    if not ID_PATTERN.match(value):
        raise ValueError(f"{what} {value!r} {ID_RULE}")
    return value


def check_run_id(value: str) -> str:
    """A `--run-id` given on the command line: the same rule as in files, refused as ConfigError."""
    if not ID_PATTERN.match(value):
        raise ConfigError(
            f"invalid --run-id {value!r}: a run id {ID_RULE}.",
            hint="e.g. --run-id telemetry-collection-v4b",
        )
    return value


def _path_problem(value: str) -> str | None:
    try:
        normalize_relative_path(value)
    except ValueError as exc:
        return str(exc)
    return None


def _strings(value: object) -> list[str]:
    """The string items of a raw list (type errors are reported by the models)."""
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def _bad_paths(values: list[str], *, what: str) -> list[str]:
    return [
        f"{what} {value!r}: {problem}"
        for value in values
        if (problem := _path_problem(value)) is not None
    ]


def _non_blank(value: str, field: str) -> str:
    stripped = value.strip()
    if not stripped:
        raise ValueError(f"{field} must not be empty")
    return stripped


# The largest value every backend's INTEGER column holds (PostgreSQL's is 32-bit): a larger
# count would pass `seed show` and then fail the insert.
MAX_COLUMN_INT: Final = 2**31 - 1


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


_SectionT = TypeVar("_SectionT", bound=_Section)


class _RunSection(_Section):
    id: str | None = None
    description: str = _SPEC_DEFAULTS["description"]
    token_cap: int = Field(default=_SPEC_DEFAULTS["token_cap"], gt=0, le=MAX_COLUMN_INT)
    max_phases: int = Field(default=_SPEC_DEFAULTS["max_phases"], gt=0, le=MAX_COLUMN_INT)
    max_duration_minutes: int = Field(
        default=_SPEC_DEFAULTS["max_duration_minutes"], gt=0, le=MAX_COLUMN_INT
    )

    @field_validator("id")
    @classmethod
    def _id(cls, value: str | None) -> str | None:
        return None if value is None else validate_id(value, what="run.id")


class _TierSection(_Section):
    name: str = _SPEC_DEFAULTS["tier_name"]
    description: str | None = _SPEC_DEFAULTS["tier_description"]
    token_cap: int | None = Field(default=_SPEC_DEFAULTS["tier_token_cap"], gt=0, le=MAX_COLUMN_INT)
    ci_run_cap: int = Field(default=_SPEC_DEFAULTS["ci_run_cap"], gt=0, le=MAX_COLUMN_INT)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _non_blank(value, "tier.name")


class _PhaseDefaults(_Section):
    max_builder_attempts: int = Field(
        default=_SPEC_DEFAULTS["max_builder_attempts"], gt=0, le=MAX_COLUMN_INT
    )
    max_auditor_attempts: int = Field(
        default=_SPEC_DEFAULTS["max_auditor_attempts"], ge=0, le=MAX_COLUMN_INT
    )
    incident_token_cap: int = Field(
        default=_SPEC_DEFAULTS["incident_token_cap"], gt=0, le=MAX_COLUMN_INT
    )
    paths: list[str] | None = None

    @field_validator("paths")
    @classmethod
    def _paths(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("phase_defaults.paths must not be empty")
        return value


class _PhaseEntry(_Section):
    phase_id: str
    name: str
    description: str
    task_category: str
    complexity: str
    deliverables: list[str]
    read_only_context: list[str] = Field(default_factory=list)
    paths: list[str] | None = None

    @field_validator("phase_id")
    @classmethod
    def _phase_id(cls, value: str) -> str:
        return validate_id(value, what="phase_id")

    @field_validator("name", "description", "task_category")
    @classmethod
    def _text(cls, value: str, info: ValidationInfo) -> str:
        return _non_blank(value, str(info.field_name))

    @field_validator("complexity")
    @classmethod
    def _complexity(cls, value: str) -> str:
        cleaned = value.strip().lower()
        if cleaned not in COMPLEXITIES:
            raise ValueError(f"complexity must be low, medium or high (got {value!r})")
        return cleaned

    @field_validator("deliverables")
    @classmethod
    def _deliverables(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("deliverables must list at least one file")
        return value

    @field_validator("paths")
    @classmethod
    def _paths(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("paths must not be empty")
        return value


def _path_problems(raw: dict[str, object], default_paths: list[str] | None) -> list[str]:
    """Every path problem of one raw phase, found even when other fields are wrong.

    Paths must be clean relative paths; a deliverable must be listed once and lie inside one
    of the phase's paths (its own, else [phase_defaults] paths), or the builder could never
    write it.
    """
    deliverables = _strings(raw.get("deliverables"))
    problems = _bad_paths(deliverables, what="deliverable")
    problems += _bad_paths(_strings(raw.get("read_only_context")), what="read_only_context")
    own_paths = _strings(raw.get("paths")) if "paths" in raw else None
    if own_paths is not None:
        problems += _bad_paths(own_paths, what="path")
    paths = own_paths if own_paths is not None else default_paths
    if paths is None:
        problems.append("paths is missing (give it here or in [phase_defaults])")
    usable = [d for d in deliverables if _path_problem(d) is None]
    seen: set[str] = set()
    for deliverable in usable:
        key = normalize_relative_path(deliverable)
        if key in seen:
            problems.append(f"deliverable {deliverable!r} is listed twice")
        seen.add(key)
    scopes = [normalize_relative_path(p) for p in paths or [] if _path_problem(p) is None]
    if scopes:
        problems.extend(
            f"deliverable {deliverable!r} is outside the phase's paths "
            f"({', '.join(paths or [])}), so the builder could never write it"
            for deliverable in usable
            if not any(_within(normalize_relative_path(deliverable), s) for s in scopes)
        )
    return problems


def _within(child: str, parent: str) -> bool:
    """Component-wise: `src/app` covers `src/app/x.py`, not `src/app_v2/x.py`; `.` covers all."""
    return parent == "." or child == parent or child.startswith(parent + "/")


def _field_name(loc: tuple[int | str, ...], prefix: str) -> str:
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts.append(f"item {part + 1}")
        else:
            parts.append(part)
    if not parts:
        return prefix.rstrip(".") or "the value"
    return f"{prefix}{' '.join(parts)}"


def _suggestion(name: str, known: Sequence[str]) -> str:
    hint = _FIELD_HINTS.get(name)
    if hint is not None:
        return f" ({hint})"
    close = closest(name, known)
    if not close and name in ("id", "category"):
        close = "phase_id" if name == "id" else "task_category"
    return f" (did you mean {close!r}?)" if close else ""


def _describe(error: ErrorDetails, *, prefix: str, known: Sequence[str]) -> str:
    """One plain sentence for one pydantic error."""
    kind = error["type"]
    loc = tuple(error["loc"])
    field = _field_name(loc, prefix)
    if kind == "value_error":
        cause = error.get("ctx", {}).get("error")
        return str(cause) if cause is not None else error["msg"]
    if kind == "missing":
        return f"{field} is missing"
    if kind == "extra_forbidden":
        name = str(loc[-1]) if loc else "?"
        where = f" in [{prefix.rstrip('.')}]" if prefix else ""
        return f"unknown field {name!r}{where}{_suggestion(name, known)}"
    if kind == "string_type":
        return f"{field} must be a string"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"{field} must be an integer"
    if kind == "greater_than":
        return f"{field} must be a positive integer"
    if kind == "greater_than_equal":
        return f"{field} must be zero or more"
    if kind in ("list_type", "tuple_type"):
        return f"{field} must be a list of strings"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"{field} must be a table (TOML) or an object (JSON)"
    return f"{field}: {error['msg']}"


def _validate(
    model: type[_SectionT], data: object, *, prefix: str, problems: list[str]
) -> _SectionT | None:
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as exc:
        known = list(model.model_fields)
        problems.extend(_describe(e, prefix=prefix, known=known) for e in exc.errors())
        return None


def _default_paths(data: dict[str, object], problems: list[str]) -> list[str] | None:
    """[phase_defaults] paths as given (None when absent); bad ones are reported here, once."""
    raw = data.get("phase_defaults")
    if not isinstance(raw, dict) or "paths" not in raw:
        return None
    paths = _strings(raw["paths"])
    problems.extend(_bad_paths(paths, what="phase_defaults.paths:"))
    return paths


def _phase_label(position: int, raw: object) -> str:
    phase_id = raw.get("phase_id") if isinstance(raw, dict) else None
    if isinstance(phase_id, str) and phase_id.strip():
        return f"phase {position} (id {phase_id!r})"
    return f"phase {position} (no phase_id)"


def parse_seed_document(data: object, *, source: str, run_id: str | None = None) -> SeedRunSpec:
    """Validate a decoded seed file (a dict) into a spec; raise `SeedFileError` listing problems.

    `run_id`, when given, replaces the file's `run.id` (which may then be absent); it must
    follow the id rule (ConfigError otherwise).
    """
    if run_id is not None:
        check_run_id(run_id)
    if not isinstance(data, dict):
        raise SeedFileError(source, ["the top level must be a table (TOML) or an object (JSON)"])
    problems: list[str] = [
        f"unknown section {key!r}{_suggestion(str(key), _SECTIONS)}"
        for key in data
        if key not in _SECTIONS
    ]
    run = _validate(_RunSection, data.get("run"), prefix="run.", problems=problems)
    tier = _validate(_TierSection, data.get("tier"), prefix="tier.", problems=problems)
    defaults = _validate(
        _PhaseDefaults, data.get("phase_defaults"), prefix="phase_defaults.", problems=problems
    )
    chosen_id = run_id if run_id is not None else (run.id if run is not None else None)
    if run is not None and chosen_id is None:
        problems.append("run.id is missing (name the run in [run], or pass --run-id)")
    raw_phases = data.get("phases")
    phases: list[SeedPhase] = []
    if raw_phases is None or raw_phases == []:
        problems.append("the file has no phases (add [[phases]] tables, or a JSON phases list)")
    elif not isinstance(raw_phases, list):
        problems.append("phases must be a list of tables (TOML [[phases]]) or objects (JSON)")
    else:
        phases = _parse_phases(raw_phases, _default_paths(data, problems), problems)
        if run is not None and len(raw_phases) > run.max_phases:
            problems.append(
                f"run.max_phases is {run.max_phases}, but the file has {len(raw_phases)} phases"
            )
    if problems or run is None or tier is None or defaults is None or chosen_id is None:
        # Each None above was reported as a problem when its section failed to validate.
        raise SeedFileError(source, problems)
    return SeedRunSpec(
        run_id=chosen_id,
        description=run.description,
        token_cap=run.token_cap,
        max_phases=run.max_phases,
        max_duration_minutes=run.max_duration_minutes,
        tier_name=tier.name,
        tier_description=tier.description,
        tier_token_cap=tier.token_cap,
        ci_run_cap=tier.ci_run_cap,
        max_builder_attempts=defaults.max_builder_attempts,
        max_auditor_attempts=defaults.max_auditor_attempts,
        incident_token_cap=defaults.incident_token_cap,
        phases=phases,
    )


def _parse_phases(
    raw_phases: list[object], default_paths: list[str] | None, problems: list[str]
) -> list[SeedPhase]:
    phases: list[SeedPhase] = []
    first_position: dict[str, int] = {}
    known = list(_PhaseEntry.model_fields)
    for index, raw in enumerate(raw_phases):
        position = index + 1
        if not isinstance(raw, dict):
            problems.append(f"phase {position}: must be a table (TOML) or an object (JSON)")
            continue
        found: list[str] = []
        entry: _PhaseEntry | None = None
        try:
            entry = _PhaseEntry.model_validate(raw)
        except ValidationError as exc:
            found.extend(_describe(e, prefix="", known=known) for e in exc.errors())
        raw_id = raw.get("phase_id")
        if isinstance(raw_id, str):
            earlier = first_position.setdefault(raw_id, position)
            if earlier != position:
                found.append(f"phase_id {raw_id!r} is already used by phase {earlier}")
        found.extend(_path_problems(raw, default_paths))
        if found or entry is None:
            label = _phase_label(position, raw)
            problems.extend(f"{label}: {problem}" for problem in found)
            continue
        paths = entry.paths if entry.paths is not None else default_paths
        phases.append(
            SeedPhase(
                phase_id=entry.phase_id,
                name=entry.name,
                description=entry.description,
                task_category=entry.task_category,
                complexity=entry.complexity,
                scope=SeedScope(
                    paths=list(paths or []),
                    read_only_context=list(entry.read_only_context),
                    deliverables=list(entry.deliverables),
                ),
                phase_index=index,
            )
        )
    return phases


def parse_seed_text(
    text: str, *, fmt: SeedFormat, source: str, run_id: str | None = None
) -> SeedRunSpec:
    """Decode TOML or JSON text and validate it (see `parse_seed_document`)."""
    data: object
    if fmt == "toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SeedFileError(source, [f"not valid TOML: {exc}"]) from exc
        except RecursionError:
            raise SeedFileError(source, ["not valid TOML: nested too deeply"]) from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SeedFileError(
                source, [f"not valid JSON: {exc.msg} (at line {exc.lineno}, column {exc.colno})"]
            ) from exc
        except RecursionError:
            raise SeedFileError(source, ["not valid JSON: nested too deeply"]) from None
    return parse_seed_document(data, source=source, run_id=run_id)


def seed_format(path: Path) -> SeedFormat:
    """The format a seed file's extension names; refuse any other extension."""
    fmt = FORMATS_BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"{path} is neither a .toml nor a .json file.",
            hint="name the seed file *.toml or *.json: its extension decides how it is read",
        )
    return fmt


def load_seed_file(path: Path, *, run_id: str | None = None) -> SeedRunSpec:
    """Read and validate a user's seed file (TOML or JSON, by extension)."""
    fmt = seed_format(path)
    if not path.exists():
        raise ConfigError(f"no seed file at {path}.", hint="check the path given to --file")
    if path.is_dir():
        raise ConfigError(f"{path} is a directory, not a seed file.", hint="name the file itself")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text.", hint="save the seed file as UTF-8") from exc
    except OSError as exc:
        raise ConfigError(
            f"cannot read {path}: {exc.strerror or exc}.", hint="check its permissions"
        ) from exc
    return parse_seed_text(text, fmt=fmt, source=str(path), run_id=run_id)
