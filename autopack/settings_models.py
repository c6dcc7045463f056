"""The settings models, one per concern, on pydantic-settings' standard sources.

Sources, highest precedence first: the CLI options (init kwargs), the environment (a mapping
handed in explicitly, never os.environ read here), and `autopack.toml` in the current directory
(or `[tool.autopack]` in its `pyproject.toml` when there is no `autopack.toml`). Nothing is
looked for in parent directories: a file above the current directory never retargets a DB.

Imported only when a setting needs reading (autopack.settings decides): pydantic-settings'
import is a fifth of a read-only command's start-up.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    PyprojectTomlConfigSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings.sources.utils import parse_env_vars

from autopack.errors import ConfigError
from autopack.settings_base import CONFIG_FILE, config_file_in, parse_flag

Settings = TypeVar("Settings", bound=BaseSettings)


def environment_source(model: type[BaseSettings], environ: Mapping[str, str]) -> EnvSettingsSource:
    """pydantic-settings' own environment source, reading `environ` instead of os.environ."""
    source = EnvSettingsSource(model)
    source.env_vars = parse_env_vars(
        environ, source.case_sensitive, source.env_ignore_empty, source.env_parse_none_str
    )
    return source


def file_source(model: type[BaseSettings], cwd: Path) -> PydanticBaseSettingsSource | None:
    """The TOML source for `cwd` (no upward search), or None when it has no settings file."""
    path = config_file_in(cwd)
    if path is None:
        return None
    try:
        if path.name == CONFIG_FILE:
            return TomlConfigSettingsSource(model, toml_file=path)
        return PyprojectTomlConfigSettingsSource(model, toml_file=path)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ConfigError(
            f"cannot read {path}: {reason}", hint="fix the file's TOML syntax or remove it"
        ) from None


def build_settings(
    model: type[Settings],
    *,
    options: Mapping[str, Any],
    environ: Mapping[str, str],
    cwd: Path | None = None,
) -> Settings:
    """`model` from the CLI options, then `environ`, then the settings file in `cwd` (if any).

    Raises pydantic's ValidationError; callers turn it into one ConfigError.
    """
    init = dict(options)
    sources: list[PydanticBaseSettingsSource] = [
        InitSettingsSource(model, init_kwargs=init),
        environment_source(model, environ),
    ]
    if cwd is not None:
        found = file_source(model, cwd)
        if found is not None:
            sources.append(found)
    return model(_build_sources=(tuple(sources), init))


class DatabaseSettings(BaseSettings):
    """Where a database can be named besides --db and --database-url: DATABASE_URL, and the
    named targets under `[databases]` (`[tool.autopack.databases]` in pyproject.toml)."""

    model_config = SettingsConfigDict(
        extra="ignore", populate_by_name=True, pyproject_toml_table_header=("tool", "autopack")
    )

    database_url: str | None = Field(default=None, alias="DATABASE_URL")
    databases: Any = None
    """Checked by autopack.settings, which names the file and the entry that is wrong."""


class TelemetrySettings(BaseSettings):
    """TELEMETRY_DB_ENABLED: whether builder calls write telemetry rows (DESIGN §2).

    `--no-telemetry` is passed as `db_enabled=False`; None means "not said", and the drain
    commands then turn telemetry on.
    """

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    db_enabled: bool | None = Field(default=None, alias="TELEMETRY_DB_ENABLED")

    @field_validator("db_enabled", mode="before")
    @classmethod
    def _one_parser(cls, value: Any) -> Any:
        if isinstance(value, str):
            return None if not value.strip() else parse_flag(value)
        return value


def load_telemetry_settings(
    environ: Mapping[str, str], *, no_telemetry: bool = False
) -> TelemetrySettings:
    options = {"db_enabled": False} if no_telemetry else {}
    try:
        return build_settings(TelemetrySettings, options=options, environ=environ)
    except ValidationError as exc:  # only a non-text value from an embedding caller
        raise ConfigError(
            f"TELEMETRY_DB_ENABLED is invalid: {exc.errors()[0]['msg']}",
            hint="set TELEMETRY_DB_ENABLED to 1, true or yes (on) or anything else (off)",
        ) from None
