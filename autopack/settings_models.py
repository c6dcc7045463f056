"""The environment variables of the database layer, read by pydantic-settings.

Imported only when the environment holds one of them (autopack.settings.load_environment):
pydantic-settings' import is a fifth of a read-only command's start-up.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class EnvironmentSettings(BaseSettings):
    """The environment variables autopack reads for the database layer."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    database_url: str | None = Field(default=None, alias="DATABASE_URL")
    telemetry_db_enabled_raw: str | None = Field(default=None, alias="TELEMETRY_DB_ENABLED")
