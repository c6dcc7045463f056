"""`autopack demo`: the whole runbook, in a fresh directory, against a simulated or real model.

The runbook is a list of steps. Most steps are autopack commands run in-process through the
command line's `main(argv, env)` (injected as `invoke`, so this package does not import the
CLI above it): each gets an environment of its own — the directory as its cwd, the caller's
variables without `DATABASE_URL`, and `AUTOPACK_LLM_*` pointed at the simulated model — and its
stdout and stderr go to files under `reports/`. The others are plain Python (git, the legacy
backlog). The caller's `os.environ` gains one variable while the demo runs
(`PYTEST_DISABLE_PLUGIN_AUTOLOAD`, see `_fast_pytest`) and is restored after.

To add a step, add a `CommandStep` to `command_steps`. The workspace is a git repository, so
the drains commit each completed phase's files, one commit per phase, as a real drain does.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from autopack.db import OpenMode, open_database
from autopack.demo.backlog import BacklogSummary, create_legacy_backlog
from autopack.demo.simulated_model import SIMULATED_MODEL_NAME, SimulatedModel
from autopack.environment import Environment
from autopack.errors import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    AutopackError,
    ConfigError,
    Terminated,
)
from autopack.settings import build_target

Invoke = Callable[[list[str], Environment], int]
"""The command line's `main(argv, env)`: runs one autopack command, returns its exit code."""
Progress = Callable[[str], None]

DEFAULT_DIRECTORY: Final = "autopack-demo"
SEED_DB: Final = "autopack_telemetry_seed.db"
LEGACY_DB: Final = "autopack_legacy.db"
WORKSPACE: Final = "workspace"
REPORTS: Final = "reports"
SEED_RUNS: Final = ("telemetry-balanced", "telemetry-collection-v4")
FALLBACK_GIT_NAME: Final = "autopack"
FALLBACK_GIT_EMAIL: Final = "autopack@localhost"
_LLM_PREFIX: Final = "AUTOPACK_LLM_"
_FOUND_PROBLEMS: Final = 1
_PYTEST_AUTOLOAD: Final = "PYTEST_DISABLE_PLUGIN_AUTOLOAD"
_REPORT_COLUMNS: Final = "120"


class DemoStepFailed(AutopackError):
    """A step of the demo was refused or crashed: the runbook could not go on."""

    exit_code = 70


@dataclass(frozen=True)
class CommandStep:
    """One autopack command of the runbook; its stdout is saved as `reports/<name>.txt`."""

    name: str
    title: str
    argv: tuple[str, ...]


@dataclass(frozen=True)
class StepResult:
    name: str
    title: str
    command: str | None
    """The step's command line (`autopack …`); None for the Python steps."""
    exit_code: int
    seconds: float
    output: str | None
    """The step's output (stdout and stderr), relative to the demo directory; None for the
    Python steps."""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "command": self.command,
            "exit_code": self.exit_code,
            "seconds": round(self.seconds, 3),
            "output": self.output,
        }


@dataclass
class DemoReport:
    """What the demo did and where everything it made is."""

    directory: Path
    simulated: bool
    model: str
    ignored_database_url: bool
    steps: list[StepResult] = field(default_factory=list)
    backlog: BacklogSummary | None = None
    seconds: float = 0.0

    @property
    def seed_db(self) -> Path:
        return self.directory / SEED_DB

    @property
    def legacy_db(self) -> Path:
        return self.directory / LEGACY_DB

    @property
    def workspace(self) -> Path:
        return self.directory / WORKSPACE

    @property
    def reports(self) -> Path:
        return self.directory / REPORTS

    def next_commands(self) -> list[str]:
        seed = f"sqlite:///{self.seed_db}"
        legacy = f"sqlite:///{self.legacy_db}"
        return [
            f"autopack db identity --database-url {seed}",
            f"autopack telemetry analyze --success-only --stratify --database-url {seed}",
            f"autopack drain sessions --database-url {legacy}",
            f"autopack triage stale --report-only --database-url {legacy}",
            "autopack demo --real   (once AUTOPACK_LLM_* is configured; see docs/demo.md)",
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "simulated": self.simulated,
            "model": self.model,
            "ignored_database_url": self.ignored_database_url,
            "seed_db": str(self.seed_db),
            "legacy_db": str(self.legacy_db),
            "workspace": str(self.workspace),
            "reports": str(self.reports),
            "seconds": round(self.seconds, 3),
            "steps": [step.to_json() for step in self.steps],
            "backlog": None
            if self.backlog is None
            else {
                "runs": self.backlog.runs,
                "failed": self.backlog.failed,
                "failing_the_same_way": self.backlog.failing_the_same_way,
                "stale_queued": self.backlog.stale_queued,
            },
            "next_commands": self.next_commands(),
        }


