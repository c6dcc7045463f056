"""Build the builder LLM's prompt for one phase.

The prompt gives the model everything it needs to write complete files, and nothing it could
misuse:

- the goal (the phase's description), its name, category and complexity;
- the scope paths: the only places it may write;
- the deliverables, each marked new or existing — an existing one comes with its **current
  content**, so a modification is never written blind;
- the read-only context files, with their content; a missing one is named as missing, a path
  outside the workspace is refused (its content is never read), a binary file or a directory
  is named but not inlined;
- the exact reply format: one JSON object `{"files": [{"path", "content"}]}`, or for phases
  with `NDJSON_MIN_DELIVERABLES` (5) or more deliverables NDJSON, one `{"path", "content"}`
  object per line, so that a truncated reply loses only its last file.

Large files are cut at a line boundary near a cap (`max_deliverable_chars`, 200 000, and
`max_context_chars`, 50 000 characters), with a marker line *outside* the code fence saying
how much is shown. Fences are made longer than any backtick run inside the file, so a file
that itself contains Markdown fences is shown intact.
"""

from __future__ import annotations

import codecs
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final, Literal

from autopack.errors import AutopackError
from autopack.estimator.categories import normalize_category
from autopack.estimator.deliverables import extract_path, normalize_deliverables
from autopack.executor.output import clean_path
from autopack.executor.verify import is_test_file
from autopack.executor.workspace import normalize_relative_path

ReplyFormatName = Literal["json", "ndjson"]

NDJSON_MIN_DELIVERABLES: Final = 5
"""From this many deliverables on, the model is asked for NDJSON instead of one JSON object."""
MAX_DELIVERABLE_CHARS: Final = 200_000
MAX_CONTEXT_CHARS: Final = 50_000
_BINARY_SNIFF_BYTES: Final = 8192
_DIRECTORY_LISTING_LIMIT: Final = 50
_BACKTICK_RUN: Final = re.compile(r"`+")
_LANGUAGES: Final[dict[str, str]] = {
    ".py": "python",
    ".pyi": "python",
    ".md": "markdown",
    ".json": "json",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".toml": "toml",
    ".ini": "ini",
    ".cfg": "ini",
    ".js": "javascript",
    ".jsx": "jsx",
    ".ts": "typescript",
    ".tsx": "tsx",
    ".sh": "bash",
    ".sql": "sql",
    ".html": "html",
    ".css": "css",
    ".txt": "text",
}

SYSTEM_PROMPT: Final = """\
You are the builder of Autopack, an autonomous coding agent. You carry out one phase of work \
on a project by writing complete files.

Rules:
- Write every deliverable of the phase, complete and working. Never return a diff, a patch, \
a placeholder or an excerpt: each file you return replaces the whole file on disk.
- Write only under the phase's scope paths. Paths are relative to the workspace root; never \
use absolute paths or "..".
- Read-only context files are for reference: do not return them.
- When a deliverable already exists, its current content is shown: keep what the goal does \
not ask you to change.
- Reply in exactly the format the phase asks for, with nothing before or after it."""


class PhaseSpecError(AutopackError):
    """A phase's scope cannot be read (not JSON, not an object)."""


def deliverable_paths(deliverables: object) -> list[str]:
    """The file paths a phase's deliverables name, flattened, in order, without duplicates.

    The deliverables are flattened with `normalize_deliverables` (a dict of lists is fine). An
    entry without whitespace is a path (`./` and quotes removed, `\\` → `/`); an entry with
    words (`Create src/app.py (new file)`) contributes the path it names, or stays as written
    when it names none (verification will then report it as missing).
    """
    paths: list[str] = []
    for entry in normalize_deliverables(deliverables):
        if any(char.isspace() for char in entry):
            named = extract_path(entry)
            path = clean_path(named) if "." in named or "/" in named else entry
        else:
            path = clean_path(entry)
        if path and path not in paths:
            paths.append(path)
    return paths


def _string_list(value: object) -> tuple[str, ...]:
    seen: list[str] = []
    for item in normalize_deliverables(value):
        if item not in seen:
            seen.append(item)
    return tuple(seen)


