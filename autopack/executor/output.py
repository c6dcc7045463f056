"""Parse the files out of a builder reply, in whatever shape a real model returned them.

`parse_reply(text)` never raises on the reply's content and never executes anything from it.
It returns a `ChangeSet`: the files found, the format they were found in, and a list of
problems (skipped entries, a truncated last line, …). A reply with no usable file is a parse
failure: `ChangeSet.ok` is false and `failure_reason` says why, for the caller to record as
`success=False`.

Accepted formats, tried in this order (the first that yields a file wins):

1. `json` — the whole reply is a JSON object `{"files": [{"path": …, "content": …}, …]}`.
   Also accepted: a bare list of such objects, one such object alone, and `files` given as a
   `{path: content}` mapping.
2. `ndjson` — one `{"path": …, "content": …}` object per line. Lines that do not start with
   `{` are prose and are skipped; a last line that does not parse is a truncation and is
   dropped (reported); an unparsable line elsewhere is skipped (reported).
3. `json_fenced` — the same JSON (or NDJSON, reported as `ndjson`) inside a fenced block with
   no file path of its own (```` ```json ````, ```` ```ndjson ````, or no language), with any
   prose around it. An unclosed fence runs to the end of the reply.
4. `json` — a `{"files": …}` object embedded in prose without a fence.
5. `markdown` — each file is a fenced code block introduced by its path. The path comes from,
   in this order of preference:
   a. the nearest non-blank line before the fence (after the previous block), when that whole
      line names a path: a heading (`### src/app.py`), a bold line (`**src/app.py**`), a code
      span (`` `src/app.py` ``), a list item (`1. src/app.py`), a label (`File: src/app.py`,
      `**File:** `src/app.py``) or the bare path; bold markers, a `File:`/`Path:` label, a
      trailing colon and a trailing `(note)` or ` - note` are ignored. A heading may also name
      the path in a code span among other words (`### Changes to `src/app.py``). Prose
      (`Here is `src/app.py`:`) is deliberately not read as a path: a wrong guess could
      overwrite a real file;
   b. the fence's info string: ```` ```python:src/app.py ````,
      ```` ```python title="src/app.py" ```` or ```` ```src/app.py ````;
   c. the block's first line, when it is a comment that is only a path (`# src/app.py`,
      `// src/app.py`, `<!-- src/app.py -->`, `-- src/app.py`, `/* src/app.py */`).

   Rule for the path comment: when the path came from (a) or (b), the block's content is
   kept verbatim, including a first-line `# path` comment if the model wrote one (it is valid
   Python, and the model put it inside the file). When the path came only from (c), that first
   line is a label and is removed: leaving it would break JSON files, turn into a heading in
   Markdown, and is noise everywhere else.

   Fences follow CommonMark: ```` ``` ```` or `~~~`, three or more, closed by the same character
   at least as long; a longer outer fence can hold a file that itself contains fences. For a
   Markdown file (language `markdown`/`md` or a `.md` path) a same-length inner fence that
   opens with a language (```` ```python ````) is matched by the next bare fence, so a README
   with examples survives a model that did not lengthen the outer fence. A block
   with a path but no closing fence is a truncated file and is dropped (reported). A block
   without a path (e.g. shell commands) is not a file and is skipped (reported).

A "path" is a run of letters, digits and `_ . - / @ +` whose last component has an extension
starting with a letter (`app.py`, `.gitignore`) or is a well-known extensionless name
(`Makefile`, `Dockerfile`, …). Paths are cleaned only cosmetically: surrounding whitespace,
quotes and backticks are removed, `\\` becomes `/`, and a leading `./` is dropped. Whether a
path may be written is decided by `autopack.executor.workspace`, not here.

The same path given twice: the last occurrence wins (reported).
Content: JSON strings are used exactly; Markdown block lines are joined with `\\n` and end
with a newline (indentation of an indented fence is removed as CommonMark says).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NamedTuple

from autopack.text import is_valid_unicode, valid_unicode

ReplyFormat = Literal["json", "json_fenced", "ndjson", "markdown"]

_EXTENSIONLESS_NAMES: Final[frozenset[str]] = frozenset(
    {"Makefile", "Dockerfile", "Containerfile", "Procfile", "Jenkinsfile", "LICENSE", "Gemfile"}
)
_PATH_CHARS: Final = re.compile(r"[A-Za-z0-9_.\-/@+]+")
_EXTENSION: Final = re.compile(r"\.[A-Za-z][A-Za-z0-9_\-]*$")
_FENCE_OPEN: Final = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_FENCE_CLOSE: Final = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})[ \t]*$")
_MARKDOWN_LANGUAGES: Final = frozenset({"markdown", "md"})
_MARKDOWN_SUFFIXES: Final = (".md", ".markdown")
_JSONISH_INFO: Final = frozenset({"", "json", "ndjson", "jsonl", "jsonlines"})
_EMPHASIS: Final = re.compile(r"\*\*|__")
_HEADING: Final = re.compile(r"^#{1,6}\s+(?P<text>.*?)\s*#*\s*$")
_LIST_ITEM: Final = re.compile(r"^(?:[-*+]|\d+[.)])\s+(?P<text>.+)$")
_NUMBERING: Final = re.compile(r"^\d+[.)]\s+")
_LABEL_PREFIX: Final = re.compile(r"^(?:file(?:name)?|path)\s*:\s*", re.IGNORECASE)
_NOTE_SUFFIX: Final = re.compile(r"\s+(?:\(.*\)|[-–—]\s.*)$")
_BACKTICKED: Final = re.compile(r"`([^`]+)`")
_INFO_TITLE: Final = re.compile(r"""(?:title|file(?:name)?|path)\s*=\s*["']?(?P<path>[^"'\s]+)""")
_COMMENT_PATH: Final = re.compile(
    r"^\s*(?:#|//|--|;|/\*|<!--)\s*(?:(?:file(?:name)?|path)\s*:\s*)?(?P<path>\S+?)\s*"
    r"(?:\*/|-->)?\s*$",
    re.IGNORECASE,
)
_NDJSON_FILE_START: Final = re.compile(r'^\{\s*"path"\s*:')
_EMBEDDED_FILES: Final = re.compile(r'\{\s*"files"\s*:')


class ReplyFile(NamedTuple):
    """One file from the reply: its path as the model wrote it (cleaned), and its content."""

    path: str
    content: str


@dataclass(frozen=True, slots=True)
class ChangeSet:
    """The change set a builder reply holds: the result of `parse_reply`."""

    files: list[ReplyFile]
    format: ReplyFormat | None
    """Where the files were found; `None` when none were."""
    problems: list[str] = field(default_factory=list)
    """Everything skipped or suspicious, one sentence each, in reply order."""

    @property
    def ok(self) -> bool:
        """Whether the reply gave at least one file (the telemetry `success` of a builder call)."""
        return bool(self.files)

    @property
    def failure_reason(self) -> str | None:
        """One line saying why no file was found, or `None` when files were found."""
        if self.files:
            return None
        details = "; ".join(self.problems[:3])
        return f"no files found in the reply: {details}" if details else "no files found"

    @property
    def paths(self) -> list[str]:
        """The paths of the files, in order."""
        return [item.path for item in self.files]


def clean_path(raw: str) -> str:
    """Cosmetic clean-up of a path written by a model (see the module docstring)."""
    text = raw.strip().strip("`'\"").strip().replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    return text


def looks_like_path(text: str) -> bool:
    """Whether `text` (already cleaned) reads as a file path rather than a word or sentence."""
    if not text or _PATH_CHARS.fullmatch(text) is None or text.endswith("/"):
        return False
    name = text.rsplit("/", 1)[-1]
    if name in ("", ".", ".."):
        return False
    return name in _EXTENSIONLESS_NAMES or _EXTENSION.search(name) is not None


def parse_reply(text: str) -> ChangeSet:
    """Find the files in a builder reply. See the module docstring for the accepted formats.

    Never raises on the reply's content: JSON nested too deeply to decode is a JSON that does
    not parse, and an entry holding a lone surrogate is skipped. The problems are valid
    Unicode text whatever the reply held, so they can be written anywhere.
    """
    parsed = _parse(text)
    problems = [valid_unicode(problem) for problem in parsed.problems]
    return ChangeSet(files=parsed.files, format=parsed.format, problems=problems)


def _parse(text: str) -> ChangeSet:
    stripped = text.strip()
    if not stripped:
        return ChangeSet(files=[], format=None, problems=["the reply is empty"])
    problems: list[str] = []

    bare = _parse_bare_json(stripped, problems)
    if bare is not None:
        return _result(bare, "json", problems)

    blocks = _fenced_blocks(text)
    if not blocks:
        ndjson = _parse_ndjson(stripped)
        if ndjson is not None:
            files, ndjson_problems = ndjson
            if files:
                return _result(files, "ndjson", ndjson_problems)
            problems.extend(ndjson_problems)

    for block in blocks:
        if block.path is not None or block.language not in _JSONISH_INFO:
            continue
        found = _parse_json_block(block, problems)
        if found is not None:
            files, block_format, block_problems = found
            return _result(files, block_format, block_problems)

    embedded = _parse_embedded_json(stripped)
    if embedded is not None:
        return _result(embedded, "json", [])

    markdown_files, markdown_problems = _markdown_files(blocks)
    if markdown_files:
        return _result(markdown_files, "markdown", markdown_problems)
    problems.extend(markdown_problems)
    if not problems:
        problems.append(
            "the reply is neither JSON, NDJSON nor Markdown code blocks introduced by file paths"
        )
    return ChangeSet(files=[], format=None, problems=problems)


def _result(files: list[ReplyFile], fmt: ReplyFormat, problems: list[str]) -> ChangeSet:
    unique: dict[str, ReplyFile] = {}
    counts: dict[str, int] = {}
    notes = list(problems)
    for item in files:
        if not (is_valid_unicode(item.path) and is_valid_unicode(item.content)):
            # A lone surrogate (a JSON "\ud83d") is no text a file can hold: the entry is
            # unusable, and saying which one must not carry the surrogate itself.
            where = "path" if not is_valid_unicode(item.path) else "content"
            notes.append(
                f"{valid_unicode(item.path)} has a lone surrogate in its {where}, which is not "
                "valid Unicode text; skipped"
            )
            continue
        counts[item.path] = counts.get(item.path, 0) + 1
        unique.pop(item.path, None)
        unique[item.path] = item
    for path, count in counts.items():
        if count > 1:
            notes.append(f"{path} is given {count} times; the last one is used")
    return ChangeSet(files=list(unique.values()), format=fmt if unique else None, problems=notes)


def _loads(text: str) -> Any:
    """`json.loads`, with nesting too deep for the decoder reported as a decode error."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, 0) from None


def _raw_decode(decoder: json.JSONDecoder, text: str, start: int) -> Any:
    try:
        return decoder.raw_decode(text, start)[0]
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, start) from None


# --- JSON ---------------------------------------------------------------------------------


def _files_from_json(value: object, problems: list[str]) -> list[ReplyFile] | None:
    """The files of a decoded JSON value, or `None` if it is not a files container at all."""
    items: object
    if isinstance(value, dict) and "files" in value:
        items = value["files"]
    elif isinstance(value, list):
        items = value
    elif isinstance(value, dict) and "path" in value:
        items = [value]
    else:
        return None
    if isinstance(items, dict):
        items = [{"path": key, "content": content} for key, content in items.items()]
    if not isinstance(items, list):
        problems.append('"files" is not a list')
        return []
    files: list[ReplyFile] = []
    for index, item in enumerate(items):
        entry = _file_entry(item, f"files[{index}]", problems)
        if entry is not None:
            files.append(entry)
    return files


def _file_entry(item: object, where: str, problems: list[str]) -> ReplyFile | None:
    if not isinstance(item, dict):
        problems.append(f"{where} is not an object with path and content; skipped")
        return None
    path = item.get("path")
    content = item.get("content")
    if not isinstance(path, str) or not clean_path(path):
        problems.append(f"{where} has no path; skipped")
        return None
    if not isinstance(content, str):
        problems.append(f"{where} ({clean_path(path)}) has no string content; skipped")
        return None
    return ReplyFile(clean_path(path), content)


def _parse_bare_json(stripped: str, problems: list[str]) -> list[ReplyFile] | None:
    if stripped[0] not in "{[":
        return None
    try:
        value = _loads(stripped)
    except json.JSONDecodeError as exc:
        if "\n" in stripped.strip() and _NDJSON_FILE_START.match(stripped):
            return None  # several lines of objects: NDJSON, judged next
        problems.append(
            f"the reply looks like JSON but does not parse (line {exc.lineno}, column "
            f"{exc.colno}: {exc.msg}; truncated?)"
        )
        return None
    local: list[str] = []
    files = _files_from_json(value, local)
    if files is None:
        problems.append('the reply is JSON but has no "files" list')
        return None
    problems.extend(local)
    if not files and not local:
        problems.append('the reply\'s "files" list is empty')
    return files or None


def _parse_ndjson(text: str) -> tuple[list[ReplyFile], list[str]] | None:
    """Files from NDJSON lines, or `None` when the text does not look like NDJSON at all."""
    lines = text.splitlines()
    last = max((index for index, line in enumerate(lines) if line.strip()), default=-1)
    files: list[ReplyFile] = []
    problems: list[str] = []
    looks_like_ndjson = False
    prose = 0
    for index, raw in enumerate(lines):
        line = raw.strip()
        if not line:
            continue
        if not line.startswith("{"):
            prose += 1
            continue
        if _NDJSON_FILE_START.match(line):
            looks_like_ndjson = True
        try:
            value = _loads(line)
        except json.JSONDecodeError as exc:
            if index == last:
                problems.append(
                    f"line {index + 1} is an incomplete JSON line at the end of the reply "
                    "(truncated?); ignored"
                )
            else:
                problems.append(f"line {index + 1} is not valid JSON ({exc.msg}); skipped")
            continue
        if isinstance(value, dict) and "files" in value:
            found = _files_from_json(value, problems) or []
        else:
            entry = _file_entry(value, f"line {index + 1}", problems)
            found = [entry] if entry is not None else []
        if found:
            looks_like_ndjson = True
        files.extend(found)
    if not looks_like_ndjson:
        return None
    if prose:
        problems.append(f"{prose} line(s) of text between the JSON lines ignored")
    return files, problems


def _parse_embedded_json(text: str) -> list[ReplyFile] | None:
    decoder = json.JSONDecoder()
    for match in _EMBEDDED_FILES.finditer(text):
        try:
            value = _raw_decode(decoder, text, match.start())
        except json.JSONDecodeError:
            continue
        files = _files_from_json(value, [])
        if files:
            return files
    return None


# --- fenced blocks --------------------------------------------------------------------------


@dataclass(slots=True)
class _Block:
    opening_line: int
    language: str
    info: str
    lines: list[str]
    closed: bool
    introducer: str | None
    path: str | None = None
    path_from_first_line: bool = False


def _fenced_blocks(text: str) -> list[_Block]:
    lines = text.splitlines()
    blocks: list[_Block] = []
    index = 0
    previous_end = -1
    while index < len(lines):
        opening = _FENCE_OPEN.match(lines[index])
        if opening is None or (opening.group("fence")[0] == "`" and "`" in opening.group("info")):
            index += 1
            continue
        info = opening.group("info").strip()
        introducer = next(
            (lines[at].strip() for at in range(index - 1, previous_end, -1) if lines[at].strip()),
            None,
        )
        language = info.split(None, 1)[0].split(":", 1)[0].lower() if info else ""
        block = _Block(
            opening_line=index + 1,
            language=language,
            info=info,
            lines=[],
            closed=False,
            introducer=introducer,
            path=_labelled_path(introducer, info),
        )
        markdown_file = language in _MARKDOWN_LANGUAGES or (
            block.path is not None and block.path.lower().endswith(_MARKDOWN_SUFFIXES)
        )
        cursor = _scan_block(
            lines,
            index + 1,
            opening.group("fence"),
            len(opening.group("indent")),
            block,
            nested=markdown_file,
        )
        if block.path is None:
            _path_from_first_line(block)
        blocks.append(block)
        previous_end = cursor
        index = cursor + 1
    return blocks


def _scan_block(
    lines: list[str], start: int, fence: str, indent: int, block: _Block, *, nested: bool
) -> int:
    """Fill `block` with its content lines; return the index of its closing fence (or the end).

    In a Markdown file (`nested`), a fence with an info string (```` ```python ````) opens an
    inner block and the next bare fence closes that inner block, not the file: models often
    write a README's examples with the same fence length as the block around it.
    """
    depth = 0
    cursor = start
    while cursor < len(lines):
        line = lines[cursor]
        closing = _FENCE_CLOSE.match(line)
        if (
            closing is not None
            and closing.group("fence")[0] == fence[0]
            and len(closing.group("fence")) >= len(fence)
        ):
            if depth == 0:
                block.closed = True
                return cursor
            depth -= 1
        elif nested:
            inner = _FENCE_OPEN.match(line)
            if (
                inner is not None
                and inner.group("info").strip()
                and inner.group("fence")[0] == fence[0]
                and len(inner.group("fence")) >= len(fence)
            ):
                depth += 1
        block.lines.append(_dedent(line, indent))
        cursor += 1
    return cursor


def _dedent(line: str, indent: int) -> str:
    removable = len(line) - len(line.lstrip(" "))
    return line[min(indent, removable) :]


def _labelled_path(introducer: str | None, info: str) -> str | None:
    """The path named before the block: by the line introducing it, else by its info string."""
    if introducer is not None:
        path = _path_from_introducer(introducer)
        if path is not None:
            return path
    return _path_from_info(info)


def _path_from_first_line(block: _Block) -> None:
    if not block.lines:
        return
    match = _COMMENT_PATH.match(block.lines[0])
    if match is not None:
        candidate = clean_path(match.group("path"))
        if looks_like_path(candidate):
            block.path = candidate
            block.path_from_first_line = True


def _path_from_introducer(line: str) -> str | None:
    plain = _EMPHASIS.sub("", line).strip()
    heading = _HEADING.match(plain)
    if heading is not None:
        return _path_from_label(heading.group("text"), allow_span=True)
    item = _LIST_ITEM.match(plain)
    return _path_from_label(item.group("text") if item is not None else plain, allow_span=False)


def _path_from_label(text: str, *, allow_span: bool) -> str | None:
    """The path a label names. Only a heading may name it inside other words, in a code span."""
    if allow_span:
        for span in _BACKTICKED.findall(text):
            candidate = clean_path(span)
            if looks_like_path(candidate):
                return candidate
    label = _LABEL_PREFIX.sub("", _NUMBERING.sub("", text.strip()))
    label = _NOTE_SUFFIX.sub("", label.strip()).strip().rstrip(":").strip()
    candidate = clean_path(label)
    return candidate if looks_like_path(candidate) else None


def _path_from_info(info: str) -> str | None:
    if not info:
        return None
    titled = _INFO_TITLE.search(info)
    if titled is not None:
        candidate = clean_path(titled.group("path"))
        return candidate if looks_like_path(candidate) else None
    first = info.split(None, 1)[0]
    if ":" in first:
        candidate = clean_path(first.split(":", 1)[1])
        if looks_like_path(candidate):
            return candidate
    candidate = clean_path(first)
    return candidate if "." in candidate and looks_like_path(candidate) else None


def _block_text(lines: list[str]) -> str:
    return "\n".join(lines) + "\n" if lines else ""


def _parse_json_block(
    block: _Block, problems: list[str]
) -> tuple[list[ReplyFile], ReplyFormat, list[str]] | None:
    body = _block_text(block.lines).strip()
    if not body or body[0] not in "{[":
        return None
    local: list[str] = []
    if not block.closed:
        local.append(f"the fenced block at line {block.opening_line} is not closed (truncated?)")
    try:
        value = _loads(body)
    except json.JSONDecodeError as exc:
        ndjson = _parse_ndjson(body)
        if ndjson is not None and ndjson[0]:
            return ndjson[0], "ndjson", local + ndjson[1]
        problems.append(
            f"the fenced block at line {block.opening_line} looks like JSON but does not parse "
            f"(line {exc.lineno}, column {exc.colno}: {exc.msg}; truncated?)"
        )
        return None
    files = _files_from_json(value, local)
    if not files:
        return None
    return files, "json_fenced", local


def _markdown_files(blocks: list[_Block]) -> tuple[list[ReplyFile], list[str]]:
    files: list[ReplyFile] = []
    problems: list[str] = []
    for block in blocks:
        if block.path is None:
            problems.append(
                f"the fenced block at line {block.opening_line} has no file path; skipped"
            )
            continue
        if not block.closed:
            problems.append(f"the block for {block.path} is not closed (truncated reply?); ignored")
            continue
        lines = block.lines[1:] if block.path_from_first_line else block.lines
        files.append(ReplyFile(block.path, _block_text(lines)))
    return files, problems


__all__ = [
    "ChangeSet",
    "ReplyFile",
    "ReplyFormat",
    "clean_path",
    "looks_like_path",
    "parse_reply",
]
