"""Verify a phase's deliverables after the builder's files were written.

Checks, for every deliverable in order (all files are checked, so every problem is listed):

1. `exists` — every deliverable is a regular file inside the workspace;
2. `non_empty` — it holds something other than whitespace;
3. `python_syntax` — `.py` / `.pyi` files parse with `ast.parse` (the error names file:line);
4. `pytest` — tests phases only, and only when every file check passed: `sys.executable -m pytest
   -q -p no:cacheprovider <test files>` in a subprocess, cwd the workspace, with a timeout
   (the whole process group is killed when it expires) and an environment without secrets.

Test files are the `.py` deliverables whose basename starts with `test_` or ends with
`_test.py` (pytest's default patterns). A tests phase without such a deliverable (e.g. only a
`conftest.py`) passes this check with a note: there is nothing to run.

Non-tests phases never start a subprocess; verifying a small `.py` deliverable costs well under
a millisecond.
"""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Final

from autopack.executor.scrubbed_env import child_environment, is_secret_variable
from autopack.executor.workspace import normalize_relative_path

_PYTHON_SUFFIXES: Final = (".py", ".pyi")
_OUTPUT_TAIL_CHARS: Final = 4000
_KILL_GRACE_S: Final = 5.0
_PYTEST_EXIT_CODES: Final[dict[int, str]] = {
    1: "tests failed",
    2: "interrupted",
    3: "internal error",
    4: "usage error",
    5: "no tests collected",
}


@dataclass(frozen=True, slots=True)
class Check:
    """One verification check: what was checked, on which file, and how it went."""

    name: str
    """`exists`, `non_empty`, `python_syntax` or `pytest`."""
    ok: bool
    detail: str
    """One line: the file and what was found."""
    path: str | None = None
    """The deliverable checked (`None` for the pytest run, which covers several)."""
    output: str = ""
    """The tail of pytest's output (pytest check only)."""


@dataclass(frozen=True, slots=True)
class VerificationResult:
    """All checks run, and the first failure as one line."""

    ok: bool
    checks: list[Check] = field(default_factory=list)
    failure_reason: str | None = None


def is_test_file(path: str) -> bool:
    """Whether pytest collects this file by default: `test_*.py` or `*_test.py`."""
    name = PurePosixPath(path).name
    return name.endswith(".py") and (name.startswith("test_") or name.endswith("_test.py"))


def verify_deliverables(
    deliverables: Sequence[str],
    workspace: Path,
    *,
    is_tests_phase: bool,
    pytest_timeout_s: float,
    sandbox: Sequence[str] = (),
) -> VerificationResult:
    """Check the deliverables (paths relative to `workspace`) as the module docstring says.

    `sandbox` is a command prefix that confines the pytest child (`executor.sandbox`).
    `ok` is true when every check passed (no deliverables: nothing to check, ok). The
    `failure_reason` names the first failed check and the file, e.g.
    `python_syntax: src/app.py:3: invalid syntax`.
    """
    root = workspace.resolve()
    checks: list[Check] = []
    for deliverable in deliverables:
        checks.extend(_check_file(deliverable, root))
    if is_tests_phase and all(check.ok for check in checks):
        tests = [d for d in (_normalized(item) for item in deliverables) if d and is_test_file(d)]
        checks.append(_run_pytest(tests, root, pytest_timeout_s, sandbox))
    failed = next((check for check in checks if not check.ok), None)
    if failed is None:
        return VerificationResult(ok=True, checks=checks)
    return VerificationResult(
        ok=False, checks=checks, failure_reason=f"{failed.name}: {failed.detail}"
    )


def _normalized(deliverable: str) -> str | None:
    try:
        return normalize_relative_path(deliverable)
    except ValueError:
        return None


def _check_file(deliverable: str, root: Path) -> list[Check]:
    relative = _normalized(deliverable)
    if relative is None or relative == ".":
        return [Check("exists", False, f"{deliverable} is not a path inside the workspace")]
    path = root / relative
    real = Path(os.path.realpath(path))
    if real != root and root not in real.parents:
        return [Check("exists", False, f"{relative} leads outside the workspace", relative)]
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        return [Check("exists", False, f"{relative} {what}", relative)]
    checks = [Check("exists", True, f"{relative} exists", relative)]
    try:
        data = path.read_bytes()
    except OSError as exc:
        checks.append(Check("non_empty", False, f"{relative} cannot be read: {exc}", relative))
        return checks
    if not data.strip():
        what = "is empty" if not data else "holds only whitespace"
        checks.append(Check("non_empty", False, f"{relative} {what}", relative))
        return checks
    checks.append(Check("non_empty", True, f"{relative} has {len(data)} bytes", relative))
    if relative.endswith(_PYTHON_SUFFIXES):
        checks.append(_check_syntax(relative, data))
    return checks


def _check_syntax(relative: str, data: bytes) -> Check:
    try:
        ast.parse(data, filename=relative)
    except SyntaxError as exc:
        where = f"{relative}:{exc.lineno}" if exc.lineno is not None else relative
        return Check("python_syntax", False, f"{where}: {exc.msg}", relative)
    except ValueError as exc:  # e.g. a NUL byte in the source
        return Check("python_syntax", False, f"{relative}: {exc}", relative)
    return Check("python_syntax", True, f"{relative} parses", relative)


def _run_pytest(
    tests: list[str], root: Path, timeout_s: float, sandbox: Sequence[str] = ()
) -> Check:
    if not tests:
        return Check("pytest", True, "no test files among the deliverables; pytest not run")
    command = [*sandbox, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests]
    posix = os.name == "posix"
    with tempfile.TemporaryFile() as capture:
        process = subprocess.Popen(
            command,
            cwd=root,
            env=child_environment(),
            stdin=subprocess.DEVNULL,
            stdout=capture,
            stderr=subprocess.STDOUT,
            start_new_session=posix,
        )
        try:
            code = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill(process, posix)
            output = _tail(capture)
            return Check(
                "pytest",
                False,
                f"timed out after {timeout_s:g} s running {' '.join(tests)} (killed)",
                output=output,
            )
        except BaseException:
            _kill(process, posix)
            raise
        output = _tail(capture)
    if code == 0:
        return Check("pytest", True, f"{_summary(output) or 'passed'} ({' '.join(tests)})")
    meaning = _PYTEST_EXIT_CODES.get(code, f"exit code {code}")
    summary = _summary(output)
    detail = f"{meaning} in {' '.join(tests)}" + (f": {summary}" if summary else "")
    return Check("pytest", False, detail, output=output)


def _kill(process: subprocess.Popen[bytes], posix: bool) -> None:
    """Kill the child and everything it started (its own session), then reap it."""
    try:
        if posix:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout=_KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _tail(capture: IO[bytes]) -> str:
    capture.seek(0, os.SEEK_END)
    size = capture.tell()
    capture.seek(max(0, size - _OUTPUT_TAIL_CHARS))
    return capture.read().decode("utf-8", errors="replace").strip()


def _summary(output: str) -> str:
    """pytest's last line (`1 failed, 2 passed in 0.10s`), without the `=` padding."""
    for line in reversed(output.splitlines()):
        text = line.strip().strip("=").strip()
        if text:
            return text
    return ""


__all__ = [
    "Check",
    "VerificationResult",
    "child_environment",
    "is_secret_variable",
    "is_test_file",
    "verify_deliverables",
]
