"""verify_deliverables: file checks, Python syntax, and real pytest subprocesses."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from autopack.executor.verify import (
    VerificationResult,
    child_environment,
    is_secret_variable,
    is_test_file,
    verify_deliverables,
)

PKG = "pkg"
HELPER = "def double(x: int) -> int:\n    return 2 * x\n"


@pytest.fixture(autouse=True)
def _fast_child_pytest(monkeypatch: pytest.MonkeyPatch) -> None:
    """The child pytest inherits the environment; skipping plugin autoload (hypothesis alone
    costs over a second to import) keeps these real subprocess tests fast."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


def _write(root: Path, relative: str, content: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")


def _verify(
    root: Path, deliverables: list[str], *, tests: bool = False, timeout: float = 60.0
) -> VerificationResult:
    return verify_deliverables(deliverables, root, is_tests_phase=tests, pytest_timeout_s=timeout)


# --- file checks --------------------------------------------------------------------------


def test_existing_python_and_text_deliverables_pass(tmp_path: Path) -> None:
    _write(tmp_path, "pkg/helper.py", HELPER)
    _write(tmp_path, "pkg/README.md", "# Helper\n")
    result = _verify(tmp_path, ["pkg/helper.py", "pkg/README.md"])
    assert result.ok
    assert result.failure_reason is None
    names = [(check.name, check.path) for check in result.checks]
    assert names == [
        ("exists", "pkg/helper.py"),
        ("non_empty", "pkg/helper.py"),
        ("python_syntax", "pkg/helper.py"),
        ("exists", "pkg/README.md"),
        ("non_empty", "pkg/README.md"),
    ]
    assert all(check.ok for check in result.checks)


def test_missing_deliverable_fails_naming_it(tmp_path: Path) -> None:
    _write(tmp_path, "pkg/a.py", HELPER)
    result = _verify(tmp_path, ["pkg/a.py", "pkg/b.py"])
    assert not result.ok
    assert result.failure_reason == "exists: pkg/b.py does not exist"


def test_directory_is_not_a_deliverable_file(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    result = _verify(tmp_path, ["pkg/sub"])
    assert result.failure_reason == "exists: pkg/sub is a directory, not a file"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "non_empty: pkg/a.py is empty"),
        ("  \n\t\n", "non_empty: pkg/a.py holds only whitespace"),
    ],
)
def test_empty_deliverable_fails(tmp_path: Path, content: str, expected: str) -> None:
    _write(tmp_path, "pkg/a.py", content)
    result = _verify(tmp_path, ["pkg/a.py"])
    assert not result.ok
    assert result.failure_reason == expected
    assert [check.name for check in result.checks] == ["exists", "non_empty"]


def test_syntax_error_reports_file_and_line(tmp_path: Path) -> None:
    _write(tmp_path, "pkg/bad.py", "x = 1\n\ndef broken(:\n    pass\n")
    result = _verify(tmp_path, ["pkg/bad.py"])
    assert not result.ok
    assert result.failure_reason is not None
    assert result.failure_reason.startswith("python_syntax: pkg/bad.py:3: ")


def test_null_byte_in_python_source_fails_cleanly(tmp_path: Path) -> None:
    (tmp_path / "n.py").write_bytes(b"x = 1\0\n")
    result = _verify(tmp_path, ["n.py"])
    assert not result.ok
    assert result.failure_reason is not None
    assert result.failure_reason.startswith("python_syntax: n.py")


def test_non_python_files_are_not_parsed(tmp_path: Path) -> None:
    _write(tmp_path, "conf/settings.json", "{not: valid python (")
    result = _verify(tmp_path, ["conf/settings.json"])
    assert result.ok
    assert "python_syntax" not in [check.name for check in result.checks]


def test_every_file_is_checked_and_the_first_failure_is_reported(tmp_path: Path) -> None:
    _write(tmp_path, "a.py", "def (\n")
    result = _verify(tmp_path, ["a.py", "missing.py"])
    failed = [check for check in result.checks if not check.ok]
    assert [check.name for check in failed] == ["python_syntax", "exists"]
    assert result.failure_reason is not None
    assert result.failure_reason.startswith("python_syntax: a.py:1")


