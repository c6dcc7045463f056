"""Builder-LLM settings from the environment: provider, model, endpoint, key, timeout, retries.

| Variable                        | Meaning                                                        |
|---------------------------------|----------------------------------------------------------------|
| AUTOPACK_LLM_PROVIDER           | `anthropic` or `openai` (any OpenAI-compatible server); needed |
| AUTOPACK_LLM_MODEL              | model name sent with every request; needed                     |
| AUTOPACK_LLM_BASE_URL           | default https://api.anthropic.com / https://api.openai.com/v1  |
| AUTOPACK_LLM_API_KEY            | else ANTHROPIC_API_KEY / OPENAI_API_KEY, by provider           |
| AUTOPACK_LLM_TIMEOUT_S          | seconds without a reply before an attempt times out (600)      |
| AUTOPACK_LLM_MAX_RETRIES        | retries of 429 / 5xx / timeouts / connection errors (3)        |
| AUTOPACK_LLM_TEMPERATURE        | 0–2, or `none` to send no temperature (0.2)                    |
| AUTOPACK_LLM_MAX_TOKENS_FIELD   | openai only: `auto`, `max_tokens`, `max_completion_tokens`     |

A key is required, except for the openai provider at a non-default base URL (a local server
such as Ollama needs none). Keys are `SecretStr`: they never show in repr, str or errors.
Nothing is read at import time: call `load_llm_settings()` (or build `LlmSettings()`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from autopack.errors import ConfigError
from autopack.llm.base import Provider

ENV_VARS: dict[str, str] = {
    "provider": "AUTOPACK_LLM_PROVIDER",
    "model": "AUTOPACK_LLM_MODEL",
    "base_url": "AUTOPACK_LLM_BASE_URL",
    "api_key": "AUTOPACK_LLM_API_KEY",
    "timeout_s": "AUTOPACK_LLM_TIMEOUT_S",
    "max_retries": "AUTOPACK_LLM_MAX_RETRIES",
    "temperature": "AUTOPACK_LLM_TEMPERATURE",
    "max_tokens_field": "AUTOPACK_LLM_MAX_TOKENS_FIELD",
}
"""Settings field → environment variable."""

FALLBACK_KEY_VARS: dict[str, str] = {
    "anthropic": "ANTHROPIC_API_KEY",
    "openai": "OPENAI_API_KEY",
}
"""The vendor variable read when AUTOPACK_LLM_API_KEY is unset, by provider (never across)."""

DEFAULT_BASE_URLS: dict[str, str] = {
    "anthropic": "https://api.anthropic.com",
    "openai": "https://api.openai.com/v1",
}

MaxTokensField = Literal["auto", "max_tokens", "max_completion_tokens"]

_ENV_OVERRIDE: ContextVar[Mapping[str, str] | None] = ContextVar(
    "autopack_llm_environment", default=None
)


def read_llm_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The raw settings values in `environ`, by field name; empty values count as unset.

    When AUTOPACK_LLM_API_KEY is unset, the provider's vendor variable is used and its name is
    kept in `api_key_variable`, so a rejected key can be traced to where it came from.
    """
    values: dict[str, str] = {}
    for field_name, variable in ENV_VARS.items():
        raw = environ.get(variable)
        if raw is not None and raw.strip():
            values[field_name] = raw.strip()
    if "api_key" in values:
        values["api_key_variable"] = ENV_VARS["api_key"]
    else:
        fallback = FALLBACK_KEY_VARS.get(values.get("provider", "").lower())
        raw = environ.get(fallback) if fallback else None
        if fallback and raw is not None and raw.strip():
            values["api_key"] = raw.strip()
            values["api_key_variable"] = fallback
    return values


