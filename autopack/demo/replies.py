"""What the simulated model writes: valid files for a phase's deliverables, read from its prompt.

The prompt is read the way a model reads it (autopack.executor.prompts builds it): the phase
line, the category and complexity line, the deliverables list, and the reply format asked for.
Python files parse, tests files are pytest files that pass on their own, Markdown is Markdown.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Final

_PHASE_LINE: Final = re.compile(r"^# Phase (?P<phase_id>\S+): (?P<name>.*)$", re.MULTILINE)
_GROUP_LINE: Final = re.compile(
    r"^Run (?P<run_id>\S+) · category (?P<category>\S+) · complexity (?P<complexity>\S+)$",
    re.MULTILINE,
)
_DELIVERABLE_LINE: Final = re.compile(r"^- (?P<path>\S+) — ")
_GOAL: Final = re.compile(r"^## Goal\n(?P<goal>.*?)\n\n## ", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class PromptFacts:
    """What the simulated model takes from one prompt."""

    phase_id: str
    run_id: str
    name: str
    category: str
    complexity: str
    goal: str
    deliverables: tuple[str, ...]
    ndjson: bool


def read_prompt(user: str) -> PromptFacts:
    """The facts of a phase prompt; unknown parts are left empty (the model still answers)."""
    phase = _PHASE_LINE.search(user)
    group = _GROUP_LINE.search(user)
    goal = _GOAL.search(user)
    deliverables: list[str] = []
    section = user.split("## Deliverables\n", 1)
    if len(section) == 2:
        for line in section[1].splitlines():
            if not line.strip():
                break
            match = _DELIVERABLE_LINE.match(line)
            if match:
                deliverables.append(match["path"])
    return PromptFacts(
        phase_id=phase["phase_id"] if phase else "unknown-phase",
        run_id=group["run_id"] if group else "unknown-run",
        name=phase["name"].strip() if phase else "",
        category=group["category"] if group else "unspecified",
        complexity=group["complexity"] if group else "unspecified",
        goal=goal["goal"].strip() if goal else "",
        deliverables=tuple(deliverables),
        ndjson="Reply with NDJSON" in user,
    )


def _identifier(path: str) -> str:
    stem = re.sub(r"\W+", "_", PurePosixPath(path).stem).strip("_").lower()
    return stem if stem and not stem[0].isdigit() else f"module_{stem}"


def python_module(path: str, facts: PromptFacts) -> str:
    name = _identifier(path)
    summary = (facts.name or "Simulated module").replace('"""', "'")
    return (
        f'"""{summary} (written by the simulated model for phase {facts.phase_id})."""\n\n'
        "from __future__ import annotations\n\n\n"
        f"def describe_{name}() -> str:\n"
        f'    """What this module is."""\n'
        f"    return {json.dumps(f'{name}: {facts.category}/{facts.complexity}')}\n\n\n"
        "def checksum(values: list[int]) -> int:\n"
        '    """A small pure function, so the module does something testable."""\n'
        "    return sum((index + 1) * value for index, value in enumerate(values)) % 65521\n"
    )


def pytest_file(path: str, facts: PromptFacts) -> str:
    name = _identifier(path)
    return (
        f'"""Tests for phase {facts.phase_id} (written by the simulated model)."""\n\n'
        "from __future__ import annotations\n\n\n"
        "def _checksum(values: list[int]) -> int:\n"
        "    return sum((index + 1) * value for index, value in enumerate(values)) % 65521\n\n\n"
        f"def test_{name}_checksum_of_nothing_is_zero() -> None:\n"
        "    assert _checksum([]) == 0\n\n\n"
        f"def test_{name}_checksum_weights_by_position() -> None:\n"
        "    assert _checksum([1, 2, 3]) == 14\n"
    )


def markdown_page(path: str, facts: PromptFacts) -> str:
    title = facts.name or PurePosixPath(path).stem.replace("_", " ").title()
    return (
        f"# {title}\n\n"
        f"_Written by the simulated model for phase `{facts.phase_id}` "
        f"({facts.category}, {facts.complexity})._\n\n"
        "## Goal\n\n"
        f"{facts.goal or 'No goal was given.'}\n\n"
        "## Notes\n\n"
        "- This page is demo output: the model that wrote it is simulated.\n"
    )


def file_for(path: str, facts: PromptFacts) -> str:
    """A valid file for one deliverable, chosen by its name."""
    pure = PurePosixPath(path)
    if pure.suffix == ".py":
        is_test = pure.name.startswith("test_") or pure.name.endswith("_test.py")
        return pytest_file(path, facts) if is_test else python_module(path, facts)
    if pure.suffix in (".md", ".markdown"):
        return markdown_page(path, facts)
    if pure.suffix == ".json":
        return json.dumps({"phase": facts.phase_id, "simulated": True}, indent=2) + "\n"
    return f"{facts.name or path}: written by the simulated model for {facts.phase_id}\n"


def reply_text(facts: PromptFacts, *, cut_off: bool) -> str:
    """The reply in the format the prompt asked for; a cut-off reply loses its end."""
    files = [{"path": path, "content": file_for(path, facts)} for path in facts.deliverables]
    if facts.ndjson:
        text = "\n".join(json.dumps(entry) for entry in files)
    else:
        text = json.dumps({"files": files})
    if cut_off:
        return text[: max(1, len(text) * 2 // 3)]
    return text


__all__ = ["PromptFacts", "file_for", "read_prompt", "reply_text"]
