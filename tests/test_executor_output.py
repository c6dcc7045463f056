"""parse_reply: every accepted reply format, truncation, garbage, and the path-comment rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autopack.executor.output import ReplyFile, clean_path, looks_like_path, parse_reply

APP = "def main() -> int:\n    return 0\n"
TEST = "from app import main\n\n\ndef test_main() -> None:\n    assert main() == 0\n"


def _files_json(*items: tuple[str, str]) -> str:
    return json.dumps({"files": [{"path": path, "content": content} for path, content in items]})


def _ndjson(*items: tuple[str, str]) -> str:
    return "\n".join(json.dumps({"path": path, "content": content}) for path, content in items)


# --- JSON ---------------------------------------------------------------------------------


def test_bare_json_object() -> None:
    reply = parse_reply(_files_json(("src/app.py", APP), ("tests/test_app.py", TEST)))
    assert reply.ok
    assert reply.format == "json"
    assert reply.files == [ReplyFile("src/app.py", APP), ReplyFile("tests/test_app.py", TEST)]
    assert reply.problems == []
    assert reply.failure_reason is None


def test_bare_json_with_surrounding_whitespace_keeps_content_exact() -> None:
    content = "  indented first line\n\ttab\r\nwindows line\n"
    reply = parse_reply("\n\n  " + _files_json(("a/b.txt", content)) + "  \n")
    assert reply.files == [ReplyFile("a/b.txt", content)]


def test_json_files_as_mapping_and_bare_list_and_single_object() -> None:
    mapping = parse_reply(json.dumps({"files": {"src/a.py": "A = 1\n"}}))
    assert mapping.files == [ReplyFile("src/a.py", "A = 1\n")]
    bare_list = parse_reply(json.dumps([{"path": "src/a.py", "content": "A = 1\n"}]))
    assert bare_list.files == [ReplyFile("src/a.py", "A = 1\n")]
    single = parse_reply(json.dumps({"path": "src/a.py", "content": "A = 1\n"}))
    assert single.files == [ReplyFile("src/a.py", "A = 1\n")]


def test_json_entries_without_path_or_content_are_skipped_and_reported() -> None:
    text = json.dumps(
        {
            "files": [
                {"path": "src/ok.py", "content": "OK = 1\n"},
                {"content": "orphan"},
                {"path": "src/none.py", "content": None},
                "not an object",
            ]
        }
    )
    reply = parse_reply(text)
    assert reply.paths == ["src/ok.py"]
    assert any("files[1] has no path" in problem for problem in reply.problems)
    assert any("files[2] (src/none.py) has no string content" in p for p in reply.problems)
    assert any("files[3] is not an object" in problem for problem in reply.problems)


def test_json_fenced_with_prose_around() -> None:
    text = (
        "Sure! Here are the files for this phase.\n\n"
        "```json\n"
        + json.dumps({"files": [{"path": "src/app.py", "content": APP}]}, indent=2)
        + "\n```\n\nLet me know if you need anything else."
    )
    reply = parse_reply(text)
    assert reply.format == "json_fenced"
    assert reply.files == [ReplyFile("src/app.py", APP)]


def test_json_in_unlabelled_fence() -> None:
    reply = parse_reply("```\n" + _files_json(("src/app.py", APP)) + "\n```")
    assert reply.format == "json_fenced"
    assert reply.paths == ["src/app.py"]


def test_json_embedded_in_prose_without_fence() -> None:
    text = "Here is my answer: " + _files_json(("src/app.py", APP)) + " — done."
    reply = parse_reply(text)
    assert reply.format == "json"
    assert reply.files == [ReplyFile("src/app.py", APP)]


def test_truncated_json_object_is_a_failure_with_a_reason() -> None:
    text = _files_json(("src/app.py", APP))[:-20]
    reply = parse_reply(text)
    assert not reply.ok
    assert reply.format is None
    assert reply.failure_reason is not None
    assert reply.failure_reason.startswith("no files found in the reply")
    assert "does not parse" in reply.failure_reason


def test_json_without_files_key_is_a_failure() -> None:
    reply = parse_reply(json.dumps({"answer": "I cannot do that"}))
    assert not reply.ok
    assert any('no "files" list' in problem for problem in reply.problems)


def test_empty_files_list_is_a_failure() -> None:
    reply = parse_reply('{"files": []}')
    assert not reply.ok
    assert any("empty" in problem for problem in reply.problems)


# --- NDJSON -------------------------------------------------------------------------------


def test_ndjson_lines() -> None:
    items = [(f"pkg/m{i}.py", f"VALUE = {i}\n") for i in range(6)]
    reply = parse_reply(_ndjson(*items))
    assert reply.format == "ndjson"
    assert reply.files == [ReplyFile(path, content) for path, content in items]
    assert reply.problems == []


def test_truncated_ndjson_keeps_complete_lines_and_reports_the_last() -> None:
    items = [(f"pkg/m{i}.py", f"VALUE = {i}\n" * 5) for i in range(5)]
    text = _ndjson(*items)
    truncated = text[: text.rindex("\n") + 30]  # cut inside the last line
    reply = parse_reply(truncated)
    assert reply.format == "ndjson"
    assert reply.paths == [path for path, _ in items[:4]]
    assert any("line 5" in p and "incomplete" in p and "truncated" in p for p in reply.problems)


def test_ndjson_single_truncated_line_is_a_failure() -> None:
    reply = parse_reply('{"path": "pkg/a.py", "content": "VALUE = ')
    assert not reply.ok
    assert reply.failure_reason is not None
    assert "incomplete" in reply.failure_reason


def test_ndjson_bad_middle_line_is_skipped_and_prose_ignored() -> None:
    text = "\n".join(
        [
            "Here you go:",
            json.dumps({"path": "pkg/a.py", "content": "A = 1\n"}),
            '{"path": "pkg/b.py", "content": oops}',
            json.dumps({"path": "pkg/c.py", "content": "C = 3\n"}),
        ]
    )
    reply = parse_reply(text)
    assert reply.format == "ndjson"
    assert reply.paths == ["pkg/a.py", "pkg/c.py"]
    assert any("line 3 is not valid JSON" in problem for problem in reply.problems)
    assert any("1 line(s) of text" in problem for problem in reply.problems)


def test_ndjson_inside_a_fence() -> None:
    text = "```ndjson\n" + _ndjson(("pkg/a.py", "A = 1\n"), ("pkg/b.py", "B = 2\n")) + "\n```"
    reply = parse_reply(text)
    assert reply.format == "ndjson"
    assert reply.paths == ["pkg/a.py", "pkg/b.py"]


def test_ndjson_in_an_unclosed_fence_after_truncation() -> None:
    body = _ndjson(("pkg/a.py", "A = 1\n"), ("pkg/b.py", "B = 2\n"), ("pkg/c.py", "C = 3\n"))
    text = "```jsonl\n" + body[:-10]
    reply = parse_reply(text)
    assert reply.format == "ndjson"
    assert reply.paths == ["pkg/a.py", "pkg/b.py"]
    assert any("not closed" in problem for problem in reply.problems)
    assert any("incomplete" in problem for problem in reply.problems)


# --- Markdown -----------------------------------------------------------------------------


def test_markdown_headings() -> None:
    text = (
        "I'll create two files.\n\n"
        "### src/app.py\n\n```python\n" + APP + "```\n\n"
        "### `tests/test_app.py` (new file)\n```python\n" + TEST + "```\n"
        "\nThat's all.\n"
    )
    reply = parse_reply(text)
    assert reply.format == "markdown"
    assert reply.files == [ReplyFile("src/app.py", APP), ReplyFile("tests/test_app.py", TEST)]
    assert reply.problems == []


def test_markdown_bold_label_list_and_bare_path_introducers() -> None:
    text = (
        "**src/one.py**\n```python\nONE = 1\n```\n"
        "**File:** `src/two.py`\n```python\nTWO = 2\n```\n"
        "1. src/three.py:\n```python\nTHREE = 3\n```\n"
        "File: src/four.py\n```\nFOUR = 4\n```\n"
        "src/five.py\n```python\nFIVE = 5\n```\n"
        "## Changes to `src/six.py`\n```python\nSIX = 6\n```\n"
    )
    reply = parse_reply(text)
    assert reply.format == "markdown"
    assert reply.files == [
        ReplyFile("src/one.py", "ONE = 1\n"),
        ReplyFile("src/two.py", "TWO = 2\n"),
        ReplyFile("src/three.py", "THREE = 3\n"),
        ReplyFile("src/four.py", "FOUR = 4\n"),
        ReplyFile("src/five.py", "FIVE = 5\n"),
        ReplyFile("src/six.py", "SIX = 6\n"),
    ]


def test_markdown_path_in_info_string() -> None:
    text = (
        "```python:src/a.py\nA = 1\n```\n"
        '```python title="src/b.py"\nB = 2\n```\n'
        "```src/c.py\nC = 3\n```\n"
    )
    reply = parse_reply(text)
    assert reply.files == [
        ReplyFile("src/a.py", "A = 1\n"),
        ReplyFile("src/b.py", "B = 2\n"),
        ReplyFile("src/c.py", "C = 3\n"),
    ]


def test_first_line_path_comment_is_a_label_and_is_removed() -> None:
    text = (
        "Here is the code:\n\n"
        "```python\n# src/app.py\n" + APP + "```\n\n"
        '```json\n// config/settings.json\n{"debug": true}\n```\n'
        "```markdown\n<!-- docs/guide.md -->\n# Guide\n```\n"
    )
    reply = parse_reply(text)
    assert reply.format == "markdown"
    assert reply.files == [
        ReplyFile("src/app.py", APP),
        ReplyFile("config/settings.json", '{"debug": true}\n'),
        ReplyFile("docs/guide.md", "# Guide\n"),
    ]


def test_first_line_path_comment_stays_when_a_heading_named_the_file() -> None:
    text = "### src/app.py\n```python\n# src/app.py\n" + APP + "```\n"
    reply = parse_reply(text)
    assert reply.files == [ReplyFile("src/app.py", "# src/app.py\n" + APP)]


def test_shebang_and_ordinary_comment_are_not_paths() -> None:
    text = "```python\n#!/usr/bin/env python\n# helper\nprint(1)\n```\n"
    reply = parse_reply(text)
    assert not reply.ok
    assert any("has no file path" in problem for problem in reply.problems)


def test_markdown_blocks_without_paths_are_skipped() -> None:
    text = (
        "Install first:\n```bash\npip install requests\n```\n"
        "### src/app.py\n```python\n" + APP + "```\n"
    )
    reply = parse_reply(text)
    assert reply.files == [ReplyFile("src/app.py", APP)]
    assert any("line 2 has no file path" in problem for problem in reply.problems)


def test_prose_mention_is_not_read_as_a_path() -> None:
    reply = parse_reply("Here is `src/app.py`:\n```python\n" + APP + "```\n")
    assert not reply.ok


def test_longer_outer_fence_holds_a_file_with_fences() -> None:
    readme = "# Title\n\n```python\nprint('hi')\n```\n"
    text = "### docs/README.md\n````markdown\n" + readme + "````\n"
    reply = parse_reply(text)
    assert reply.files == [ReplyFile("docs/README.md", readme)]


def test_tilde_fence_and_indented_fence() -> None:
    text = (
        "### a/x.py\n~~~python\nX = 1\n~~~\n\n### a/y.py\n  ```python\n  Y = 2\n    Z = 3\n  ```\n"
    )
    reply = parse_reply(text)
    assert reply.files == [ReplyFile("a/x.py", "X = 1\n"), ReplyFile("a/y.py", "Y = 2\n  Z = 3\n")]


def test_unclosed_markdown_block_is_dropped_as_truncated() -> None:
    text = "### src/a.py\n```python\nA = 1\n```\n### src/b.py\n```python\ndef half(\n"
    reply = parse_reply(text)
    assert reply.files == [ReplyFile("src/a.py", "A = 1\n")]
    assert any("src/b.py is not closed" in problem for problem in reply.problems)


def test_duplicate_paths_last_wins() -> None:
    text = "### src/a.py\n```python\nA = 1\n```\n### src/a.py\n```python\nA = 2\n```\n"
    reply = parse_reply(text)
    assert reply.files == [ReplyFile("src/a.py", "A = 2\n")]
    assert any("given 2 times" in problem for problem in reply.problems)


def test_paths_are_cleaned_but_not_judged() -> None:
    reply = parse_reply(
        _files_json(("./src/a.py", "A\n"), (".\\win\\b.py", "B\n"), ("/etc/passwd", "x\n"))
    )
    assert reply.paths == ["src/a.py", "win/b.py", "/etc/passwd"]


# --- garbage ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n\t  ",
        "I'm sorry, I can't help with that.",
        "{not json at all",
        "```\nsome code without a path\n```",
        "[1, 2, 3]",
        "null",
    ],
)
def test_garbage_is_a_clear_failure(text: str) -> None:
    reply = parse_reply(text)
    assert not reply.ok
    assert reply.files == []
    assert reply.format is None
    assert reply.failure_reason is not None
    assert reply.failure_reason.startswith("no files found")
    assert reply.problems


def test_empty_reply_says_empty() -> None:
    assert parse_reply("").failure_reason == "no files found in the reply: the reply is empty"


def test_parse_reply_never_executes_content() -> None:
    payload = "import os\nos.system('touch /tmp/should-not-exist')\n"
    reply = parse_reply(_files_json(("src/evil.py", payload)))
    assert reply.files == [ReplyFile("src/evil.py", payload)]


# --- helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("src/app.py", True),
        (".gitignore", True),
        ("docker/Dockerfile", True),
        ("Makefile", True),
        ("README", False),
        ("Input/Output", False),
        ("v1.2", False),
        ("e.g.", False),
        ("src/", False),
        ("a file.py", False),
        ("", False),
    ],
)
def test_looks_like_path(text: str, expected: bool) -> None:
    assert looks_like_path(text) is expected


def test_clean_path() -> None:
    assert clean_path("  `./src/a.py`  ") == "src/a.py"
    assert clean_path('"pkg\\mod.py"') == "pkg/mod.py"


def test_markdown_file_with_same_length_inner_fences_survives() -> None:
    readme = "# Utils\n\n## Usage\n\n```python\nfrom utils import f\nf()\n```\n\nMore text.\n"
    text = "### examples/README.md\n```markdown\n" + readme + "```\n\nDone.\n"
    reply = parse_reply(text)
    assert reply.files == [ReplyFile("examples/README.md", readme)]
    assert reply.problems == []


def test_markdown_file_with_inner_fences_followed_by_another_file() -> None:
    readme = "# Utils\n\n```python\nf()\n```\n\n```bash\npytest\n```\n"
    text = (
        "**docs/README.md**\n```\n" + readme + "```\n\n"
        "**docs/conf.py**\n```python\nproject = 'x'\n```\n"
    )
    reply = parse_reply(text)
    assert reply.files == [
        ReplyFile("docs/README.md", readme),
        ReplyFile("docs/conf.py", "project = 'x'\n"),
    ]


def test_each_attempt_of_a_phase_in_a_session_keeps_its_own_transcripts(tmp_path: Path) -> None:
    from autopack.executor.transcripts import TranscriptWriter

    first = TranscriptWriter.for_phase(tmp_path, "s1", "run-a", "p1")
    second = TranscriptWriter.for_phase(tmp_path, "s1", "run-a", "p1")
    other_session = TranscriptWriter.for_phase(tmp_path, "s2", "run-a", "p1")
    assert first.directory.name == "p1"
    assert second.directory == first.directory.with_name("p1.2")
    assert other_session.directory.name == "p1"
    assert first.directory.is_dir()
    assert second.directory.is_dir()
