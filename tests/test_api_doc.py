"""docs/api.md is real: its Python blocks run, in order, against the fake LLM server, and each
prints what the `text` block after it says."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from tests.builder_replies import reply_for
from tests.fake_llm import FakeLlmServer, Reply

API_DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"
BLOCK = re.compile(r"```(python|text)\n(.*?)```", re.DOTALL)
DRAINED = ("string_helper.py", "number_helper.py", "list_helper.py")


def doc_cells(text: str) -> list[tuple[str, str | None]]:
    """(python code, the text it prints or None) for each Python block, in order."""
    cells: list[tuple[str, str | None]] = []
    for kind, body in BLOCK.findall(text):
        if kind == "python":
            cells.append((body, None))
        else:
            assert cells, "a text block follows a Python block"
            assert cells[-1][1] is None, "one text block per Python block"
            cells[-1] = (cells[-1][0], body)
    return cells


def test_the_page_has_cells_with_their_output() -> None:
    cells = doc_cells(API_DOC.read_text(encoding="utf-8"))
    assert len(cells) == 5
    assert all(printed for _, printed in cells)


def test_every_cell_runs_and_prints_what_the_page_says(
    workdir: Path, fake_llm: FakeLlmServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in fake_llm.env("anthropic").items():
        monkeypatch.setenv(name, value)
    fake_llm.queue(
        *(
            Reply.ok(reply_for([f"examples/telemetry_utils/{name}"]), output_tokens=400)
            for name in DRAINED
        )
    )
    namespace: dict[str, object] = {"__name__": "notebook"}
    for number, (code, printed) in enumerate(doc_cells(API_DOC.read_text(encoding="utf-8"))):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"docs/api.md cell {number + 1}", "exec"), namespace)
        assert out.getvalue() == printed, f"cell {number + 1}"
    assert fake_llm.pending == 0
    assert (workdir / "notebook.db").is_file()
