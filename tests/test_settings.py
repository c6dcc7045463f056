"""Target resolution, URL masking, the one boolean-flag parser, and the library guards."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autopack.db.guards import require_non_empty, require_role
from autopack.db.meta import RoleStamp
from autopack.errors import GuardError, TargetError
from autopack.settings import (
    build_target,
    load_environment,
    mask_url,
    parse_flag,
    plain_sqlite_database,
    resolve_target,
)

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


def test_environment_flag_uses_the_same_rule() -> None:
    assert load_environment({"TELEMETRY_DB_ENABLED": "Yes"}).telemetry_db_enabled is True
    assert load_environment({"TELEMETRY_DB_ENABLED": "on"}).telemetry_db_enabled is False
    assert load_environment({}).telemetry_db_enabled is False


def test_environment_names_match_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("database_url", "sqlite:///lower.db")
    assert load_environment().database_url == "sqlite:///lower.db"
    monkeypatch.delenv("database_url")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert load_environment().database_url is None


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
