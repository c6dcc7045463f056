"""`parse_reply` never raises on a reply's content (issue 11, defect 7), held by hypothesis.

Invariants: it returns a ChangeSet for any text; `ok` is "at least one file" and
`failure_reason` is set exactly when there is none; every path, content and problem it returns
is valid Unicode text (it encodes as UTF-8), so whatever the model sent can be written to a
file, a terminal or the database.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from autopack.executor.output import parse_reply

# Every code point, lone surrogates included (hypothesis leaves them out by default).
ANY_CHAR = st.characters(exclude_categories=())
ANY_TEXT = st.text(alphabet=ANY_CHAR, max_size=300)
JSON_LEAVES = st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=20,
)
FILE_ENTRIES = st.lists(
    st.fixed_dictionaries({"path": ANY_TEXT | JSON_VALUES, "content": ANY_TEXT | JSON_VALUES}),
    max_size=4,
)


def _check(text: str) -> None:
    parsed = parse_reply(text)
    assert parsed.ok is bool(parsed.files)
    assert (parsed.failure_reason is None) is parsed.ok
    assert parsed.format is None or parsed.ok
    for item in parsed.files:
        item.path.encode("utf-8")
        item.content.encode("utf-8")
    for problem in parsed.problems:
        problem.encode("utf-8")
    if parsed.failure_reason is not None:
        parsed.failure_reason.encode("utf-8")


@settings(max_examples=150, deadline=None)
@given(ANY_TEXT)
def test_any_text(text: str) -> None:
    _check(text)


@settings(max_examples=100, deadline=None)
@given(FILE_ENTRIES, st.sampled_from(["bare", "fenced", "ndjson", "embedded", "cut"]))
def test_json_shaped_replies(entries: list[dict[str, object]], shape: str) -> None:
    body = json.dumps({"files": entries}, ensure_ascii=False)
    text = {
        "bare": body,
        "fenced": f"Here you go:\n```json\n{body}\n```\n",
        "ndjson": "\n".join(json.dumps(entry) for entry in entries),
        "embedded": f"Sure. {body} Done.",
        "cut": body[: len(body) // 2],
    }[shape]
    _check(text)


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=1, max_value=5000), st.sampled_from(["[", '{"files": ', '{"a":']))
def test_deep_nesting(depth: int, opener: str) -> None:
    text = opener * depth
    _check(text)
    _check(text + "]" * depth)
    _check("```json\n" + "[" * depth + "]" * depth + "\n```")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(ANY_TEXT, ANY_TEXT), max_size=4), st.sampled_from(["```", "~~~~"]))
def test_markdown_shaped_replies(blocks: list[tuple[str, str]], fence: str) -> None:
    text = "\n".join(f"### {path}\n{fence}python\n{content}\n{fence}" for path, content in blocks)
    _check(text)
