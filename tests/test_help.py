"""`--help`: light to import, readable at 80 columns; shell completion; seed show's options.

Each `--help` runs in a subprocess of its own, so `sys.modules` shows exactly what that help
imported: none of the heavy libraries or autopack's database, drain and seed internals
(docs/performance.md, "Help speed"). Timing is the benchmark's job (benchmarks/help_speed.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import typer

from autopack.cli import app as app_module
from autopack.cli.app import ROOT_HELP, build_app, names
from autopack.cli.help import argument_name, help_text
from autopack.cli.reference import commands
from tests.conftest import CliRunner

ROOT = Path(__file__).resolve().parents[1]
HEAVY_LIBRARIES = (
    "sqlalchemy",
    "sqlmodel",
    "alembic",
    "httpx",
    "pydantic_settings",
    "pyarrow",
    "matplotlib",
    "numpy",
)
# Runs `autopack ARGS…` and reports its exit code, its stdout and every module it imported.
RUNNER = """
import contextlib, io, json, sys
from autopack.cli.app import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = main(sys.argv[1:])
sys.__stdout__.write(json.dumps({"code": code, "out": out.getvalue(), "modules": list(sys.modules)}))
"""
# Typer's type markers: <bool>, <str>, <int range>, <list[str]>, <csv|ndjson|parquet>, …
TYPE_MARKER = re.compile(
    r"<(bool|str|int|float|path|datetime|uuid)( range)?>|<list\[|<[\w.-]+(\|[\w.-]+)+>"
)


@cache
def _tree() -> list[tuple[tuple[str, ...], Any]]:
    return list(commands(typer.main.get_command(build_app(None))))


PATHS = [path for path, _ in _tree()]


def _run(*args: str, columns: int = 80) -> dict[str, Any]:
    env = {**os.environ, "COLUMNS": str(columns), "NO_COLOR": "1"}
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def heavy(modules: list[str]) -> list[str]:
    """The modules in `modules` that `--help` must not import."""
    return sorted(
        name
        for name in modules
        if name.split(".")[0] in HEAVY_LIBRARIES
        or name == "autopack.db.models"
        or name.startswith(("autopack.drain.", "autopack.seed."))
    )


def _declared_names(command: Any) -> list[str]:
    found: list[str] = []
    for param in command.params:
        if isinstance(param, typer.core.TyperArgument):
            found.append(argument_name(param))
        else:
            found += [*param.opts, *param.secondary_opts]
    return found


@pytest.mark.parametrize("path", PATHS, ids=lambda path: " ".join(path) or "root")
def test_help_is_light_and_whole_at_80_columns(path: tuple[str, ...]) -> None:
    result = _run(*path, "--help")
    assert result["code"] == 0
    assert heavy(result["modules"]) == [], f"`{' '.join(path)} --help` imports these"
    text = result["out"]
    assert text.startswith(f"Usage: autopack {' '.join(path)}".rstrip())
    command = dict(_tree())[path]
    for name in _declared_names(command):
        # Whole: neither cut (`--skip-run-pref…`) nor run into a neighbour.
        assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), name
    assert not TYPE_MARKER.search(text), TYPE_MARKER.search(text)


def test_the_import_check_sees_an_eager_import() -> None:
    """The check above can fail: a command that runs (not --help) loads the seed machinery."""
    result = _run("seed", "list", "--json")
    assert result["code"] == 0
    assert "autopack.seed.plan" in heavy(result["modules"])


def test_the_marker_check_sees_typers_markers() -> None:
    for marker in ("--x <bool>", "--y <list[str]>", "--z <int range>", "-f <csv|ndjson>"):
        assert TYPE_MARKER.search(marker), marker
    assert not TYPE_MARKER.search("estimator_calibration_proposal_<stamp>.json")


def test_the_root_lists_every_group_from_its_table() -> None:
    assert set(ROOT_HELP) == set(names()), "give each group its line in ROOT_HELP (cli/app.py)"
    text = _run("--help")["out"]
    for name in names():
        # The whole line: short enough that Click does not cut it at 80 columns.
        assert re.search(rf"^  {name} +{re.escape(ROOT_HELP[name])}$", text, re.MULTILINE), name


def test_help_before_a_group_is_the_roots() -> None:
    root = typer.main.get_command(build_app(["--help", "db"]))
    assert list(root.commands) == names()  # type: ignore[attr-defined]
    assert root.commands["db"].help == ROOT_HELP["db"]  # type: ignore[attr-defined]
    group = typer.main.get_command(build_app(["db", "--help"]))
    assert "init" in group.commands["db"].commands  # type: ignore[attr-defined]


def test_a_group_without_a_line_is_listed_from_its_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(app_module.ROOT_HELP, "db")
    root = typer.main.get_command(build_app(["--help"]))
    assert "init" in root.commands["db"].commands  # type: ignore[attr-defined]
    assert root.commands["drain"].help == ROOT_HELP["drain"]  # type: ignore[attr-defined]


def test_example_lines_keep_their_breaks() -> None:
    text = help_text(
        """Do it.

        Long prose that Click may rewrap.
        e.g. autopack seed run a --db seed
             autopack seed run --file b.toml --db seed
        After.
        """
    )
    assert text.split("\n\n") == [
        "Do it.",
        "Long prose that Click may rewrap.",
        "\b\ne.g. autopack seed run a --db seed\n     autopack seed run --file b.toml --db seed",
        "After.",
    ]


def test_an_example_inside_a_sentence_is_prose() -> None:
    assert help_text("Stamp a role (e.g. legacy).") == "Stamp a role (e.g. legacy)."


# -- seed show has no --run-id (it stays on seed run) ------------------------------------------


def test_seed_show_has_no_run_id(cli: CliRunner) -> None:
    seed = dict(_tree())
    assert "--run-id" not in _declared_names(seed[("seed", "show")])
    assert "--run-id" in _declared_names(seed[("seed", "run")])
    result = cli("seed", "show", "telemetry-balanced", "--run-id", "x")
    assert result.exit_code == 2
    assert "--run-id" in result.stderr


def test_seed_show_still_shows_a_builtin(cli: CliRunner) -> None:
    result = cli("seed", "show", "telemetry-balanced", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["run_id"]


# -- shell completion ----------------------------------------------------------------------


def _autopack(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "autopack", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )


def test_show_completion_prints_a_bash_script() -> None:
    # Typer detects the shell from the parent process: run it from bash.
    done = subprocess.run(
        ["bash", "-c", f"'{sys.executable}' -m autopack --show-completion"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "_AUTOPACK_COMPLETE=complete_bash" in done.stdout
    assert "complete -o default -F _autopack_completion autopack" in done.stdout


def test_completion_answers_from_the_named_group() -> None:
    words = {"COMP_CWORD": "2", "_AUTOPACK_COMPLETE": "complete_bash"}
    done = _autopack(env={**words, "COMP_WORDS": "autopack drain ba"})
    assert (done.returncode, done.stdout.split()) == (0, ["batch"])
    done = _autopack(
        env={**words, "COMP_CWORD": "3", "COMP_WORDS": "autopack drain batch --max-to"}
    )
    assert done.stdout.split() == ["--max-total-minutes", "--max-total-tokens"]
    done = _autopack(env={**words, "COMP_CWORD": "1", "COMP_WORDS": "autopack tel"})
    assert done.stdout.split() == ["telemetry"]


def test_completion_for_an_unknown_shell_is_refused() -> None:
    done = _autopack(env={"_AUTOPACK_COMPLETE": "complete_tcsh", "COMP_WORDS": "autopack "})
    assert done.returncode == 1
    assert "tcsh not supported" in done.stderr
