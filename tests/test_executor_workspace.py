"""Writing builder files: scope rules, escapes, atomicity, and dirty-scope detection with git."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from autopack.errors import AutopackError
from autopack.executor.workspace import (
    ScopeViolation,
    WorkspaceError,
    check_paths,
    dirty_scope_paths,
    normalize_relative_path,
    write_files_atomically,
)

SCOPE = ["examples/telemetry_utils/"]


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "examples" / "telemetry_utils").mkdir(parents=True)
    return root


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


# --- normalize_relative_path --------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a/b.py", "a/b.py"),
        ("./a//b.py", "a/b.py"),
        ("a/./b/", "a/b"),
        (" a/b.py ", "a/b.py"),
        (".", "."),
        ("./", "."),
    ],
)
def test_normalize_relative_path(raw: str, expected: str) -> None:
    assert normalize_relative_path(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("C:/x.py", "absolute"),
        ("//server/share/x.py", "absolute"),
        ("a/../../x.py", "'..'"),
        ("..", "'..'"),
        ("a\\b.py", "backslash"),
        ("a\0b.py", "NUL"),
    ],
)
def test_normalize_relative_path_refuses(raw: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        normalize_relative_path(raw)


# --- check_paths --------------------------------------------------------------------------


def test_scope_violation_is_an_autopack_error_naming_the_path(ws: Path) -> None:
    with pytest.raises(ScopeViolation) as caught:
        check_paths([("/etc/passwd", "x")], SCOPE, ws)
    assert isinstance(caught.value, AutopackError)
    assert isinstance(caught.value, WorkspaceError)
    assert caught.value.path == "/etc/passwd"
    assert "'/etc/passwd'" in str(caught.value)
    assert "absolute" in str(caught.value)
    assert caught.value.hint


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/tmp/evil.py", "absolute"),
        ("examples/telemetry_utils/../../evil.py", "'..'"),
        ("../evil.py", "'..'"),
        ("src/app.py", "outside the phase's scope paths"),
        ("examples/telemetry_utils_v5/x.py", "outside the phase's scope paths"),
        ("examples/x.py", "outside the phase's scope paths"),
        (".", "workspace root"),
    ],
)
def test_check_paths_refuses(ws: Path, path: str, reason: str) -> None:
    with pytest.raises(ScopeViolation, match=reason) as caught:
        check_paths([(path, "x")], SCOPE, ws)
    assert caught.value.path == path


def test_a_directory_cannot_be_replaced_by_a_file(ws: Path) -> None:
    with pytest.raises(WorkspaceError, match="a directory exists"):
        check_paths([("examples/telemetry_utils", "x")], SCOPE, ws)


def test_check_paths_accepts_nested_new_directories(ws: Path) -> None:
    check_paths(
        [("examples/telemetry_utils/a.py", "A"), ("examples/telemetry_utils/sub/b.py", "B")],
        SCOPE,
        ws,
    )
    assert not (ws / "examples" / "telemetry_utils" / "sub").exists()
    assert not (ws / "examples" / "telemetry_utils" / "a.py").exists()


def test_file_scope_and_whole_workspace_scope(ws: Path) -> None:
    check_paths([("src/app.py", "x")], ["src/app.py"], ws)
    with pytest.raises(ScopeViolation):
        check_paths([("src/app.pyc", "x")], ["src/app.py"], ws)
    check_paths([("anything/at/all.txt", "x")], ["."], ws)


def test_no_scope_paths_means_no_writes(ws: Path) -> None:
    with pytest.raises(ScopeViolation, match="no scope paths"):
        check_paths([("examples/telemetry_utils/a.py", "x")], [], ws)


def test_unusable_scope_path_is_refused(ws: Path) -> None:
    with pytest.raises(ScopeViolation, match="scope path is unusable") as caught:
        check_paths([("x.py", "x")], ["../outside"], ws)
    assert caught.value.path == "../outside"


def test_symlinked_parent_escaping_the_workspace_is_refused(ws: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (ws / "examples" / "telemetry_utils" / "link").symlink_to(outside, target_is_directory=True)
    files = [("examples/telemetry_utils/link/evil.py", "x")]
    with pytest.raises(ScopeViolation, match="outside the workspace") as caught:
        write_files_atomically(files, SCOPE, ws)
    assert caught.value.path == "examples/telemetry_utils/link/evil.py"
    assert list(outside.iterdir()) == []


def test_symlinked_file_escaping_the_workspace_is_refused(ws: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("keep\n")
    (ws / "examples" / "telemetry_utils" / "x.py").symlink_to(secret)
    with pytest.raises(ScopeViolation, match="symlink"):
        write_files_atomically([("examples/telemetry_utils/x.py", "overwritten")], SCOPE, ws)
    assert secret.read_text() == "keep\n"


def test_symlink_inside_workspace_but_outside_scope_is_refused(ws: Path) -> None:
    (ws / "src").mkdir()
    (ws / "examples" / "telemetry_utils" / "to_src").symlink_to(ws / "src")
    with pytest.raises(ScopeViolation, match="outside the phase's scope"):
        check_paths([("examples/telemetry_utils/to_src/app.py", "x")], SCOPE, ws)


def test_scope_directory_that_is_a_symlink_elsewhere_is_refused(ws: Path, tmp_path: Path) -> None:
    (ws / "src").mkdir()
    (ws / "linked_scope").symlink_to(ws / "src")
    with pytest.raises(ScopeViolation, match="outside the phase's scope"):
        check_paths([("linked_scope/app.py", "x")], ["linked_scope/"], ws)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (ws / "escaping_scope").symlink_to(outside)
    with pytest.raises(ScopeViolation, match="leads outside the workspace"):
        check_paths([("escaping_scope/app.py", "x")], ["escaping_scope"], ws)


def test_symlink_within_scope_is_followed(ws: Path) -> None:
    scope = ws / "examples" / "telemetry_utils"
    (scope / "real").mkdir()
    (scope / "alias").symlink_to(scope / "real")
    written = write_files_atomically(
        [("examples/telemetry_utils/alias/a.py", "A = 1\n")], SCOPE, ws
    )
    assert (scope / "real" / "a.py").read_text() == "A = 1\n"
    assert written == [(scope / "real" / "a.py").resolve()]


def test_conflicting_files_are_refused(ws: Path) -> None:
    with pytest.raises(WorkspaceError, match="same file twice"):
        check_paths(
            [("examples/telemetry_utils/a.py", "1"), ("examples/telemetry_utils/./a.py", "2")],
            SCOPE,
            ws,
        )
    with pytest.raises(WorkspaceError, match="also written as a file"):
        check_paths(
            [("examples/telemetry_utils/a", "1"), ("examples/telemetry_utils/a/b.py", "2")],
            SCOPE,
            ws,
        )
    (ws / "examples" / "telemetry_utils" / "plain.txt").write_text("x")
    with pytest.raises(WorkspaceError, match="is a file, not a directory"):
        check_paths([("examples/telemetry_utils/plain.txt/b.py", "2")], SCOPE, ws)


def test_missing_workspace_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="does not exist"):
        check_paths([("a.py", "x")], ["."], tmp_path / "nope")


# --- write_files_atomically ---------------------------------------------------------------


def test_writes_files_and_creates_directories(tmp_path: Path) -> None:
    ws = tmp_path / "fresh"
    ws.mkdir()
    files = [
        ("examples/telemetry_utils/test_string_helper.py", "def test_x():\n    assert True\n"),
        ("examples/telemetry_utils/deep/nested/conftest.py", "import pytest\n"),
    ]
    written = write_files_atomically(files, SCOPE, ws)
    root = ws.resolve()
    assert written == [root / path for path, _ in files]
    for path, content in files:
        assert (ws / path).read_text(encoding="utf-8") == content
    assert not any(name.endswith(".autopack-tmp") for name in _tree(ws))


def test_content_is_written_exactly_as_utf8(ws: Path) -> None:
    content = "naïve = '✓'\r\nsecond\n"
    write_files_atomically([("examples/telemetry_utils/u.py", content)], SCOPE, ws)
    assert (ws / "examples/telemetry_utils/u.py").read_bytes() == content.encode("utf-8")


def test_nothing_is_written_when_one_file_is_bad(ws: Path) -> None:
    before = _tree(ws)
    files = [
        ("examples/telemetry_utils/good.py", "GOOD = 1\n"),
        ("examples/telemetry_utils/also_good.py", "ALSO = 1\n"),
        ("../escape.py", "BAD = 1\n"),
    ]
    with pytest.raises(ScopeViolation, match=re.escape("'../escape.py'")):
        write_files_atomically(files, SCOPE, ws)
    assert _tree(ws) == before
    assert not (ws.parent / "escape.py").exists()


def test_replacing_keeps_permissions(ws: Path) -> None:
    script = ws / "examples" / "telemetry_utils" / "run.sh"
    script.write_text("echo old\n")
    script.chmod(0o750)
    write_files_atomically([("examples/telemetry_utils/run.sh", "echo new\n")], SCOPE, ws)
    assert script.read_text() == "echo new\n"
    assert stat.S_IMODE(script.stat().st_mode) == 0o750


def test_new_file_gets_umask_permissions(ws: Path) -> None:
    umask = os.umask(0o022)
    try:
        write_files_atomically([("examples/telemetry_utils/n.py", "N = 1\n")], SCOPE, ws)
    finally:
        os.umask(umask)
    mode = stat.S_IMODE((ws / "examples/telemetry_utils/n.py").stat().st_mode)
    assert mode == 0o644


def test_replace_is_atomic_via_os_replace(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = ws / "examples" / "telemetry_utils" / "a.py"
    target.write_text("OLD = 1\n")
    calls: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        source, destination = Path(src), Path(dst)
        # At the moment of the swap, the new content is complete in a sibling temp file and
        # the destination still holds the old content.
        assert source.parent == destination.parent
        assert source.read_text() == "NEW = 2\n"
        assert destination.read_text() == "OLD = 1\n"
        calls.append((source.name, destination.name))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    write_files_atomically([("examples/telemetry_utils/a.py", "NEW = 2\n")], SCOPE, ws)
    assert target.read_text() == "NEW = 2\n"
    assert len(calls) == 1
    assert calls[0][0].startswith(".a.py.")
    assert calls[0][0].endswith(".autopack-tmp")


def test_staging_failure_leaves_workspace_untouched(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    existing = ws / "examples" / "telemetry_utils" / "first.py"
    existing.write_text("FIRST = 0\n")
    before = _tree(ws)
    real_fdopen = os.fdopen
    opened: list[int] = []

    def failing_fdopen(fd: int, *args: object, **kwargs: object) -> object:
        opened.append(fd)
        if len(opened) == 2:
            os.close(fd)
            raise OSError(28, "No space left on device")
        return real_fdopen(fd, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(os, "fdopen", failing_fdopen)
    files = [
        ("examples/telemetry_utils/first.py", "FIRST = 1\n"),
        ("examples/telemetry_utils/second.py", "SECOND = 2\n"),
    ]
    with pytest.raises(WorkspaceError, match="No space left on device") as caught:
        write_files_atomically(files, SCOPE, ws)
    assert "second.py" in str(caught.value)
    assert _tree(ws) == before


# --- dirty_scope_paths --------------------------------------------------------------------


def _git(root: Path, *args: str) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_SYSTEM": os.devnull,
    }
    subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = tmp_path / "repo"
    for name in ("a", "b", "c"):
        (root / "pkg" / name).mkdir(parents=True)
        (root / "pkg" / name / "mod.py").write_text(f"{name.upper()} = 1\n")
    (root / ".gitignore").write_text("*.log\n")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "init")
    return root


def test_clean_repository_has_no_dirty_scope(repo: Path) -> None:
    assert dirty_scope_paths(["pkg/a/", "pkg/b/"], repo) == []


def test_modified_untracked_and_staged_files_are_dirty(repo: Path) -> None:
    (repo / "pkg" / "a" / "mod.py").write_text("A = 2\n")
    (repo / "pkg" / "c" / "new").mkdir()
    (repo / "pkg" / "c" / "new" / "untracked.py").write_text("U = 1\n")
    scopes = ["pkg/a/", "pkg/b/", "pkg/c"]
    assert dirty_scope_paths(scopes, repo) == ["pkg/a/", "pkg/c"]
    _git(repo, "add", "pkg/c/new/untracked.py")
    assert dirty_scope_paths(scopes, repo) == ["pkg/a/", "pkg/c"]


def test_deleted_and_renamed_files_are_dirty(repo: Path) -> None:
    (repo / "pkg" / "b" / "mod.py").unlink()
    assert dirty_scope_paths(["pkg/a/", "pkg/b/"], repo) == ["pkg/b/"]
    _git(repo, "checkout", "--", "pkg/b/mod.py")
    _git(repo, "mv", "pkg/a/mod.py", "pkg/c/moved.py")
    assert dirty_scope_paths(["pkg/a/", "pkg/b/", "pkg/c/"], repo) == ["pkg/a/", "pkg/c/"]


def test_ignored_files_are_not_dirty(repo: Path) -> None:
    (repo / "pkg" / "a" / "debug.log").write_text("noise\n")
    assert dirty_scope_paths(["pkg/a/"], repo) == []


def test_scope_prefix_is_component_wise(repo: Path) -> None:
    (repo / "pkg" / "ab").mkdir()
    (repo / "pkg" / "ab" / "x.py").write_text("X = 1\n")
    assert dirty_scope_paths(["pkg/a", "pkg/ab"], repo) == ["pkg/ab"]


def test_ambient_git_dir_is_ignored(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    _git(other, "init", "-q")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    (repo / "pkg" / "a" / "mod.py").write_text("A = 2\n")
    assert dirty_scope_paths(["pkg/a/"], repo) == ["pkg/a/"]


def test_missing_scope_path_is_clean(repo: Path) -> None:
    assert dirty_scope_paths(["not/there/"], repo) == []


def test_workspace_in_a_subdirectory_of_the_repository(repo: Path) -> None:
    (repo / "pkg" / "b" / "mod.py").write_text("B = 2\n")
    assert dirty_scope_paths(["a/", "b/"], repo / "pkg") == ["b/"]


def test_not_a_git_repository_returns_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "x.py").write_text("X = 1\n")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert dirty_scope_paths(["."], plain) == []


def test_git_missing_returns_nothing(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (repo / "pkg" / "a" / "mod.py").write_text("A = 2\n")
    monkeypatch.setenv("PATH", str(repo / "no-bin-here"))
    assert dirty_scope_paths(["pkg/a/"], repo) == []


def test_other_git_failures_raise(repo: Path) -> None:
    (repo / ".git" / "index").write_bytes(b"corrupt index")
    with pytest.raises(WorkspaceError, match="git status failed"):
        dirty_scope_paths(["pkg/a/"], repo)