@dataclass(frozen=True, slots=True)
class PhaseSpec:
    """What the executor needs to know about one phase, read from its row and scope JSON."""

    run_id: str
    phase_id: str
    name: str
    description: str
    """The goal, in the operator's words (the phase's `description` column)."""
    task_category: str | None
    complexity: str | None
    scope_paths: tuple[str, ...]
    deliverables: tuple[str, ...]
    """Paths relative to the workspace root (see `deliverable_paths`)."""
    read_only_context: tuple[str, ...] = ()

    @classmethod
    def from_scope(
        cls,
        *,
        run_id: str,
        phase_id: str,
        name: str | None,
        description: str | None,
        task_category: str | None,
        complexity: str | None,
        scope: Mapping[str, object] | str | None,
    ) -> PhaseSpec:
        """Build a spec from a phase row's fields and its `scope` (a dict or its JSON text).

        `scope` holds `paths`, `read_only_context` and `deliverables` (each a string, a list,
        or a dict of lists); missing keys are empty. Raises `PhaseSpecError` when `scope` is
        text that is not a JSON object.
        """
        data: Mapping[str, object]
        if scope is None:
            data = {}
        elif isinstance(scope, str):
            try:
                decoded = json.loads(scope) if scope.strip() else {}
            except json.JSONDecodeError as exc:
                raise PhaseSpecError(
                    f"phase {run_id}/{phase_id} has a scope that is not valid JSON ({exc.msg})",
                    hint="fix the phase's scope column: a JSON object with paths, "
                    "read_only_context and deliverables",
                ) from exc
            if not isinstance(decoded, dict):
                raise PhaseSpecError(
                    f"phase {run_id}/{phase_id} has a scope that is not a JSON object"
                )
            data = decoded
        else:
            data = scope
        return cls(
            run_id=run_id,
            phase_id=phase_id,
            name=name or phase_id,
            description=description or "",
            task_category=task_category,
            complexity=complexity,
            scope_paths=_string_list(data.get("paths")),
            deliverables=tuple(deliverable_paths(data.get("deliverables"))),
            read_only_context=_string_list(data.get("read_only_context")),
        )

    @property
    def is_tests_phase(self) -> bool:
        """Whether the phase's category is `tests` (or an alias such as `testing`)."""
        return normalize_category(self.task_category) == "tests"

    @property
    def reply_format(self) -> ReplyFormatName:
        """`ndjson` from `NDJSON_MIN_DELIVERABLES` deliverables on, else `json`."""
        return "ndjson" if len(self.deliverables) >= NDJSON_MIN_DELIVERABLES else "json"

    @property
    def test_files(self) -> list[str]:
        """The deliverables pytest would collect (`test_*.py`, `*_test.py`)."""
        return [path for path in self.deliverables if is_test_file(path)]


@dataclass(frozen=True, slots=True)
class BuiltPrompt:
    """The prompt for one builder call, and what went into it."""

    system: str
    user: str
    reply_format: ReplyFormatName
    existing_deliverables: tuple[str, ...] = ()
    """Deliverables that already exist; their current content is in the prompt."""
    missing_context: tuple[str, ...] = ()
    """Read-only context files that could not be included (missing, refused, unreadable)."""
    truncated_files: tuple[str, ...] = ()
    """Files shown only in part because they exceed the cap."""


FileStatus = Literal["ok", "missing", "outside", "directory", "binary", "unreadable"]


@dataclass(frozen=True, slots=True)
class _FileView:
    status: FileStatus
    text: str = ""
    size: int = 0
    truncated: bool = False
    note: str = ""


def _read_for_prompt(root: Path, path: str, cap: int) -> _FileView:
    try:
        relative = normalize_relative_path(path)
    except ValueError as exc:
        return _FileView("outside", note=str(exc))
    target = root / relative
    real = Path(os.path.realpath(target))
    if real != root and root not in real.parents:
        return _FileView("outside", note="it leads outside the workspace")
    if target.is_dir():
        return _FileView("directory", note=_listing(target))
    try:
        size = target.stat().st_size
        with target.open("rb") as handle:
            data = handle.read(cap * 4 + 4)
    except FileNotFoundError:
        return _FileView("missing")
    except OSError as exc:
        return _FileView("unreadable", note=exc.strerror or str(exc))
    if b"\0" in data[:_BINARY_SNIFF_BYTES]:
        return _FileView("binary", size=size)
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        text = decoder.decode(data, final=len(data) >= size)
    except UnicodeDecodeError:
        return _FileView("binary", size=size)
    if len(text) <= cap and len(data) >= size:
        return _FileView("ok", text=text, size=size)
    cut = text[:cap]
    newline = cut.rfind("\n")
    if newline > cap // 2:
        cut = cut[: newline + 1]
    return _FileView("ok", text=cut, size=size, truncated=True)


def _listing(directory: Path) -> str:
    try:
        names = sorted(
            entry.name + ("/" if entry.is_dir() else "") for entry in directory.iterdir()
        )
    except OSError as exc:
        return f"cannot be listed: {exc.strerror or exc}"
    if not names:
        return "an empty directory"
    shown = ", ".join(names[:_DIRECTORY_LISTING_LIMIT])
    more = len(names) - _DIRECTORY_LISTING_LIMIT
    return f"a directory (contents not inlined): {shown}" + (f", … {more} more" if more > 0 else "")