@pytest.mark.parametrize("deliverable", ["../escape.py", "/etc/hostname", "."])
def test_paths_outside_the_workspace_fail(tmp_path: Path, deliverable: str) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (tmp_path / "escape.py").write_text(HELPER)
    result = _verify(ws, [deliverable])
    assert not result.ok
    assert result.failure_reason == f"exists: {deliverable} is not a path inside the workspace"


def test_symlink_leading_outside_fails(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (tmp_path / "outside.py").write_text(HELPER)
    (ws / "link.py").symlink_to(tmp_path / "outside.py")
    result = _verify(ws, ["link.py"])
    assert result.failure_reason == "exists: link.py leads outside the workspace"


def test_no_deliverables_is_ok(tmp_path: Path) -> None:
    result = _verify(tmp_path, [])
    assert result.ok
    assert result.checks == []


def test_non_tests_phase_starts_no_subprocess(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a subprocess was started")

    monkeypatch.setattr(subprocess, "Popen", forbidden)
    _write(tmp_path, "pkg/test_helper.py", "def test_x() -> None:\n    assert True\n")
    started = time.perf_counter()
    result = _verify(tmp_path, ["pkg/test_helper.py"], tests=False)
    elapsed = time.perf_counter() - started
    assert result.ok
    assert elapsed < 1.0  # generous: the real figure is well under a millisecond


# --- tests phases: real pytest subprocesses ------------------------------------------------


def test_tests_phase_runs_pytest_and_passes(tmp_path: Path) -> None:
    _write(tmp_path, "pkg/helper.py", HELPER)
    _write(
        tmp_path,
        "pkg/test_helper.py",
        "from helper import double\n\n\ndef test_double() -> None:\n    assert double(2) == 4\n",
    )
    _write(tmp_path, "pkg/conftest.py", "import pytest\n")
    result = _verify(tmp_path, ["pkg/test_helper.py", "pkg/conftest.py"], tests=True)
    assert result.ok, result.failure_reason
    pytest_check = result.checks[-1]
    assert pytest_check.name == "pytest"
    assert pytest_check.ok
    assert "1 passed" in pytest_check.detail
    assert "pkg/test_helper.py" in pytest_check.detail
    # Verification leaves no cache or bytecode behind in the operator's workspace.
    assert not (tmp_path / ".pytest_cache").exists()
    assert not list(tmp_path.rglob("__pycache__"))


def test_tests_phase_failing_test_fails_with_summary(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "pkg/test_fail.py",
        "def test_ok() -> None:\n    assert True\n\n\ndef test_bad() -> None:\n    assert 1 == 2\n",
    )
    result = _verify(tmp_path, ["pkg/test_fail.py"], tests=True)
    assert not result.ok
    assert result.failure_reason is not None
    assert result.failure_reason.startswith("pytest: tests failed in pkg/test_fail.py: ")
    assert "1 failed, 1 passed" in result.failure_reason
    assert "\n" not in result.failure_reason
    assert "assert 1 == 2" in result.checks[-1].output


def test_tests_phase_without_tests_collected_fails(tmp_path: Path) -> None:
    _write(tmp_path, "pkg/test_empty.py", "VALUE = 1\n")
    result = _verify(tmp_path, ["pkg/test_empty.py"], tests=True)
    assert not result.ok
    assert result.failure_reason is not None
    assert result.failure_reason.startswith("pytest: no tests collected")


def test_tests_phase_timeout_kills_the_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    _write(
        tmp_path,
        "test_slow.py",
        "import subprocess, sys, time\n\n\n"
        "def test_slow() -> None:\n"
        "    child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"    open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "    time.sleep(60)\n",
    )
    started = time.monotonic()
    result = _verify(tmp_path, ["test_slow.py"], tests=True, timeout=2.0)
    elapsed = time.monotonic() - started
    assert not result.ok
    assert result.failure_reason == "pytest: timed out after 2 s running test_slow.py (killed)"
    assert elapsed < 10
    grandchild = int(pid_file.read_text())
    assert _gone(grandchild), "the test's own child process survived the timeout"


def _gone(pid: int) -> bool:
    deadline = time.monotonic() + 5
    status = Path(f"/proc/{pid}/status")
    while time.monotonic() < deadline:
        try:
            state = next(
                line for line in status.read_text().splitlines() if line.startswith("State:")
            )
        except (FileNotFoundError, ProcessLookupError):
            return True
        if "Z" in state.split()[1]:
            return True  # killed; waiting for its new parent to reap it
        time.sleep(0.05)
    return False


def test_tests_phase_child_environment_has_no_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {
        "ANTHROPIC_API_KEY": "sk-ant-secret",
        "OPENAI_API_KEY": "sk-secret",
        "AUTOPACK_LLM_API_KEY": "sk-llm-secret",
        "DATABASE_URL": "sqlite:////tmp/autopack.db",
        "GITHUB_TOKEN": "ghp_secret",
        "MY_CLIENT_SECRET": "shh",
        "PGPASSWORD": "pw",
        "AUTOPACK_TEST_POSTGRES_URL": "postgresql://user:hunter2@127.0.0.1/test",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("VISIBLE_MARKER", "kept")
    # autopack's own settings say where the secrets are: none reaches the model's code.
    monkeypatch.setenv("AUTOPACK_LLM_BASE_URL", "http://127.0.0.1:9/secret-path")
    _write(
        tmp_path,
        "test_env.py",
        "import os\n\n\n"
        "def test_env() -> None:\n"
        f"    for name in {sorted(secrets)!r}:\n"
        "        assert name not in os.environ, name\n"
        "    assert not any('secret' in value for value in os.environ.values())\n"
        "    assert os.environ['VISIBLE_MARKER'] == 'kept'\n"
        "    assert not [name for name in os.environ if name.startswith('AUTOPACK_')]\n"
        "    assert os.environ['PYTHONDONTWRITEBYTECODE'] == '1'\n",
    )
    result = _verify(tmp_path, ["test_env.py"], tests=True)
    assert result.ok, result.checks[-1].output


def test_tests_phase_skips_pytest_when_a_file_check_failed(tmp_path: Path) -> None:
    _write(tmp_path, "test_broken.py", "def test_x(:\n")
    result = _verify(tmp_path, ["test_broken.py"], tests=True)
    assert not result.ok
    assert "pytest" not in [check.name for check in result.checks]
    assert result.failure_reason is not None
    assert result.failure_reason.startswith("python_syntax: test_broken.py:1")


def test_tests_phase_without_test_files_notes_it(tmp_path: Path) -> None:
    _write(tmp_path, "pkg/conftest.py", "import pytest\n")
    result = _verify(tmp_path, ["pkg/conftest.py"], tests=True)
    assert result.ok
    assert result.checks[-1].name == "pytest"
    assert result.checks[-1].detail == "no test files among the deliverables; pytest not run"


# --- helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("examples/telemetry_utils/test_string_helper.py", True),
        ("pkg/helper_test.py", True),
        ("test_x.py", True),
        ("examples/telemetry_utils/conftest.py", False),
        ("tests/helpers.py", False),
        ("pkg/test_data.json", False),
        ("pkg/contest_test.txt", False),
    ],
)
def test_is_test_file(path: str, expected: bool) -> None:
    assert is_test_file(path) is expected


@pytest.mark.parametrize(
    ("name", "value", "secret"),
    [
        ("ANTHROPIC_API_KEY", "x", True),
        ("openai_api_key", "x", True),
        ("AUTOPACK_LLM_API_KEY", "x", True),
        ("HF_TOKEN", "x", True),
        ("AWS_SECRET_ACCESS_KEY", "x", True),
        ("PGPASSWORD", "x", True),
        ("DATABASE_URL", "sqlite:///a.db", True),
        ("AUTOPACK_DATABASE_URL", "sqlite:///a.db", True),
        ("REDIS_URL", "redis://:pw@host:6379/0", True),
        ("SERVICE_URL", "https://user:pw@example.com/", True),
        ("HOME", "/home/me", False),
        ("PATH", "/usr/bin", False),
        ("HTTP_PROXY", "http://proxy:3128", False),
    ],
)
def test_is_secret_variable(name: str, value: str, secret: bool) -> None:
    assert is_secret_variable(name, value) is secret


def test_child_environment_filters_a_given_base() -> None:
    env = child_environment({"PATH": "/bin", "OPENAI_API_KEY": "sk", "DATABASE_URL": "x"})
    assert env == {"PATH": "/bin", "PYTHONDONTWRITEBYTECODE": "1"}