class _EnvironmentSource(PydanticBaseSettingsSource):
    """Reads exactly the variables in ENV_VARS (plus the fallback key) from one mapping."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self._values = read_llm_environment(environ)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)


class LlmSettings(BaseSettings):
    """How to reach the builder LLM. Immutable, so one instance serves every worker thread."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    provider: Provider
    model: str = Field(min_length=1)
    base_url: str
    api_key: SecretStr | None = None
    api_key_variable: str | None = None
    timeout_s: float = Field(default=600.0, gt=0, le=86_400)
    max_retries: int = Field(default=3, ge=0, le=10)
    temperature: float | None = Field(default=0.2, ge=0, le=2)
    max_tokens_field: MaxTokensField = "auto"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        environ = _ENV_OVERRIDE.get()
        return (
            init_settings,
            _EnvironmentSource(settings_cls, os.environ if environ is None else environ),
        )

    @model_validator(mode="before")
    @classmethod
    def _resolve_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        provider = str(data.get("provider", "")).strip().lower()
        resolved = dict(data)
        if not resolved.get("base_url") and provider in DEFAULT_BASE_URLS:
            resolved["base_url"] = DEFAULT_BASE_URLS[provider]
        # A vendor key read for one provider is never sent to the other (possible when an
        # explicit provider argument overrides the environment's).
        source = resolved.get("api_key_variable")
        if source in FALLBACK_KEY_VARS.values() and source != FALLBACK_KEY_VARS.get(provider):
            resolved.pop("api_key", None)
            resolved.pop("api_key_variable", None)
        return resolved

    @field_validator("provider", mode="before")
    @classmethod
    def _normalise_provider(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("model")
    @classmethod
    def _strip_model(cls, value: str) -> str:
        if not value.strip():
            raise PydanticCustomError("blank", "the model name is blank")
        return value.strip()

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PydanticCustomError("not_http_url", "not an http(s) URL")
        return value

    @field_validator("api_key", mode="before")
    @classmethod
    def _blank_key_is_none(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        if isinstance(value, SecretStr) and not value.get_secret_value().strip():
            return None
        return value

    @field_validator("temperature", mode="before")
    @classmethod
    def _temperature_none(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() == "none":
            return None
        return value

    @model_validator(mode="after")
    def _require_key(self) -> Self:
        if self.api_key is None and not (
            self.provider == "openai" and not self.uses_default_base_url
        ):
            raise PydanticCustomError(
                "api_key_missing",
                "no API key for the {provider} provider",
                {"provider": self.provider},
            )
        return self

    @property
    def uses_default_base_url(self) -> bool:
        """True when the base URL is the provider's own public API."""
        return self.base_url == DEFAULT_BASE_URLS[self.provider]

    @property
    def openai_max_tokens_field(self) -> Literal["max_tokens", "max_completion_tokens"]:
        """The body field that carries the output ceiling for the openai provider.

        `auto`: `max_completion_tokens` for api.openai.com (its newer models refuse
        `max_tokens`), `max_tokens` elsewhere (what every OpenAI-compatible server accepts).
        """
        if self.max_tokens_field != "auto":
            return self.max_tokens_field
        return "max_completion_tokens" if self.uses_default_base_url else "max_tokens"

    def describe(self) -> dict[str, object]:
        """A secret-free summary for panels and --json output."""
        if self.api_key is None:
            key = "none"
        else:
            key = f"set (from {self.api_key_variable})" if self.api_key_variable else "set"
        parts = urlsplit(self.base_url)
        netloc = parts.hostname or ""
        if parts.port is not None:
            netloc = f"{netloc}:{parts.port}"
        return {
            "provider": self.provider,
            "model": self.model,
            "base_url": f"{parts.scheme}://{netloc}{parts.path}",
            "api_key": key,
            "timeout_s": self.timeout_s,
            "max_retries": self.max_retries,
            "temperature": self.temperature,
        }


def load_llm_settings(env: Mapping[str, str] | None = None) -> LlmSettings:
    """The builder-LLM settings from `env` (default: the process environment).

    Only `env` is read when it is given, so tests and embedders control every input.
    Raises `ConfigError` (one line, with a hint naming the variable) when a setting is missing
    or invalid; the error never contains the API key.
    """
    token = _ENV_OVERRIDE.set(env)
    try:
        return LlmSettings()
    except ValidationError as exc:
        raise _config_error(exc) from None
    finally:
        _ENV_OVERRIDE.reset(token)


_FIELD_ORDER = list(ENV_VARS)


def _config_error(exc: ValidationError) -> ConfigError:
    errors = exc.errors(include_url=False)

    def position(error: Mapping[str, Any]) -> int:
        loc = error.get("loc") or ()
        field = loc[0] if loc else None
        return _FIELD_ORDER.index(field) if field in _FIELD_ORDER else len(_FIELD_ORDER)

    first = min(errors, key=position)
    loc = first.get("loc") or ()
    field = str(loc[0]) if loc else ""
    shown = _shown_value(first.get("input")) if field != "api_key" else "the value"

    if first["type"] == "api_key_missing":
        provider = str((first.get("ctx") or {}).get("provider", ""))
        fallback = FALLBACK_KEY_VARS.get(provider, "")
        if provider == "openai":
            hint = (
                f"set AUTOPACK_LLM_API_KEY (or {fallback}); for a local OpenAI-compatible server "
                "that needs no key, set AUTOPACK_LLM_BASE_URL to it instead"
            )
        else:
            hint = f"set AUTOPACK_LLM_API_KEY (or {fallback})"
        return ConfigError(f"No API key for the {provider} LLM provider.", hint=hint)

    variable = ENV_VARS.get(field, field or "the LLM settings")
    missing = first["type"] == "missing"
    if field == "provider":
        hint = (
            "set AUTOPACK_LLM_PROVIDER=anthropic, or openai for OpenAI and OpenAI-compatible "
            "servers (Ollama, vLLM, llama.cpp, LM Studio)"
        )
        wrong = f"{variable} must be anthropic or openai, not {shown}."
    elif field == "model":
        hint = (
            "set AUTOPACK_LLM_MODEL to the model to call, e.g. claude-sonnet-4-5, gpt-4.1, or a "
            "local model tag such as qwen2.5-coder:14b"
        )
        wrong = f"{variable} is blank."
    elif field == "base_url":
        hint = (
            "set AUTOPACK_LLM_BASE_URL to an http(s) URL, e.g. http://localhost:11434/v1 for "
            "Ollama, or unset it for the provider's public API"
        )
        wrong = f"{variable} is not an http(s) URL: {shown}."
        if missing:  # only when the provider is unknown, which is reported first
            wrong = f"{variable} has no default for this provider."
    elif field == "timeout_s":
        hint = "set AUTOPACK_LLM_TIMEOUT_S to a number of seconds, e.g. 600"
        wrong = f"{variable} must be a number of seconds greater than 0, not {shown}."
    elif field == "max_retries":
        hint = "set AUTOPACK_LLM_MAX_RETRIES to a whole number from 0 to 10, e.g. 3"
        wrong = f"{variable} must be a whole number from 0 to 10, not {shown}."
    elif field == "temperature":
        hint = "set AUTOPACK_LLM_TEMPERATURE to a number from 0 to 2, or none to send none"
        wrong = f"{variable} must be a number from 0 to 2 or none, not {shown}."
    elif field == "max_tokens_field":
        hint = "set AUTOPACK_LLM_MAX_TOKENS_FIELD to auto, max_tokens or max_completion_tokens"
        wrong = f"{variable} must be auto, max_tokens or max_completion_tokens, not {shown}."
    else:
        hint = f"check {variable}"
        wrong = f"{variable} is invalid."
    message = f"{variable} is not set." if missing else wrong
    return ConfigError(message, hint=hint)


def _shown_value(value: object) -> str:
    text = repr(value) if isinstance(value, str) else repr(str(value))
    return text if len(text) <= 60 else text[:57] + "…'"
