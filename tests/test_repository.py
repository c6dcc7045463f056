"""The repository stands alone: its tests read only files inside it, and CI runs the README's
test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_test_command() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = [line for line in readme.splitlines() if "-m pytest" in line]
    assert len(commands) == 1, commands
    return commands[0].strip()


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    command = _readme_test_command()
    # The line may only add the capture of pytest's status after the command.
    assert any(line in (command, f"{command} || status=$?") for line in ci.splitlines())


def test_ci_never_passes_on_an_empty_collection() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r'"\$status" -eq 5 \]; then\n(?:.*\n)*?\s*exit 1', ci)


def test_tests_read_no_path_outside_the_repository() -> None:
    outside = re.compile(r"\.\./shared|/work/|parents\[2\]|parent\.parent\.parent")
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "tests").rglob("*.py")
        if path != Path(__file__).resolve() and outside.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
