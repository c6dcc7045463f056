"""Reading deliverables: flattening, path extraction, type flags and documentation features.

These are classification rules, not coefficients: they decide *which* coefficient applies, and
are the same for every coefficient set. The numbers live in `coefficients.py`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Final, Literal

ContextQuality = Literal["none", "some", "strong"]

_PATH_PATTERN: Final = re.compile(r"[a-zA-Z0-9_\-./]+\.[a-zA-Z0-9]+")
_EXTENSION_PATTERN: Final = re.compile(r"\.[a-zA-Z0-9]{2,4}")
_TRAILING_NOTE: Final = re.compile(r"\s*\([^)]*\)\s*$")
_VERB_PREFIXES: Final = ("create ", "modify ", "update ", "add ", "new file: ", "new: ")
_NEW_FILE_WORDS: Final = ("create", "new", "add")
_ACTION_WORDS: Final = ("create", "modify", "update", "add", "new")

_TEST_SUFFIXES: Final = ("_test.py", ".spec.ts", ".spec.tsx", ".test.ts", ".test.tsx")
_CONFIG_SUFFIXES: Final = (".yml", ".yaml", ".json", ".toml", ".txt", ".ini")
_MIGRATION_MARKERS: Final = ("alembic/versions", "migration")
_FRONTEND_COST_SUFFIXES: Final = (".tsx", ".jsx", ".vue", ".svelte")
_FRONTEND_LABEL_SUFFIXES: Final = (".tsx", ".jsx", ".vue")
_PYTHON_SUFFIXES: Final = (".py", ".pyi")

SOT_BASENAMES: Final[frozenset[str]] = frozenset(
    {"build_log.md", "build_history.md", "changelog.md", "history.md", "release_notes.md"}
)
"""Source-of-truth ledgers: append-only files that need the whole project's context."""

_API_WORDS: Final = ("api_reference", "api reference", "api.md", "endpoints", "rest api")
_EXAMPLE_WORDS: Final = ("examples.md", "example", "snippets", "sample code", "usage example")
_RESEARCH_WORDS: Final = (
    "from scratch",
    "create documentation for",
    "document the",
    "comprehensive",
    "investigate",
)
_USAGE_GUIDE_WORDS: Final = ("usage_guide", "user guide", "getting started", "tutorial")


def normalize_deliverables(deliverables: object) -> list[str]:
    """Flatten a phase's deliverables into a list of non-empty, stripped strings.

    `None` gives `[]`; a string gives `[string]`. Dicts contribute their values, lists and tuples
    their items in order, sets their items sorted (so the result does not depend on hash
    order), recursively; any other value is converted with `str()`. Blank strings are dropped.
    """
    flat: list[str] = []
    _collect(deliverables, flat)
    return flat


def _collect(value: object, into: list[str]) -> None:
    if value is None:
        return
    if isinstance(value, dict):
        for item in value.values():
            _collect(item, into)
        return
    if isinstance(value, list | tuple):
        for item in value:
            _collect(item, into)
        return
    if isinstance(value, set | frozenset):
        for item in sorted(value, key=str):
            _collect(item, into)
        return
    text = (value if isinstance(value, str) else str(value)).strip()
    if text:
        into.append(text)


def _slashed_lower(text: str) -> str:
    return text.strip().lower().replace("\\", "/")


def extract_path(deliverable: str) -> str:
    """The file path a deliverable names, e.g. `src/foo.py` in `Create src/foo.py (new file)`.

    The first run of path characters ending in an extension wins. Without one, a leading verb
    (`create `, `modify `, …) and a trailing `(…)` note are removed from the lower-cased text.
    """
    match = _PATH_PATTERN.search(deliverable)
    if match:
        return match.group(0)
    path = deliverable.lower()
    for prefix in _VERB_PREFIXES:
        if path.startswith(prefix):
            path = path[len(prefix) :]
    return _TRAILING_NOTE.sub("", path).strip()


def says_new(deliverable: str) -> bool:
    """Whether the text announces a new file: it contains `create`, `new` or `add` anywhere.

    A plain substring test, kept from the original: `address.py` therefore says "new".
    """
    lowered = deliverable.lower()
    return any(word in lowered for word in _NEW_FILE_WORDS)


@dataclass(frozen=True, slots=True)
class PathFlags:
    """What kind of file a deliverable path is (lower-cased, `/`-separated)."""

    test: bool
    doc: bool
    config_extension: bool
    migration: bool
    frontend_extension: bool
    python: bool
    sql: bool

    @property
    def config(self) -> bool:
        """Config files and migrations share the config costs."""
        return self.config_extension or self.migration