@dataclass(frozen=True)
class DemoOptions:
    directory: Path
    real: bool = False
    seed: int = 13
    """The simulated model's seed: the same seed gives the same token figures."""


def prepare_directory(directory: Path) -> Path:
    """The demo's directory, created if missing; a non-empty one is refused (exit 2)."""
    resolved = directory.expanduser().resolve()
    if resolved.exists() and not resolved.is_dir():
        raise ConfigError(
            f"{resolved} exists and is not a directory.",
            hint="give --dir a new or empty directory",
        )
    if resolved.is_dir() and any(resolved.iterdir()):
        raise ConfigError(
            f"{resolved} is not empty; the demo writes only into a new or empty directory.",
            hint="give --dir a new directory, or remove this one",
        )
    resolved.mkdir(parents=True, exist_ok=True)
    return resolved


def demo_environ(environ: Mapping[str, str], llm: Mapping[str, str] | None) -> dict[str, str]:
    """The steps' variables: no DATABASE_URL; with `llm`, it replaces every AUTOPACK_LLM_*.

    The steps write to files, not a terminal: 120 columns keep their tables' ids whole.
    """
    chosen = {k: v for k, v in environ.items() if k != "DATABASE_URL"}
    chosen["COLUMNS"] = _REPORT_COLUMNS
    if llm is not None:
        chosen = {k: v for k, v in chosen.items() if not k.startswith(_LLM_PREFIX)}
        chosen.update(llm)
    return chosen


def require_real_llm(environ: Mapping[str, str]) -> str:
    """The configured model name for `--real`; refused (exit 2) when AUTOPACK_LLM_* is not set."""
    from autopack.llm import load_llm_settings

    if not environ.get(f"{_LLM_PREFIX}PROVIDER") or not environ.get(f"{_LLM_PREFIX}MODEL"):
        raise ConfigError(
            "--real needs a configured builder model, and AUTOPACK_LLM_PROVIDER / "
            "AUTOPACK_LLM_MODEL are not set.",
            hint="set AUTOPACK_LLM_PROVIDER, AUTOPACK_LLM_MODEL and a key (docs/llm.md), "
            "or run autopack demo without --real to use the simulated model",
        )
    return load_llm_settings(environ).model


def command_steps(directory: Path) -> list[CommandStep]:
    """The runbook's autopack commands, in order (the legacy backlog is made before `triage`)."""
    seed = f"sqlite:///{directory / SEED_DB}"
    legacy = f"sqlite:///{directory / LEGACY_DB}"
    workspace = str(directory / WORKSPACE)
    seed_runs = [arg for run in SEED_RUNS for arg in ("--run-id", run)]
    return [
        CommandStep(
            "01-db-init-seed",
            "db init (seed DB)",
            ("db", "init", "--role", "seed", "--database-url", seed),
        ),
        CommandStep(
            "02-db-init-legacy",
            "db init (legacy DB)",
            ("db", "init", "--role", "legacy", "--database-url", legacy),
        ),
        *(
            CommandStep(
                f"03-seed-{run}", f"seed run {run}", ("seed", "run", run, "--database-url", seed)
            )
            for run in SEED_RUNS
        ),
        CommandStep(
            "04-drain-seed",
            "drain the seed runs",
            (
                "drain",
                "batch",
                "--state",
                "queued",
                *seed_runs,
                "--batch-size",
                "200",
                "--max-attempts-per-phase",
                "2",
                # The seed runs' phases are separate small utilities: one that fails does not
                # hold the others back (a real backlog's runs keep their order).
                "--ignore-order",
                "--workspace",
                workspace,
                "--database-url",
                seed,
            ),
        ),
        CommandStep(
            "05-db-identity", "db identity (seed DB)", ("db", "identity", "--database-url", seed)
        ),
        CommandStep(
            "06-telemetry-analyze",
            "telemetry analyze --success-only --stratify",
            (
                "telemetry",
                "analyze",
                "--success-only",
                "--stratify",
                "--output",
                str(directory / REPORTS / "telemetry-analysis.md"),
                "--database-url",
                seed,
            ),
        ),
        CommandStep(
            "07-telemetry-explain",
            "telemetry explain",
            ("telemetry", "explain", "--database-url", seed),
        ),
        CommandStep(
            "07b-calibrate-propose",
            "calibrate propose --min-samples 20 --include-simulated",
            (
                "calibrate",
                "propose",
                "--min-samples",
                "20",
                # The demo's rows come from the simulated model: a real proposal ignores them.
                "--include-simulated",
                "--output-dir",
                str(directory / REPORTS),
                "--database-url",
                seed,
            ),
        ),
    ]


