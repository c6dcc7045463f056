"""Transcripts: the prompt and raw reply of every builder call, kept where the operator looks.

`<workspace>/.autopack/logs/<session>/<run>/<phase>/attempt-N-prompt.md` and `…-reply.txt`
(plus `…-call.json` with usage and attempts); a phase attempted again in the same session
writes into `<phase>.2/`, `<phase>.3/`, …. `.autopack/` is git-ignored. Nothing secret is
written: the prompt holds the phase and workspace files, the reply what the model said, the
metadata token counts and statuses (error texts are already scrubbed of keys by the client).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from autopack.executor.prompts import BuiltPrompt
from autopack.llm.base import LlmCallError, LlmResult

LOG_ROOT = Path(".autopack") / "logs"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe(name: str) -> str:
    cleaned = _UNSAFE.sub("_", name).strip("._") or "_"
    return cleaned[:100]


def _fresh_directory(parent: Path, name: str) -> Path:
    """`parent/name`, or `name.2`, `name.3`, … when a session attempts a phase again: each
    drain attempt keeps its own transcripts instead of overwriting the last one's."""
    number = 1
    while True:
        directory = parent / (name if number == 1 else f"{name}.{number}")
        try:
            directory.mkdir()
        except FileExistsError:
            number += 1
            continue
        return directory


@dataclass(frozen=True)
class TranscriptWriter:
    directory: Path

    @classmethod
    def for_phase(
        cls, workspace: Path, session_id: str, run_id: str, phase_id: str
    ) -> TranscriptWriter:
        parent = workspace / LOG_ROOT / _safe(session_id) / _safe(run_id)
        parent.mkdir(parents=True, exist_ok=True)
        directory = _fresh_directory(parent, _safe(phase_id))
        ignore = workspace / LOG_ROOT.parent / ".gitignore"
        if not ignore.exists():
            # Transcripts are never untracked noise in the operator's repository.
            ignore.write_text("# written by autopack: its transcripts stay out of git\n*\n")
        return cls(directory)

    def write_prompt(self, attempt: int, prompt: BuiltPrompt, max_tokens: int) -> None:
        text = (
            f"<!-- max_tokens={max_tokens} reply_format={prompt.reply_format} -->\n"
            f"# system\n\n{prompt.system}\n\n# user\n\n{prompt.user}\n"
        )
        _write(self.directory / f"attempt-{attempt}-prompt.md", text)

    def write_reply(self, attempt: int, result: LlmResult) -> None:
        _write(self.directory / f"attempt-{attempt}-reply.txt", result.text)
        meta = {
            "provider": result.provider,
            "model": result.model,
            "max_tokens": result.max_tokens,
            "input_tokens": result.input_tokens,
            "output_tokens": result.output_tokens,
            "stop_reason": result.stop_reason,
            "truncated": result.truncated,
            "latency_s": result.latency_s,
            "attempts": [asdict(a) for a in result.attempts],
        }
        self._write_meta(attempt, meta)

    def write_error(self, attempt: int, error: LlmCallError) -> None:
        meta = {
            "provider": error.provider,
            "model": error.model,
            "error": error.message,
            "kind": error.kind,
            "status": error.status,
            "body_excerpt": error.body_excerpt,
            "attempts": [asdict(a) for a in error.attempts],
        }
        self._write_meta(attempt, meta)

    def _write_meta(self, attempt: int, meta: Mapping[str, object]) -> None:
        path = self.directory / f"attempt-{attempt}-call.json"
        _write(path, json.dumps(meta, indent=2, default=str))


def _write(path: Path, text: str) -> None:
    # A transcript keeps what the model sent; a lone surrogate in it is kept as its escape
    # (`\ud83d`) rather than failing the write.
    path.write_text(text, encoding="utf-8", errors="backslashreplace")
