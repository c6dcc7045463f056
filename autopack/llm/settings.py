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
such as Ollama needs none). Keys are `SecretStr`: they never show in repr, str or errors, and
a key that holds a newline, a blank, a control or a non-ASCII character is refused (exit 2)
without being shown. Every wrong setting is named in one error.
Nothing is read at import time: call `load_llm_settings(environ)` (or `LlmSettings()`, which
reads os.environ as pydantic-settings always does).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

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

# What an HTTP header can carry as a key: printable ASCII without blanks. A newline, a control
# character or a non-ASCII character is refused before any request (httpx would quote the key
# in its error, or fail on encoding it).
_SAFE_KEY = re.compile(r"[\x21-\x7e]+")


def _present(value: Any) -> bool:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return value is not None and not (isinstance(value, str) and not value.strip())


def _field_values(data: Mapping[str, Any], fields: Mapping[str, FieldInfo]) -> dict[str, Any]:
    """Sources key values by field name (init kwargs) or by variable (the environment): one
    dict by field name, the first source winning, blank text dropped, text stripped."""
    values: dict[str, Any] = {}
    for name, info in fields.items():
        for key in (name, info.alias):
            if key is not None and key in data and _present(data[key]):
                value = data[key]
                values[name] = value.strip() if isinstance(value, str) else value
                break
    return values


