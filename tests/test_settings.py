"""Target resolution, URL masking, the one boolean-flag parser, and the library guards."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autopack.db.guards import require_non_empty, require_role
from autopack.db.meta import RoleStamp
from autopack.errors import ConfigError, GuardError, TargetError
from autopack.settings import (
    build_target,
    environment_database_url,
    mask_url,
    parse_flag,
    plain_sqlite_database,
    resolve_target,
)
from autopack.settings_models import load_telemetry_settings

_password = st.text(
    alphabet=st.characters(min_codepoint=48, max_codepoint=122, categories=["Ll", "Lu", "Nd"]),
    min_size=6,
    max_size=30,
)


@given(password=_password)
def test_mask_url_never_shows_the_password(password: str) -> None:
    url = f"postgresql://autopack:{password}@db.example:5432/autopack"
    masked = mask_url(url)
    assert password not in masked.replace("autopack", "").replace("db.example", "")
    assert "***" in masked


def test_mask_url_masks_secret_query_values() -> None:
    masked = mask_url("postgresql://u@h/db?password=topsecret&sslmode=require")
    assert "topsecret" not in masked
    assert "sslmode=require" in masked


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        ("Yes", True),
        (" yes ", True),
        ("0", False),
        ("false", False),
        ("no", False),
        ("", False),
        (None, False),
        ("on", False),
    ],
)
def test_parse_flag_is_the_one_truthiness_rule(value: str | None, expected: bool) -> None:
    assert parse_flag(value) is expected


def test_telemetry_settings_use_the_same_rule() -> None:
    def enabled(environ: dict[str, str], *, no_telemetry: bool = False) -> bool | None:
        return load_telemetry_settings(environ, no_telemetry=no_telemetry).db_enabled

    assert enabled({"TELEMETRY_DB_ENABLED": "Yes"}) is True
    assert enabled({"telemetry_db_enabled": "1"}) is True
    assert enabled({"TELEMETRY_DB_ENABLED": "on"}) is False
    assert enabled({"TELEMETRY_DB_ENABLED": " "}) is None
    assert enabled({}) is None
    # The CLI option is an init kwarg: it wins over the environment.
    assert enabled({"TELEMETRY_DB_ENABLED": "yes"}, no_telemetry=True) is False


def test_environment_names_match_in_any_case() -> None:
    assert environment_database_url({"database_url": "sqlite:///lower.db"}) == "sqlite:///lower.db"
    assert environment_database_url({"DATABASE_URL": "  "}) is None
    assert environment_database_url({}) is None


def test_environment_is_only_what_the_caller_hands_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "sqlite:///from-the-process.db")
    with pytest.raises(TargetError, match="no database given"):
        resolve_target(None, None, env={}, cwd=tmp_path)


def test_a_parent_directory_never_retargets_a_database(tmp_path: Path) -> None:
    (tmp_path / "autopack.toml").write_text('[databases]\nlegacy = "sqlite:///elsewhere.db"\n')
    (tmp_path / "pyproject.toml").write_text(
        '[tool.autopack.databases]\nseed = "sqlite:///elsewhere.db"\n'
    )
    below = tmp_path / "project"
    below.mkdir()
    legacy = resolve_target("legacy", None, env={}, cwd=below)
    seed = resolve_target("seed", None, env={}, cwd=below)
    assert legacy.sqlite_path == below.resolve() / "autopack_legacy.db"
    assert seed.sqlite_path == below.resolve() / "autopack_telemetry_seed.db"
    # In the directory itself, the file names them.
    assert resolve_target("legacy", None, env={}, cwd=tmp_path).sqlite_path == (
        tmp_path.resolve() / "elsewhere.db"
    )


def test_pyproject_names_targets_when_there_is_no_autopack_toml(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.autopack.databases]\nwork = "sqlite:///work.db"\n'
    )
    target = resolve_target("work", None, env={}, cwd=tmp_path)
    assert target.sqlite_path == tmp_path.resolve() / "work.db"
    assert target.source == "--db work"


def test_a_file_and_the_environment_naming_two_databases_are_refused(tmp_path: Path) -> None:
    (tmp_path / "autopack.toml").write_text('[databases]\nwork = "sqlite:///work.db"\n')
    with pytest.raises(TargetError) as info:
        resolve_target("work", None, env={"DATABASE_URL": "sqlite:///other.db"}, cwd=tmp_path)
    assert "--db work" in info.value.message
    assert "DATABASE_URL" in info.value.message
    assert "other.db" in info.value.message


@pytest.mark.parametrize(
    "text",
    [
        "[databases\n",
        "x = " + "[" * 100_000 + "]" * 100_000 + "\n",
        "[databases]\nwork = 5\n",
        "databases = 5\n",
    ],
)
def test_a_bad_config_file_is_refused_with_its_name(tmp_path: Path, text: str) -> None:
    (tmp_path / "autopack.toml").write_text(text)
    with pytest.raises(ConfigError) as info:
        resolve_target("work", None, env={}, cwd=tmp_path)
    assert "autopack.toml" in info.value.message


def test_a_config_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    (tmp_path / "autopack.toml").write_bytes(b'[databases]\nwork = "\xff"\n')
    with pytest.raises(ConfigError, match=r"autopack\.toml"):
        resolve_target("work", None, env={}, cwd=tmp_path)


def test_resolve_needs_an_explicit_target(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="no database given"):
        resolve_target(None, None, env={}, cwd=tmp_path)


def test_resolve_blank_environment_counts_as_unset(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="no database given"):
        resolve_target(None, None, env={"DATABASE_URL": "  "}, cwd=tmp_path)


def test_builtin_names_resolve_against_cwd(tmp_path: Path) -> None:
    seed = resolve_target("seed", None, env={}, cwd=tmp_path)
    legacy = resolve_target("legacy", None, env={}, cwd=tmp_path)
    assert seed.sqlite_path == tmp_path.resolve() / "autopack_telemetry_seed.db"
    assert legacy.sqlite_path == tmp_path.resolve() / "autopack_legacy.db"
    assert seed.name == "seed"
    assert seed.source == "--db seed"


def test_same_file_through_env_keeps_the_name(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'autopack_legacy.db'}"}
    target = resolve_target("legacy", None, env=env, cwd=tmp_path)
    assert target.name == "legacy"


def test_memory_is_never_a_file(tmp_path: Path) -> None:
    for url in ("sqlite://", "sqlite:///:memory:"):
        target = build_target(url, source="x", cwd=tmp_path)
        assert target.in_memory
        assert target.sqlite_path is None
        assert "in-memory" in target.display_url


def test_unsupported_backend_is_refused_when_opened(tmp_path: Path) -> None:
    from autopack.db.engine import OpenMode, open_database

    target = build_target("mysql://root@127.0.0.1/test", source="x", cwd=tmp_path)
    with pytest.raises(TargetError, match="unsupported database"):
        open_database(target, OpenMode.READ_ONLY)


def test_require_non_empty() -> None:
    with pytest.raises(GuardError, match="empty"):
        require_non_empty(0, 0, display_url="sqlite:///x.db", allow_empty=False)
    require_non_empty(0, 0, display_url="sqlite:///x.db", allow_empty=True)
    require_non_empty(1, 0, display_url="sqlite:///x.db", allow_empty=False)
    require_non_empty(0, 3, display_url="sqlite:///x.db", allow_empty=False)


def test_require_role() -> None:
    legacy = RoleStamp("legacy", "id", stamped=True)
    unstamped = RoleStamp("legacy", None, stamped=False)
    with pytest.raises(GuardError, match="legacy database") as info:
        require_role(legacy, {"seed", "general"}, display_url="u", command="seed run", force=False)
    assert info.value.hint is not None
    assert "--force-role" in info.value.hint
    with pytest.raises(GuardError, match="unstamped"):
        require_role(unstamped, {"seed"}, display_url="u", command="seed run", force=False)
    require_role(legacy, {"seed"}, display_url="u", command="seed run", force=True)
    require_role(RoleStamp("seed", "id", True), {"seed"}, display_url="u", command="c", force=False)


@given(
    st.text(
        alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="?\x00"),
        max_size=40,
    )
)
def test_plain_sqlite_urls_parse_as_sqlalchemy_parses_them(path: str) -> None:
    # The fast path must agree with make_url, or a URL would name another file than before.
    import sqlalchemy as sa

    url = "sqlite:///" + path
    assert plain_sqlite_database(url) == sa.engine.make_url(url).database


def test_only_plain_sqlite_urls_take_the_fast_path() -> None:
    assert plain_sqlite_database("sqlite:///a%20b.db") == "a b.db"
    assert plain_sqlite_database("sqlite:///x.db?mode=ro") is None
    assert plain_sqlite_database("sqlite+pysqlite:///x.db") is None
    assert plain_sqlite_database("postgresql://u@h/d") is None
