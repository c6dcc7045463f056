"""The README's quick start, run literally: if its commands break, this fails.

The commands are read out of README.md (the fenced blocks under the quick-start heading), not
copied here, so the test and the README cannot drift apart. The venv and pip steps are the only
ones skipped (the suite already runs in an installed virtualenv); every autopack step runs as
`sys.executable -m autopack …` in a temporary directory, with no network (the quick start's
`autopack demo` uses the simulated model).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
QUICK_START_HEADING = re.compile(r"^##\s+Quick start\b", re.IGNORECASE)
FENCE = re.compile(r"^```")
AUTOPACK_PROGRAMS = frozenset({"autopack", ".venv/bin/autopack"})
SETUP_PROGRAMS = frozenset({"python3", ".venv/bin/pip"})
"""The only steps that are not autopack: making the virtualenv and installing into it."""
# The demo drains 50-odd phases through the simulated model; on a busy 2-core machine that
# takes well under a minute, so ten minutes only ever trips on a hang.
STEP_TIMEOUT_S = 600
# Variables that would point a step somewhere else than the fresh directory the README
# assumes: a DB, a real model, an ambient autopack.toml is excluded by the temporary cwd.
_AMBIENT_PREFIXES = ("AUTOPACK_LLM_", "DATABASE_URL", "TELEMETRY_DB_ENABLED")


class QuickStartError(AssertionError):
    """The README's quick start is missing or holds a step this test cannot run."""


@dataclass(frozen=True)
class Step:
    """One command of the quick start, split as a POSIX shell would."""

    argv: tuple[str, ...]

    @property
    def is_autopack(self) -> bool:
        return self.argv[0] in AUTOPACK_PROGRAMS

    @property
    def is_setup(self) -> bool:
        return self.argv[0] in SETUP_PROGRAMS


def quick_start_blocks(markdown: str) -> list[str]:
    """The fenced code blocks between the quick-start heading and the next `## ` heading."""
    lines = markdown.splitlines()
    start = next((i for i, line in enumerate(lines) if QUICK_START_HEADING.match(line)), None)
    if start is None:
        raise QuickStartError("README.md has no '## Quick start' section")
    blocks: list[str] = []
    current: list[str] | None = None
    for line in lines[start + 1 :]:
        if current is None and line.startswith("## "):
            break
        if FENCE.match(line):
            if current is None:
                current = []
            else:
                blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line)
    if current is not None:
        raise QuickStartError("the quick start has an unclosed code block")
    if not blocks:
        raise QuickStartError("the quick-start section has no code block")
    return blocks


def quick_start_steps(markdown: str) -> list[Step]:
    """Every command of the quick start, in order: lines and `&&` separate commands."""
    steps: list[Step] = []
    for block in quick_start_blocks(markdown):
        for line in block.replace("\\\n", " ").splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            for command in re.split(r"\s*&&\s*", line.strip()):
                if re.search(r"[|;<>`$]|\|\|", command):
                    raise QuickStartError(f"not a plain command: {command!r}")
                steps.append(Step(tuple(shlex.split(command))))
    for step in steps:
        if not (step.is_autopack or step.is_setup):
            raise QuickStartError(
                f"a quick-start step is neither autopack nor the venv/pip set-up: {step.argv}"
            )
    if not any(step.is_autopack for step in steps):
        raise QuickStartError("the quick start runs no autopack command")
    return steps


def _environ() -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(_AMBIENT_PREFIXES)}
    environ.update({"NO_COLOR": "1", "COLUMNS": "120"})
    return environ


# --- the parser, on READMEs that are wrong in each way it must notice -------------------------

_GOOD = """# x

## Quick start

```sh
python3 -m venv .venv && .venv/bin/pip install -q -e .
.venv/bin/autopack demo \\
  --dir here
autopack db identity --db seed
```

## Tests

```sh
rm -rf /
```
"""


def test_the_parser_reads_commands_split_by_lines_and_ands() -> None:
    steps = quick_start_steps(_GOOD)
    assert [step.argv for step in steps] == [
        ("python3", "-m", "venv", ".venv"),
        (".venv/bin/pip", "install", "-q", "-e", "."),
        (".venv/bin/autopack", "demo", "--dir", "here"),
        ("autopack", "db", "identity", "--db", "seed"),
    ]
    assert [step.is_autopack for step in steps] == [False, False, True, True]


@pytest.mark.parametrize(
    ("markdown", "message"),
    [
        ("# x\n\n## Install\n\n```sh\nautopack demo\n```\n", "no '## Quick start'"),
        ("## Quick start\n\nJust run it.\n\n## Tests\n", "no code block"),
        ("## Quick start\n\n```sh\nautopack demo\n", "unclosed"),
        ("## Quick start\n\n```sh\nrm -rf autopack-demo && autopack demo\n```\n", "neither"),
        ("## Quick start\n\n```sh\nautopack demo | tee log\n```\n", "not a plain command"),
        ("## Quick start\n\n```sh\npython3 -m venv .venv\n```\n", "no autopack command"),
    ],
)
def test_the_parser_refuses_a_quick_start_it_cannot_run_literally(
    markdown: str, message: str
) -> None:
    with pytest.raises(QuickStartError, match=message):
        quick_start_steps(markdown)


# --- the README itself --------------------------------------------------------------------------


def test_the_readme_quick_start_runs_as_written(tmp_path: Path) -> None:
    steps = quick_start_steps(README.read_text(encoding="utf-8"))
    # The set-up steps are exactly: make the venv, pip-install the clone.
    assert [step.argv[0] for step in steps if step.is_setup] == ["python3", ".venv/bin/pip"]
    outputs: list[str] = []
    for step in (step for step in steps if step.is_autopack):
        argv = [sys.executable, "-m", "autopack", *step.argv[1:]]
        done = subprocess.run(
            argv,
            cwd=tmp_path,
            env=_environ(),
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT_S,
            check=False,
        )
        assert done.returncode == 0, (
            f"README quick-start step {shlex.join(step.argv)} exited {done.returncode}\n"
            f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        )
        outputs.append(done.stdout + done.stderr)
    # The demo said where its DBs are, and the identity step found the seed DB it made.
    demo = tmp_path / "autopack-demo"
    assert (demo / "autopack_telemetry_seed.db").is_file()
    assert (demo / "autopack_legacy.db").is_file()
    assert any(str(demo / "autopack_telemetry_seed.db") in output for output in outputs)
    assert any("role" in output and "seed" in output for output in outputs[1:])
