"""Which database: explicit targets only, resolved once, never guessed.

Sources, all explicit: `--database-url URL`, `--db NAME` (a named target) and `DATABASE_URL`.
With none, autopack refuses; with two that name different databases, it refuses and names
both: precedence never picks one of two databases. DATABASE_URL and the named targets of
`autopack.toml` are read by pydantic-settings (autopack.settings_models), from the environment
mapping and the directory the caller hands in, and only when there is something to read.

SQLite paths are resolved to one absolute path here, and that path is the one shown,
opened and written everywhere else (the original resolved relative paths differently in its
banner and its engine, and reported the wrong file).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import unquote

from autopack.errors import ConfigError, TargetError
from autopack.settings_base import CONFIG_FILE, config_file_in
from autopack.settings_base import parse_flag as parse_flag  # the one flag parser
from autopack.text import closest

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

    from autopack.settings_models import DatabaseSettings


# The runbook's names: the legacy backlog and the telemetry seed DB live apart.
BUILTIN_TARGETS: dict[str, str] = {
    "legacy": "sqlite:///autopack_legacy.db",
    "seed": "sqlite:///autopack_telemetry_seed.db",
}

# The role `db init` stamps on a DB it creates through a built-in name.
BUILTIN_TARGET_ROLES: dict[str, str] = {"legacy": "legacy", "seed": "seed"}

DATABASE_VARIABLE = "DATABASE_URL"
_SECRET_QUERY_KEYS = ("password", "passwd", "secret", "token", "key")

Backend = Literal["sqlite", "postgresql", "other"]
_PLAIN_SQLITE_PREFIX = "sqlite:///"
# Directories at the root of a filesystem: a relative SQLite path starting with one was
# probably meant to be absolute.
_ROOT_DIRECTORIES = frozenset(
    {"tmp", "home", "var", "srv", "opt", "mnt", "media", "data", "root", "etc", "Users", "Volumes"}
)


def _make_url(raw: str) -> URL:
    """SQLAlchemy's URL parser, loaded only for a URL that is not a plain SQLite one.

    Raises ValueError for text that is not a URL.
    """
    import sqlalchemy as sa
    from sqlalchemy.exc import ArgumentError

    try:
        return sa.engine.make_url(raw)
    except ArgumentError as exc:
        raise ValueError(str(exc)) from exc


def plain_sqlite_database(raw: str) -> str | None:
    """The database part of a plain `sqlite:///…` URL (no driver, no query string) exactly as
    SQLAlchemy's make_url reads it (percent-decoded); None for any other URL.

    The built-in names and most URLs are of this form; parsing them here spares loading
    SQLAlchemy in the commands that only read SQLite through sqlite3 (`db identity`).
    """
    if not raw.startswith(_PLAIN_SQLITE_PREFIX) or "?" in raw:
        return None
    return unquote(raw[len(_PLAIN_SQLITE_PREFIX) :])


def environment_database_url(environ: Mapping[str, str], cwd: Path | None = None) -> str | None:
    """DATABASE_URL from `environ` (any case, as pydantic-settings matches); blank is unset."""
    # With no such variable there is nothing to read, and pydantic-settings' import is skipped.
    if not any(key.upper() == DATABASE_VARIABLE for key in environ):
        return None
    url = _database_settings(environ, None).database_url
    return url if url is not None and url.strip() else None


def _database_settings(environ: Mapping[str, str], cwd: Path | None) -> DatabaseSettings:
    from pydantic import ValidationError

    from autopack.settings_models import DatabaseSettings, build_settings

    try:
        return build_settings(DatabaseSettings, options={}, environ=environ, cwd=cwd)
    except ValidationError as exc:
        raise ConfigError(
            f"DATABASE_URL is invalid: {exc.errors()[0]['msg']}",
            hint="set DATABASE_URL to sqlite:///path.db or postgresql://user@host/dbname",
        ) from None


@dataclass(frozen=True)
class DatabaseTarget:
    """A database named explicitly, resolved to exactly one place."""

    url: str
    """The URL to connect with (driver filled in, absolute SQLite path). May hold a secret."""
    display_url: str
    """The URL as shown to people: passwords masked."""
    backend: Backend
    sqlite_path: Path | None
    """Absolute path of a SQLite file; None for PostgreSQL and in-memory SQLite."""
    in_memory: bool
    source: str
    """How the operator named it, e.g. `--db seed`, `--database-url`, `DATABASE_URL`."""
    name: str | None = None
    """The named target used, if any (`seed`, `legacy`, or one from autopack.toml)."""
    relative_path: str | None = None
    """A SQLite path as the URL wrote it, when relative: `sqlite:///tmp/x.db` names `tmp/x.db`
    in the current directory, which is seldom what was meant (see `absolute_intent`)."""

    def absolute_intent(self) -> str | None:
        """The four-slash URL of the absolute path a relative SQLite URL probably meant, or None.

        `sqlite:///tmp/x.db` is relative (three slashes, then `tmp/x.db`); an absolute path
        needs four. It was probably meant absolute when that file exists, or when the path
        starts in a directory found at the root of a filesystem (`tmp`, `home`, …).
        """
        written = self.relative_path
        if written is None:
            return None
        absolute = Path("/") / written
        first = Path(written).parts[0] if Path(written).parts else ""
        if absolute.exists() or first in _ROOT_DIRECTORIES:
            return f"sqlite:///{absolute.as_posix()}"
        return None

    @property
    def identity_key(self) -> str:
        """What makes two targets the same database (used to detect conflicting sources)."""
        if self.sqlite_path is not None:
            return f"sqlite:{self.sqlite_path}"
        url = _make_url(self.url)
        return (
            f"{url.get_backend_name()}://{url.username or ''}@{url.host or ''}:"
            f"{url.port or ''}/{url.database or ''}?{sorted(url.query.items())}"
        )


def mask_url(url: str) -> str:
    """The URL with its password (and any secret-looking query value) replaced by `***`."""
    try:
        parsed = _make_url(url)
    except ValueError:
        return "<unparseable URL>"
    if parsed.query:
        masked_query = {
            key: ("***" if any(s in key.lower() for s in _SECRET_QUERY_KEYS) else value)
            for key, value in parsed.query.items()
        }
        parsed = parsed.set(query=masked_query)
    return parsed.render_as_string(hide_password=True)


def load_named_targets(cwd: Path) -> dict[str, str]:
    """Built-in names, overridden or extended by `autopack.toml` or `[tool.autopack]` in `cwd`.

    Only `cwd` itself is read, never a parent directory. `autopack.toml` takes precedence over
    `pyproject.toml` when both exist (only the first is read).
    """
    targets = dict(BUILTIN_TARGETS)
    path = config_file_in(cwd)
    if path is None:
        return targets
    section = _database_settings({}, cwd).databases
    if section is None:
        return targets
    origin = (
        f"{path} [databases]" if path.name == CONFIG_FILE else f"{path} [tool.autopack.databases]"
    )
    if not isinstance(section, dict):
        raise ConfigError(
            f"{origin} must be a table of name = URL entries.",
            hint='e.g. [databases]\nlegacy = "sqlite:///autopack_legacy.db"',
        )
    for name, url in section.items():
        if not isinstance(url, str) or not url.strip():
            raise ConfigError(
                f"named target {name!r} in {origin} is not a URL string.",
                hint=f'write it as {name} = "sqlite:///{name}.db"',
            )
        targets[name] = url.strip()
    return targets


def build_target(url: str, *, source: str, cwd: Path, name: str | None = None) -> DatabaseTarget:
    """Parse and normalise one URL: driver for PostgreSQL, absolute path for SQLite."""
    raw = url.strip()
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raise TargetError(
            f"{source} is not valid UTF-8 (a database name in another encoding).",
            hint="rename the database file to a UTF-8 name, or use a symlink that has one",
        ) from None
    plain = plain_sqlite_database(raw)
    if plain is not None:
        return _sqlite_target(plain, source=source, cwd=cwd, name=name)
    try:
        parsed = _make_url(raw)
    except ValueError as exc:
        raise TargetError(
            f"{source} is not a database URL: {mask_url(raw) if '://' in raw else raw!r}.",
            hint="give sqlite:///path/to/file.db or postgresql://user@host/dbname",
        ) from exc
    backend_name = parsed.get_backend_name()
    if backend_name in ("postgresql", "postgres"):
        if parsed.drivername in ("postgresql", "postgres"):
            # A plain postgresql:// URL means psycopg 3 (the `postgres` extra), not psycopg2.
            parsed = parsed.set(drivername="postgresql+psycopg")
        final = parsed.render_as_string(hide_password=False)
        return DatabaseTarget(final, mask_url(final), "postgresql", None, False, source, name)
    if backend_name != "sqlite":
        final = parsed.render_as_string(hide_password=False)
        return DatabaseTarget(final, mask_url(final), "other", None, False, source, name)
    return _sqlite_target(parsed.database or "", source=source, cwd=cwd, name=name)


def _sqlite_target(database: str, *, source: str, cwd: Path, name: str | None) -> DatabaseTarget:
    if database in ("", ":memory:") or database.startswith("file::memory:"):
        return DatabaseTarget(
            "sqlite:///:memory:",
            "sqlite:///:memory: (in-memory)",
            "sqlite",
            None,
            True,
            source,
            name,
        )
    path = Path(database).expanduser()
    relative = None if path.is_absolute() else database
    if not path.is_absolute():
        path = cwd / path
    path = path.resolve()
    final = f"sqlite:///{path.as_posix()}"
    return DatabaseTarget(final, final, "sqlite", path, False, source, name, relative)


def resolve_target(
    db_name: str | None,
    database_url: str | None,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> DatabaseTarget:
    """The one database the operator named, or a refusal that says how to name one.

    `env` is the environment's variables (None: none; the CLI passes its Environment's), `cwd`
    the directory relative paths and autopack.toml are read in (None: the current one).
    """
    work_dir = (cwd or Path.cwd()).resolve()
    env_url = environment_database_url(env or {})
    candidates: list[DatabaseTarget] = []
    if database_url is not None and database_url.strip():
        candidates.append(build_target(database_url, source="--database-url", cwd=work_dir))
    if db_name is not None:
        targets = load_named_targets(work_dir)
        if db_name not in targets:
            known = ", ".join(sorted(targets))
            guess = closest(db_name, targets)
            raise TargetError(
                f"unknown database name {db_name!r}.",
                hint=(f"did you mean {guess!r}? " if guess else "")
                + f"known names: {known}; add more under [databases] in {CONFIG_FILE}",
            )
        candidates.append(
            build_target(targets[db_name], source=f"--db {db_name}", cwd=work_dir, name=db_name)
        )
    if env_url is not None and env_url.strip():
        candidates.append(build_target(env_url, source="DATABASE_URL", cwd=work_dir))
    if not candidates:
        raise TargetError(
            "no database given: autopack never picks one by itself.",
            hint="add --db seed, --db legacy or --database-url sqlite:///path.db, "
            "or set DATABASE_URL",
        )
    first = candidates[0]
    for other in candidates[1:]:
        if other.identity_key != first.identity_key:
            raise TargetError(
                f"{first.source} names {first.display_url} but {other.source} names "
                f"{other.display_url}.",
                hint="give one database, or make both name the same one",
            )
    named = next((c for c in candidates if c.name is not None), None)
    if named is not None and first.name is None:
        # Same database from two sources: keep the name so its built-in role applies.
        return replace(first, name=named.name)
    return first