def _fenced(path: str, text: str) -> str:
    longest = max((len(run) for run in _BACKTICK_RUN.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    language = _LANGUAGES.get(PurePosixPath(path).suffix.lower(), "")
    body = text if text.endswith("\n") or not text else text + "\n"
    return f"{fence}{language}\n{body}{fence}"


def _truncation_marker(view: _FileView) -> str:
    return (
        f"[autopack: file truncated — showing the first {len(view.text)} characters "
        f"of {view.size} bytes]"
    )


def _reply_instructions(phase: PhaseSpec) -> str:
    example = phase.deliverables[0] if phase.deliverables else "path/to/file.py"
    if phase.reply_format == "ndjson":
        sample = "\n".join(
            json.dumps({"path": path, "content": "<the complete file>"})
            for path in (phase.deliverables[:2] or (example,))
        )
        return (
            "Reply with NDJSON: one JSON object per line, one line per file, and nothing else "
            "(no prose, no Markdown fence, no surrounding array):\n\n"
            f"{sample}\n\n"
            '- "path": relative to the workspace root, under one of the scope paths.\n'
            '- "content": the complete file as one JSON string (newlines escaped as \\n, '
            'quotes as \\"), so each file stays on a single line.\n'
            "- Write the files one after another; if your reply is cut off, only the last "
            "line is lost."
        )
    sample = json.dumps({"files": [{"path": example, "content": "<the complete file>"}]})
    return (
        "Reply with one JSON object and nothing else (no prose, no Markdown fence):\n\n"
        f"{sample}\n\n"
        '- "files": one entry per file you write, every deliverable included.\n'
        '- "path": relative to the workspace root, under one of the scope paths.\n'
        '- "content": the complete file as a JSON string (newlines escaped as \\n, quotes '
        'as \\").'
    )


def build_prompt(
    phase: PhaseSpec,
    workspace: Path,
    *,
    max_deliverable_chars: int = MAX_DELIVERABLE_CHARS,
    max_context_chars: int = MAX_CONTEXT_CHARS,
) -> BuiltPrompt:
    """Build the system and user prompt for `phase`, reading files under `workspace`.

    Reads only: deliverables that exist and read-only context files, each inside the
    workspace. Never raises for a missing, unreadable or refused file; it is named as such.
    """
    root = workspace.resolve()
    existing: list[str] = []
    missing: list[str] = []
    truncated: list[str] = []

    category = normalize_category(phase.task_category) or "unspecified"
    complexity = phase.complexity or "unspecified"
    lines = [
        f"# Phase {phase.phase_id}: {phase.name}",
        f"Run {phase.run_id} · category {category} · complexity {complexity}",
        "",
        "## Goal",
        phase.description.strip() or phase.name,
        "",
        "## Scope",
    ]
    if phase.scope_paths:
        lines.append("Create or replace files only under these paths (relative to the root):")
        lines.extend(f"- {path}" for path in phase.scope_paths)
    else:
        lines.append("This phase has no scope paths: no file can be written.")
    lines += ["", "## Deliverables"]
    if phase.deliverables:
        lines.append("Return every one of these files, complete:")
    else:
        lines.append("The phase names no deliverable files; write what the goal needs.")
    shown: list[tuple[str, _FileView]] = []
    for path in phase.deliverables:
        view = _read_for_prompt(root, path, max_deliverable_chars)
        if view.status == "ok":
            existing.append(path)
            shown.append((path, view))
            lines.append(f"- {path} — exists; current content below. Return the whole file.")
        elif view.status == "missing":
            lines.append(f"- {path} — new file (does not exist yet)")
        elif view.status == "binary":
            lines.append(f"- {path} — exists, binary ({view.size} bytes); not shown")
        else:
            detail = f": {view.note}" if view.note else ""
            lines.append(f"- {path} — {view.status}{detail}")
    if phase.is_tests_phase:
        tests = " ".join(phase.test_files) or "(none of the deliverables is a test file)"
        lines += [
            "",
            f"The tests will be run from the workspace root with `python -m pytest -q {tests}`; "
            "they must pass against the code as it is.",
        ]
    for path, view in shown:
        lines += ["", f"### Current content of {path}", _fenced(path, view.text)]
        if view.truncated:
            truncated.append(path)
            lines.append(_truncation_marker(view))

    context = [path for path in phase.read_only_context if path not in phase.deliverables]
    if context:
        lines += ["", "## Read-only context", "For reference only: do not return these files."]
    for path in context:
        view = _read_for_prompt(root, path, max_context_chars)
        if view.status == "ok":
            lines += ["", f"### {path}", _fenced(path, view.text)]
            if view.truncated:
                truncated.append(path)
                lines.append(_truncation_marker(view))
            continue
        if view.status == "directory":
            lines += ["", f"### {path}", f"({view.note})"]
            continue
        missing.append(path)
        reason = {
            "missing": "missing: it does not exist in the workspace",
            "outside": f"not included: {view.note}",
            "binary": f"not included: a binary file ({view.size} bytes)",
            "unreadable": f"not included: cannot be read ({view.note})",
        }.get(view.status, view.status)
        lines += ["", f"### {path}", f"({reason})"]

    lines += ["", "## Reply format", _reply_instructions(phase)]
    return BuiltPrompt(
        system=SYSTEM_PROMPT,
        user="\n".join(lines) + "\n",
        reply_format=phase.reply_format,
        existing_deliverables=tuple(existing),
        missing_context=tuple(missing),
        truncated_files=tuple(truncated),
    )


__all__ = [
    "MAX_CONTEXT_CHARS",
    "MAX_DELIVERABLE_CHARS",
    "NDJSON_MIN_DELIVERABLES",
    "SYSTEM_PROMPT",
    "BuiltPrompt",
    "PhaseSpec",
    "PhaseSpecError",
    "ReplyFormatName",
    "build_prompt",
    "deliverable_paths",
]
