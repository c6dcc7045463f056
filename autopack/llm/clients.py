"""`make_client`: the HTTP client for the configured wire protocol.

Its own module, above the protocols: `base.py` holds the types every protocol module imports,
so the factory that imports the protocols cannot live there without a circle.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from autopack.llm.anthropic import AnthropicClient
from autopack.llm.http import HttpLlmClient, RetryPolicy
from autopack.llm.openai import OpenAIClient
from autopack.llm.settings import LlmSettings


def make_client(
    settings: LlmSettings,
    *,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
    retry_policy: RetryPolicy | None = None,
) -> HttpLlmClient:
    """Build the client for `settings.provider` (Anthropic Messages or OpenAI-compatible chat).

    `transport` replaces httpx's network transport (tests); `sleep` is what back-off calls, so
    tests can record waits instead of waiting; `retry_policy` defaults to
    `RetryPolicy(max_retries=settings.max_retries)`. The client owns an httpx connection pool:
    close it (or use it as a context manager) when done.
    """
    client_class: type[HttpLlmClient] = (
        AnthropicClient if settings.provider == "anthropic" else OpenAIClient
    )
    return client_class(settings, transport=transport, sleep=sleep, retry_policy=retry_policy)
