"""build_prompt and PhaseSpec: goal, scope, deliverables with current content, context, format."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from autopack.errors import AutopackError
from autopack.executor.output import parse_reply
from autopack.executor.prompts import (
    NDJSON_MIN_DELIVERABLES,
    SYSTEM_PROMPT,
    PhaseSpec,
    PhaseSpecError,
    build_prompt,
    deliverable_paths,
)

UTILS = "examples/telemetry_utils"
STRING_HELPER = "def capitalize_words(text: str) -> str:\n    return text.title()\n"

# telemetry-p6-string-tests from the seed run (original spec §4).
SEED_SCOPE: dict[str, object] = {
    "paths": [f"{UTILS}/"],
    "read_only_context": [f"{UTILS}/string_helper.py"],
    "deliverables": [f"{UTILS}/test_string_helper.py", f"{UTILS}/conftest.py"],
}


def _phase(scope: Mapping[str, object] | str | None = None, **overrides: str) -> PhaseSpec:
    fields = {
        "run_id": "telemetry-collection-v4",
        "phase_id": "telemetry-p6-string-tests",
        "name": "String helper tests",
        "description": "Create comprehensive tests for string_helper module with fixtures",
        "task_category": "tests",
        "complexity": "medium",
    }
    fields.update(overrides)
    return PhaseSpec.from_scope(scope=SEED_SCOPE if scope is None else scope, **fields)


def _write(root: Path, relative: str, content: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")


# --- PhaseSpec ----------------------------------------------------------------------------


def test_phase_spec_from_seed_scope() -> None:
    phase = _phase()
    assert phase.scope_paths == (f"{UTILS}/",)
    assert phase.deliverables == (f"{UTILS}/test_string_helper.py", f"{UTILS}/conftest.py")
    assert phase.read_only_context == (f"{UTILS}/string_helper.py",)
    assert phase.is_tests_phase
    assert phase.test_files == [f"{UTILS}/test_string_helper.py"]
    assert phase.reply_format == "json"


def test_phase_spec_from_json_text_and_dict_of_lists() -> None:
    scope = json.dumps(
        {
            "paths": f"{UTILS}/",
            "deliverables": {"code": [f"{UTILS}/a.py"], "tests": [f"{UTILS}/test_a.py"]},
        }
    )
    phase = _phase(scope, task_category="testing")
    assert phase.scope_paths == (f"{UTILS}/",)
    assert phase.deliverables == (f"{UTILS}/a.py", f"{UTILS}/test_a.py")
    assert phase.read_only_context == ()
    assert phase.is_tests_phase  # `testing` is the same category as `tests`


def test_phase_spec_without_scope_or_name() -> None:
    phase = PhaseSpec.from_scope(
        run_id="r",
        phase_id="p",
        name=None,
        description=None,
        task_category=None,
        complexity=None,
        scope=None,
    )
    assert phase.name == "p"
    assert phase.description == ""
    assert phase.scope_paths == phase.deliverables == phase.read_only_context == ()
    assert not phase.is_tests_phase


@pytest.mark.parametrize("scope", ["{not json", "[1, 2]"])
def test_phase_spec_rejects_unreadable_scope(scope: str) -> None:
    with pytest.raises(PhaseSpecError, match="telemetry-collection-v4/telemetry-p6") as caught:
        _phase(scope)
    assert isinstance(caught.value, AutopackError)


def test_deliverable_paths_extracts_paths_from_words() -> None:
    assert deliverable_paths(
        [
            "Create src/app.py (new file)",
            "./src/util.py",
            "src\\win.py",
            "src/app.py",
            "Update the documentation",
        ]
    ) == ["src/app.py", "src/util.py", "src/win.py", "Update the documentation"]


def test_reply_format_switches_to_ndjson_at_five_deliverables() -> None:
    four = _phase({"paths": ["p/"], "deliverables": [f"p/m{i}.py" for i in range(4)]})
    five = _phase({"paths": ["p/"], "deliverables": [f"p/m{i}.py" for i in range(5)]})
    assert NDJSON_MIN_DELIVERABLES == 5
    assert four.reply_format == "json"
    assert five.reply_format == "ndjson"


# --- build_prompt -------------------------------------------------------------------------


def test_prompt_states_goal_scope_deliverables_and_context(tmp_path: Path) -> None:
    _write(tmp_path, f"{UTILS}/string_helper.py", STRING_HELPER)
    prompt = build_prompt(_phase(), tmp_path)
    assert prompt.system == SYSTEM_PROMPT
    user = prompt.user
    assert "Create comprehensive tests for string_helper module with fixtures" in user
    assert "# Phase telemetry-p6-string-tests: String helper tests" in user
    assert "category tests · complexity medium" in user
    assert f"- {UTILS}/\n" in user
    assert f"- {UTILS}/test_string_helper.py — new file (does not exist yet)" in user
    assert f"- {UTILS}/conftest.py — new file (does not exist yet)" in user
    assert f"### {UTILS}/string_helper.py\n```python\n{STRING_HELPER}```" in user
    assert f"python -m pytest -q {UTILS}/test_string_helper.py" in user
    assert prompt.existing_deliverables == ()
    assert prompt.missing_context == ()
    assert prompt.truncated_files == ()


def test_existing_deliverable_is_shown_with_current_content(tmp_path: Path) -> None:
    conftest = "import pytest\n\n\n@pytest.fixture\ndef sample() -> str:\n    return 'a b'\n"
    _write(tmp_path, f"{UTILS}/conftest.py", conftest)
    prompt = build_prompt(_phase(), tmp_path)
    assert prompt.existing_deliverables == (f"{UTILS}/conftest.py",)
    assert f"- {UTILS}/conftest.py — exists; current content below." in prompt.user
    assert f"### Current content of {UTILS}/conftest.py\n```python\n{conftest}```" in prompt.user


def test_missing_and_refused_context_files_are_named_not_errors(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (tmp_path / "secret.txt").write_text("TOP SECRET\n")
    (ws / "leak.txt").symlink_to(tmp_path / "secret.txt")
    scope = {
        "paths": ["p/"],
        "deliverables": ["p/a.py"],
        "read_only_context": ["p/missing.py", "../secret.txt", "/etc/hostname", "leak.txt"],
    }
    prompt = build_prompt(_phase(scope), ws)
    assert prompt.missing_context == ("p/missing.py", "../secret.txt", "/etc/hostname", "leak.txt")
    assert "### p/missing.py\n(missing: it does not exist in the workspace)" in prompt.user
    assert "### ../secret.txt\n(not included: '..' is not allowed in a path)" in prompt.user
    assert "### /etc/hostname\n(not included: absolute paths are not allowed)" in prompt.user
    assert "### leak.txt\n(not included: it leads outside the workspace)" in prompt.user
    assert "TOP SECRET" not in prompt.user


def test_binary_and_directory_context(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "blob.bin").write_bytes(b"\x00\x01\x02" * 10)
    (tmp_path / "data" / "notes.txt").write_text("n\n")
    scope = {
        "paths": ["p/"],
        "deliverables": ["p/a.py"],
        "read_only_context": ["data", "data/blob.bin"],
    }
    prompt = build_prompt(_phase(scope), tmp_path)
    assert "### data\n(a directory (contents not inlined): blob.bin, notes.txt)" in prompt.user
    assert "### data/blob.bin\n(not included: a binary file (30 bytes))" in prompt.user
    assert prompt.missing_context == ("data/blob.bin",)


def test_large_files_are_capped_with_a_marker_outside_the_fence(tmp_path: Path) -> None:
    big = "".join(f"line {index:05d}\n" for index in range(2000))  # 22 000 characters
    _write(tmp_path, "p/big.py", big)
    _write(tmp_path, "p/context.txt", big)
    scope = {"paths": ["p/"], "deliverables": ["p/big.py"], "read_only_context": ["p/context.txt"]}
    prompt = build_prompt(
        _phase(scope), tmp_path, max_deliverable_chars=5000, max_context_chars=1000
    )
    assert prompt.truncated_files == ("p/big.py", "p/context.txt")
    assert "line 00000" in prompt.user
    assert "line 01999" not in prompt.user
    assert "[autopack: file truncated — showing the first 4994 characters of 22000 bytes]" in (
        prompt.user
    )
    assert "showing the first 990 characters of 22000 bytes]" in prompt.user
    # The marker follows the closing fence, so a model copying the block does not copy it.
    assert "```\n[autopack: file truncated" in prompt.user


def test_fence_is_longer_than_any_backtick_run_in_the_file(tmp_path: Path) -> None:
    readme = "# Usage\n\n```python\nprint('hi')\n```\n"
    _write(tmp_path, "p/README.md", readme)
    scope = {"paths": ["p/"], "deliverables": ["p/README.md"]}
    prompt = build_prompt(_phase(scope, task_category="docs"), tmp_path)
    assert f"````markdown\n{readme}````" in prompt.user
    assert "pytest" not in prompt.user


def test_json_reply_format_instructions_and_example_parse(tmp_path: Path) -> None:
    prompt = build_prompt(_phase(), tmp_path)
    assert prompt.reply_format == "json"
    assert "Reply with one JSON object and nothing else" in prompt.user
    example = next(line for line in prompt.user.splitlines() if line.startswith('{"files"'))
    parsed = parse_reply(example)
    assert parsed.format == "json"
    assert parsed.paths == [f"{UTILS}/test_string_helper.py"]


def test_ndjson_reply_format_for_five_or_more_deliverables(tmp_path: Path) -> None:
    scope = {"paths": ["p/"], "deliverables": [f"p/m{i}.py" for i in range(6)]}
    prompt = build_prompt(_phase(scope, task_category="implementation"), tmp_path)
    assert prompt.reply_format == "ndjson"
    assert "Reply with NDJSON: one JSON object per line" in prompt.user
    examples = [line for line in prompt.user.splitlines() if line.startswith('{"path"')]
    assert len(examples) == 2
    parsed = parse_reply("\n".join(examples))
    assert parsed.format == "ndjson"
    assert parsed.paths == ["p/m0.py", "p/m1.py"]


def test_context_that_is_also_a_deliverable_is_shown_once(tmp_path: Path) -> None:
    _write(tmp_path, "p/a.py", "A = 1\n")
    scope = {"paths": ["p/"], "deliverables": ["p/a.py"], "read_only_context": ["p/a.py"]}
    prompt = build_prompt(_phase(scope), tmp_path)
    assert prompt.user.count("A = 1") == 1
    assert "## Read-only context" not in prompt.user


def test_phase_without_scope_paths_says_nothing_can_be_written(tmp_path: Path) -> None:
    prompt = build_prompt(_phase({"deliverables": ["a.py"]}), tmp_path)
    assert "This phase has no scope paths: no file can be written." in prompt.user
