"""docs/cli-reference.md is what `python -m autopack.cli.reference` writes today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Annotated

import pytest
import typer

from autopack.cli import app as app_module
from autopack.cli.reference import REGENERATE, reference

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "docs" / "cli-reference.md"


def test_the_committed_reference_is_current() -> None:
    assert reference() == COMMITTED.read_text(encoding="utf-8"), f"stale: run {REGENERATE}"


def test_the_reference_does_not_depend_on_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    wide = reference()
    monkeypatch.setenv("COLUMNS", "40")
    assert reference() == wide


def test_the_module_runs_as_a_script() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "autopack.cli.reference"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"COLUMNS": "300", "PATH": ""},
        timeout=120,
        check=True,
    )
    assert done.stdout == COMMITTED.read_text(encoding="utf-8")


def shout_command(
    times: Annotated[int, typer.Option("--times", metavar="N", min=1, help="How often.")] = 2,
    word: Annotated[str, typer.Argument(help="What to shout.")] = "hey",
) -> None:
    """Shout a word.

    e.g. autopack shout --times 3 hello
    """


def test_a_new_command_in_the_tables_appears(monkeypatch: pytest.MonkeyPatch) -> None:
    """So the committed file goes stale (and this suite fails) when a command is added."""
    monkeypatch.setitem(app_module.COMMANDS, "shout", (__name__, "shout_command"))
    text = reference()
    assert text != COMMITTED.read_text(encoding="utf-8")
    assert "- [`autopack shout`](#autopack-shout)" in text
    section = text.split("## autopack shout\n", 1)[1].split("\n## ", 1)[0]
    assert "```\nautopack shout [OPTIONS] [WORD]\n```" in section
    assert "Shout a word." in section
    assert "```\nautopack shout --times 3 hello\n```" in section
    assert "| `--times` | N | `2` | How often. At least 1. |" in section
    assert "| WORD |  | `hey` | What to shout. |" in section


def test_markdown_is_escaped_outside_code() -> None:
    text = reference()
    batch = text.split("## autopack drain batch\n", 1)[1].split("\n## ", 1)[0]
    assert "failed \\| queued \\| all" in batch  # a | inside a table cell
    propose = text.split("## autopack calibrate propose\n", 1)[1].split("\n## ", 1)[0]
    assert "proposal_&lt;stamp&gt;.md" in propose  # prose: not an HTML tag
    backtest = text.split("## autopack calibrate backtest\n", 1)[1].split("\n## ", 1)[0]
    assert "reports/estimator_calibration_proposal_<stamp>.json --db other" in backtest  # code
