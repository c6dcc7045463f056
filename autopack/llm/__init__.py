"""The builder LLM over HTTP: Anthropic Messages or OpenAI-compatible chat completions.

Plain Python (no CLI or terminal code):

    from autopack.llm import LlmRequest, load_llm_settings, make_client

    with make_client(load_llm_settings()) as client:
        result = client.complete(LlmRequest(prompt="…", max_tokens=4096))   # -> LlmResult

See docs/llm.md for the settings, retries and the fake server the tests use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autopack.lazy import lazy_exports

if TYPE_CHECKING:
    from autopack.llm.base import (
        LlmAttempt,
        LlmCallError,
        LlmClient,
        LlmMessage,
        LlmRequest,
        LlmResult,
        Provider,
    )
    from autopack.llm.clients import make_client
    from autopack.llm.http import RetryPolicy
    from autopack.llm.settings import LlmSettings, load_llm_settings

__getattr__ = lazy_exports(
    __name__,
    {
        "autopack.llm.base": (
            "LlmAttempt",
            "LlmCallError",
            "LlmClient",
            "LlmMessage",
            "LlmRequest",
            "LlmResult",
            "Provider",
        ),
        "autopack.llm.clients": ("make_client",),
        "autopack.llm.http": ("RetryPolicy",),
        "autopack.llm.settings": (
            "LlmSettings",
            "load_llm_settings",
        ),
    },
)

__all__ = [
    "LlmAttempt",
    "LlmCallError",
    "LlmClient",
    "LlmMessage",
    "LlmRequest",
    "LlmResult",
    "LlmSettings",
    "Provider",
    "RetryPolicy",
    "load_llm_settings",
    "make_client",
]