class LlmSettings(BaseSettings):
    """How to reach the builder LLM. Immutable, so one instance serves every worker thread.

    Built by pydantic-settings from its standard sources: init kwargs (by field name) over the
    environment (by variable name, see ENV_VARS), handed in by load_llm_settings.
    """

    model_config = SettingsConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    provider: Provider = Field(alias=ENV_VARS["provider"])
    model: str = Field(min_length=1, alias=ENV_VARS["model"])
    base_url: str = Field(alias=ENV_VARS["base_url"])
    api_key_variable: str | None = None
    # validate_default: a missing key is checked with the other fields, so it is named in the
    # same refusal as a wrong timeout (a model validator would run only once they all pass).
    api_key: SecretStr | None = Field(
        default=None, alias=ENV_VARS["api_key"], validate_default=True
    )
    anthropic_api_key: SecretStr | None = Field(
        default=None, alias=FALLBACK_KEY_VARS["anthropic"], exclude=True, repr=False
    )
    openai_api_key: SecretStr | None = Field(
        default=None, alias=FALLBACK_KEY_VARS["openai"], exclude=True, repr=False
    )
    timeout_s: float = Field(default=600.0, gt=0, le=86_400, alias=ENV_VARS["timeout_s"])
    max_retries: int = Field(default=3, ge=0, le=10, alias=ENV_VARS["max_retries"])
    temperature: float | None = Field(default=0.2, ge=0, le=2, alias=ENV_VARS["temperature"])
    max_tokens_field: MaxTokensField = Field(default="auto", alias=ENV_VARS["max_tokens_field"])

    @model_validator(mode="before")
    @classmethod
    def _resolve_defaults(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        resolved = _field_values(data, cls.model_fields)
        provider = str(resolved.get("provider", "")).strip().lower()
        if "base_url" not in resolved and provider in DEFAULT_BASE_URLS:
            resolved["base_url"] = DEFAULT_BASE_URLS[provider]
        # The vendor variable is read only when AUTOPACK_LLM_API_KEY is unset, and only for its
        # own provider: a key read for one provider is never sent to the other.
        if "api_key" in resolved:
            resolved.setdefault("api_key_variable", ENV_VARS["api_key"])
        elif provider in FALLBACK_KEY_VARS and f"{provider}_api_key" in resolved:
            resolved["api_key"] = resolved[f"{provider}_api_key"]
            resolved["api_key_variable"] = FALLBACK_KEY_VARS[provider]
        resolved.pop("anthropic_api_key", None)
        resolved.pop("openai_api_key", None)
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

    @field_validator("api_key")
    @classmethod
    def _check_key_is_header_safe(
        cls, value: SecretStr | None, info: ValidationInfo
    ) -> SecretStr | None:
        if value is not None and not _SAFE_KEY.fullmatch(value.get_secret_value()):
            # The message never holds the key, nor any part of it.
            variable = info.data.get("api_key_variable") or ENV_VARS["api_key"]
            raise PydanticCustomError(
                "api_key_unsafe",
                "{variable} holds a newline, a blank, a control character or a non-ASCII character",
                {"variable": variable},
            )
        return value

    @field_validator("temperature", mode="before")
    @classmethod
    def _temperature_none(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() == "none":
            return None
        return value

    @field_validator("api_key")
    @classmethod
    def _require_key(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        provider = info.data.get("provider")
        if value is not None or provider is None:
            return value  # a wrong provider is reported on its own: no key rule to apply
        if provider == "openai":
            base_url = info.data.get("base_url")
            # A local OpenAI-compatible server may need no key; a wrong URL is its own error.
            if base_url is None or base_url != DEFAULT_BASE_URLS["openai"]:
                return value
        raise PydanticCustomError(
            "api_key_missing", "no API key for the {provider} provider", {"provider": provider}
        )

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


def load_llm_settings(
    env: Mapping[str, str], overrides: Mapping[str, Any] | None = None
) -> LlmSettings:
    """The builder-LLM settings from `env` (the environment's variables; the CLI passes its
    Environment's, a script passes os.environ), under `overrides` (by field name).

    Only `env` is read, so tests and embedders control every input. Raises `ConfigError` (one
    line naming every wrong variable, with a hint) when settings are missing or invalid; the
    error never contains the API key.
    """
    from autopack.settings_models import build_settings

    try:
        return build_settings(LlmSettings, options=overrides or {}, environ=env)
    except ValidationError as exc:
        raise _config_error(exc) from None


_FIELD_ORDER = list(ENV_VARS)
_FIELD_BY_VARIABLE = {variable: field for field, variable in ENV_VARS.items()}


def _config_error(exc: ValidationError) -> ConfigError:
    """One ConfigError naming every wrong setting at once, in the order of ENV_VARS."""
    problems: list[tuple[int, str, str]] = []
    errors = exc.errors(include_url=False)
    fields = {_field_of(error) for error in errors}
    for error in errors:
        field = _field_of(error)
        if field == "base_url" and error["type"] == "missing" and "provider" in fields:
            continue  # no default because the provider is wrong: that one error says it
        message, hint = _describe(error, field)
        position = _FIELD_ORDER.index(field) if field in _FIELD_ORDER else len(_FIELD_ORDER)
        problems.append((position, message, hint))
    problems.sort(key=lambda problem: problem[0])
    if len(problems) == 1:
        return ConfigError(problems[0][1], hint=problems[0][2])
    messages = " ".join(message for _, message, _ in problems)
    hints = "; ".join(dict.fromkeys(hint for _, _, hint in problems))
    return ConfigError(f"{len(problems)} LLM settings are wrong: {messages}", hint=hints)


def _field_of(error: Mapping[str, Any]) -> str:
    loc = error.get("loc") or ()
    name = str(loc[0]) if loc else ""
    return _FIELD_BY_VARIABLE.get(name, name)


def _describe(error: Mapping[str, Any], field: str) -> tuple[str, str]:
    """The sentence and the hint for one validation error; never the API key's value."""
    shown = _shown_value(error.get("input")) if field != "api_key" else "the value"
    context = error.get("ctx") or {}
    if error["type"] == "api_key_missing":
        provider = str(context.get("provider", ""))
        fallback = FALLBACK_KEY_VARS.get(provider, "")
        if provider == "openai":
            hint = (
                f"set AUTOPACK_LLM_API_KEY (or {fallback}); for a local OpenAI-compatible server "
                "that needs no key, set AUTOPACK_LLM_BASE_URL to it instead"
            )
        else:
            hint = f"set AUTOPACK_LLM_API_KEY (or {fallback})"
        return f"No API key for the {provider} LLM provider.", hint
    if error["type"] == "api_key_unsafe":
        variable = str(context.get("variable", ENV_VARS["api_key"]))
        return (
            f"{variable} holds a newline, a blank, a control character or a non-ASCII "
            "character (the value is not shown).",
            f"set {variable} to the key exactly as issued: printable ASCII, one line",
        )

    variable = ENV_VARS.get(field, field or "the LLM settings")
    missing = error["type"] == "missing"
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
    return (f"{variable} is not set." if missing else wrong), hint


def _shown_value(value: object) -> str:
    text = repr(value) if isinstance(value, str) else repr(str(value))
    return text if len(text) <= 60 else text[:57] + "…'"