def path_flags(path: str) -> PathFlags:
    """Classify a deliverable path. `conftest.py` is not a test; `tests/` anywhere is."""
    norm = _slashed_lower(path)
    basename = PurePosixPath(norm).name
    return PathFlags(
        test=(
            norm.startswith("tests/")
            or "/tests/" in norm
            or basename.startswith("test_")
            or basename.endswith(_TEST_SUFFIXES)
        ),
        doc=norm.startswith("docs/") or norm.endswith(".md"),
        config_extension=norm.endswith(_CONFIG_SUFFIXES),
        migration=any(marker in norm for marker in _MIGRATION_MARKERS),
        frontend_extension=norm.endswith(_FRONTEND_COST_SUFFIXES),
        python=norm.endswith(_PYTHON_SUFFIXES),
        sql=norm.endswith(".sql"),
    )


def breakdown_label(path: str, *, is_new: bool) -> str:
    """The breakdown key a deliverable's cost is reported under, e.g. `test_new`.

    The label order is fixed (test, doc, config, frontend, backend) and independent of the cost
    precedence; migrations and `.svelte` files are reported as backend, as the original did.
    """
    norm = _slashed_lower(path)
    flags = path_flags(norm)
    if flags.test:
        kind = "test"
    elif flags.doc:
        kind = "doc"
    elif flags.config_extension:
        kind = "config"
    elif norm.endswith(_FRONTEND_LABEL_SUFFIXES):
        kind = "frontend"
    else:
        kind = "backend"
    return f"{kind}_{'new' if is_new else 'modify'}"


def is_doc_deliverable(deliverable: str) -> bool:
    """A documentation deliverable: its text starts with `docs/` or ends with `.md`."""
    norm = _slashed_lower(deliverable)
    return norm.startswith("docs/") or norm.endswith(".md")


def is_pure_doc_phase(deliverables: Sequence[str]) -> bool:
    """Whether there is at least one deliverable and every one is documentation."""
    return bool(deliverables) and all(is_doc_deliverable(d) for d in deliverables)


def sot_basename(deliverable: str) -> str | None:
    """The lower-cased basename if the deliverable is a source-of-truth ledger, else `None`."""
    name = PurePosixPath(_slashed_lower(deliverable)).name
    return name if name in SOT_BASENAMES else None


def first_sot_file(deliverables: Iterable[str]) -> str | None:
    """The lower-cased basename of the first SOT ledger among the deliverables, if any."""
    for deliverable in deliverables:
        name = sot_basename(deliverable)
        if name is not None:
            return name
    return None


@dataclass(frozen=True, slots=True)
class DocFeatures:
    """Signals that a documentation phase needs investigation, not just writing."""

    api_reference_required: bool
    examples_required: bool
    research_required: bool
    usage_guide_required: bool

    @property
    def is_synthesis(self) -> bool:
        """API docs, or examples that need research or go with a usage guide."""
        return (
            self.api_reference_required
            or (self.examples_required and self.research_required)
            or (self.examples_required and self.usage_guide_required)
        )


def doc_features(deliverables: Sequence[str], task_description: str = "") -> DocFeatures:
    """Detect documentation features in the deliverables and the task description.

    Research is judged on the task description alone; the other features on both together.
    """
    task = (task_description or "").lower()
    combined = f"{' '.join(deliverables).lower()} {task}"
    return DocFeatures(
        api_reference_required=any(word in combined for word in _API_WORDS),
        examples_required=any(word in combined for word in _EXAMPLE_WORDS),
        research_required=any(word in task for word in _RESEARCH_WORDS),
        usage_guide_required=any(word in combined for word in _USAGE_GUIDE_WORDS),
    )


def context_quality(scope_paths: Sequence[str] | None, *, strong_above: int) -> ContextQuality:
    """How much context the phase's scope gives: `none`, `some`, or `strong` (> strong_above)."""
    if not scope_paths:
        return "none"
    return "strong" if len(scope_paths) > strong_above else "some"


def names_file(deliverable: str) -> bool:
    """Whether the text contains something that looks like a file extension (`.py`, `.yaml`)."""
    return _EXTENSION_PATTERN.search(deliverable) is not None


def names_action(deliverable: str) -> bool:
    """Whether the text contains an action word: create, modify, update, add or new."""
    lowered = deliverable.lower()
    return any(word in lowered for word in _ACTION_WORDS)