def legacy_steps(directory: Path) -> list[CommandStep]:
    """The steps on the generated legacy backlog."""
    legacy = f"sqlite:///{directory / LEGACY_DB}"
    return [
        CommandStep(
            "09-triage-stale",
            "triage stale --report-only (legacy DB)",
            ("triage", "stale", "--report-only", "--database-url", legacy),
        ),
        CommandStep(
            "10-drain-legacy",
            "sample-first drain batch (legacy DB)",
            (
                "drain",
                "batch",
                "--state",
                "failed",
                "--sample-first",
                "--batch-size",
                "12",
                "--workspace",
                str(directory / WORKSPACE),
                "--database-url",
                legacy,
            ),
        ),
    ]


def init_workspace(workspace: Path, environ: Mapping[str, str]) -> str:
    """`git init` the workspace with one first commit; the fallback identity only if none.

    Returns the identity used. The fallback is set in this repository's own config only.
    """
    workspace.mkdir()
    git_env = dict(environ)

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", *args], cwd=workspace, env=git_env, capture_output=True, text=True, check=False
        )

    try:
        initialised = git("init", "-q")
    except FileNotFoundError:
        raise ConfigError(
            "git is not installed; the demo drains into a git workspace.",
            hint="install git, then run autopack demo again",
        ) from None
    if initialised.returncode != 0:
        raise DemoStepFailed(f"git init failed: {initialised.stderr.strip()}")
    name = git("config", "user.name").stdout.strip()
    email = git("config", "user.email").stdout.strip()
    if not name or not email:
        git("config", "user.name", FALLBACK_GIT_NAME)
        git("config", "user.email", FALLBACK_GIT_EMAIL)
        name, email = FALLBACK_GIT_NAME, FALLBACK_GIT_EMAIL
    (workspace / "README.md").write_text(
        "# autopack demo workspace\n\nFiles written by the builder model land here.\n",
        encoding="utf-8",
    )
    # The drain keeps its transcripts under .autopack/: not the operator's code.
    (workspace / ".gitignore").write_text(".autopack/\n", encoding="utf-8")
    git("add", "README.md", ".gitignore")
    committed = git("commit", "-q", "-m", "autopack demo: empty workspace")
    if committed.returncode != 0:
        raise DemoStepFailed(f"git commit failed: {committed.stderr.strip()}")
    return f"{name} <{email}>"


class _Runner:
    """Runs the steps in order, timing each and saving its output."""

    def __init__(
        self,
        report: DemoReport,
        invoke: Invoke,
        env: Environment,
        environ: dict[str, str],
        progress: Progress,
        total: int,
    ) -> None:
        self.report = report
        self.invoke = invoke
        self.env = env
        self.environ = environ
        self.progress = progress
        self.total = total

    def _announce(self, title: str) -> None:
        self.progress(f"[{len(self.report.steps) + 1}/{self.total}] {title}")

    def command(self, step: CommandStep) -> StepResult:
        self._announce(step.title)
        output_path = self.report.reports / f"{step.name}.txt"
        started = time.monotonic()
        # One file per step, both streams in the order written: the target panel and
        # progress (stderr) read best next to the report they precede (stdout).
        with output_path.open("w", encoding="utf-8") as output:
            step_env = Environment(
                stdin=io.StringIO(),
                stdout=output,
                stderr=output,
                environ=self.environ,
                cwd=self.report.directory,
                clock=self.env.clock,
            )
            code = self.invoke(list(step.argv), step_env)
        result = StepResult(
            step.name,
            step.title,
            shlex.join(["autopack", *step.argv]),
            code,
            time.monotonic() - started,
            str(output_path.relative_to(self.report.directory)),
        )
        self.report.steps.append(result)
        self._check(result)
        return result

    def python(self, name: str, title: str, action: Callable[[], object]) -> None:
        self._announce(title)
        started = time.monotonic()
        action()
        self.report.steps.append(StepResult(name, title, None, 0, time.monotonic() - started, None))

    def _check(self, result: StepResult) -> None:
        # 1 is a finding (failed or stale phases): the step did its job. Anything else stops.
        if result.exit_code == EXIT_INTERRUPTED:
            raise KeyboardInterrupt
        if result.exit_code == EXIT_TERMINATED:
            raise Terminated("terminated during the demo")
        if result.exit_code not in (0, _FOUND_PROBLEMS):
            raise DemoStepFailed(
                f"demo step '{result.title}' exited {result.exit_code}.",
                hint=f"its messages are in {self.report.directory / (result.output or '')}",
            )


