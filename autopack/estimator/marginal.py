"""The marginal cost of one deliverable: its kind, new or modified, and the existing file's size.

The workspace is read on every call (no cache), so an estimate always reflects the files as
they are now.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePath

from autopack.estimator.coefficients import DeliverableKind, FileComplexityModel, MarginalModel
from autopack.estimator.deliverables import (
    PathFlags,
    breakdown_label,
    extract_path,
    path_flags,
    says_new,
)


@dataclass(frozen=True, slots=True)
class DeliverableCost:
    """How one deliverable was costed."""

    deliverable: str
    path: str
    kind: DeliverableKind
    is_new: bool
    multiplier: float
    tokens: int
    label: str


def existing_file(workspace: Path | None, path: str) -> Path | None:
    """The deliverable's file inside the workspace, if it exists there.

    Without a workspace nothing exists. Absolute paths and paths that resolve outside the
    workspace (via `..` or a symlink) are treated as not existing: the estimator never reads
    outside the workspace.
    """
    if workspace is None or not path or PurePath(path).is_absolute():
        return None
    candidate = workspace / path
    try:
        inside = candidate.resolve().is_relative_to(workspace.resolve())
        return candidate if inside and candidate.exists() else None
    except (OSError, ValueError):
        return None


def _step_count(lines: list[str]) -> tuple[int, int, int]:
    code = [line for line in lines if line.strip() and not line.strip().startswith("#")]
    imports = sum(1 for line in code if "import " in line)
    nesting = max((len(line) - len(line.lstrip()) for line in code), default=0)
    return len(code), imports, nesting


def file_complexity_multiplier(file: Path, model: FileComplexityModel) -> float:
    """Scale a modification's cost by the existing file's size, imports and nesting.

    Counts non-blank lines not starting with `#`, those containing `import `, and the deepest
    indentation among them; multiplies the three step factors and clamps the product. A file
    that cannot be read gives 1.0.
    """
    try:
        text = file.read_text(encoding="utf-8", errors="ignore")
    except (OSError, ValueError):
        return 1.0
    loc, imports, nesting = _step_count(text.split("\n"))
    product = (
        model.lines_of_code.factor_for(loc)
        * model.imports.factor_for(imports)
        * model.nesting.factor_for(nesting)
    )
    return max(model.minimum, min(model.maximum, product))


def _is_kind(kind: DeliverableKind, flags: PathFlags, frontend_phase: bool) -> bool:
    match kind:
        case "test":
            return flags.test
        case "doc":
            return flags.doc
        case "config":
            return flags.config
        case "frontend":
            return flags.frontend_extension or frontend_phase
        case "python":
            return flags.python
        case "sql":
            return flags.sql
        case "backend":
            return True


def deliverable_kind(
    path: str, *, category_key: str, precedence: list[DeliverableKind]
) -> DeliverableKind:
    """The first kind in `precedence` the path matches, else `backend`.

    Every file of a `frontend` phase matches the frontend kind.
    """
    flags = path_flags(path)
    frontend_phase = category_key == "frontend"
    for kind in precedence:
        if _is_kind(kind, flags, frontend_phase):
            return kind
    return "backend"


def cost_deliverable(
    deliverable: str,
    *,
    category_key: str,
    marginal: MarginalModel,
    workspace: Path | None,
) -> DeliverableCost:
    """Cost one deliverable.

    It is new if its text says so (`create`/`new`/`add`) or its file does not exist in the
    workspace; otherwise it is a modification, costed at the kind's modify rate times the
    existing file's complexity multiplier (rounded down).
    """
    path = extract_path(deliverable)
    kind = deliverable_kind(path, category_key=category_key, precedence=marginal.precedence)
    rates = marginal.costs[kind]
    existing = None if says_new(deliverable) else existing_file(workspace, path)
    is_new = existing is None
    multiplier = 1.0
    tokens = rates.new
    if existing is not None:
        multiplier = file_complexity_multiplier(existing, marginal.file_complexity)
        tokens = int(rates.modify * multiplier)
    return DeliverableCost(
        deliverable=deliverable,
        path=path,
        kind=kind,
        is_new=is_new,
        multiplier=multiplier,
        tokens=tokens,
        label=breakdown_label(path, is_new=is_new),
    )