def run_demo(
    options: DemoOptions,
    invoke: Invoke,
    env: Environment,
    progress: Progress,
    *,
    extra_steps: Sequence[CommandStep] = (),
) -> DemoReport:
    """Run the runbook in `options.directory` (new or empty); the report says where all is.

    `extra_steps` run after `telemetry explain`, before the legacy backlog (this is where
    `calibrate propose` belongs).
    """
    real_model = require_real_llm(env.environ) if options.real else None
    directory = prepare_directory(options.directory)
    report = DemoReport(
        directory=directory,
        simulated=not options.real,
        model=real_model or SIMULATED_MODEL_NAME,
        ignored_database_url="DATABASE_URL" in env.environ,
    )
    report.reports.mkdir()
    started = time.monotonic()
    first = command_steps(directory)
    last = legacy_steps(directory)
    total = len(first) + len(extra_steps) + len(last) + 2
    model_server = SimulatedModel(seed=options.seed) if not options.real else _NoModel()
    with model_server as model, _fast_pytest():
        llm = model.llm_environ() if isinstance(model, SimulatedModel) else None
        runner = _Runner(report, invoke, env, demo_environ(env.environ, llm), progress, total)
        drain_at = next(i for i, step in enumerate(first) if step.name == "04-drain-seed")
        for step in first[:drain_at]:
            runner.command(step)
        runner.python(
            "git-init",
            "git init the workspace",
            lambda: init_workspace(report.workspace, runner.environ),
        )
        for step in [*first[drain_at:], *extra_steps]:
            runner.command(step)

        def make_backlog() -> None:
            target = build_target(f"sqlite:///{report.legacy_db}", source="demo", cwd=directory)
            with open_database(target, OpenMode.READ_WRITE) as database:
                report.backlog = create_legacy_backlog(database, env.clock())

        runner.python("08-legacy-backlog", "generate a legacy backlog (legacy DB)", make_backlog)
        for step in last:
            runner.command(step)
    report.seconds = time.monotonic() - started
    (report.reports / "demo.json").write_text(
        json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8"
    )
    return report


@contextmanager
def _fast_pytest() -> Iterator[None]:
    """Tests phases' pytest without third-party plugins, while the demo runs; then restored.

    The drain's verification runs pytest with this process's environment. Loading every
    installed plugin costs seconds per tests phase, and the demo's tests need none. The
    variable is set for the demo's duration only, and the caller's value put back after.
    """
    previous = os.environ.get(_PYTEST_AUTOLOAD)
    os.environ[_PYTEST_AUTOLOAD] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(_PYTEST_AUTOLOAD, None)
        else:
            os.environ[_PYTEST_AUTOLOAD] = previous


class _NoModel:
    """`--real`: no local server; the steps use the caller's AUTOPACK_LLM_* as they are."""

    def __enter__(self) -> _NoModel:
        return self

    def __exit__(self, *exc_info: object) -> Literal[False]:
        return False


__all__ = [
    "DEFAULT_DIRECTORY",
    "CommandStep",
    "DemoOptions",
    "DemoReport",
    "DemoStepFailed",
    "StepResult",
    "command_steps",
    "demo_environ",
    "legacy_steps",
    "prepare_directory",
    "run_demo",
]
