"""The Anthropic Messages API (`POST {base}/v1/messages`) over httpx, without the vendor SDK.

Request: `model`, `max_tokens`, `messages`, optional `system` and `temperature`; headers
`x-api-key` and `anthropic-version`. Reply: `content` blocks (the text blocks are joined),
`usage.input_tokens` (+ cache creation / cache read tokens) and `usage.output_tokens`,
`stop_reason`. `max_tokens` and `model_context_window_exceeded` mean the output was cut off.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autopack.llm.base import LlmRequest
from autopack.llm.http import (
    HttpLlmClient,
    MalformedReply,
    ReplyBody,
    optional_str,
    token_count,
)

ANTHROPIC_VERSION = "2023-06-01"
TRUNCATION_STOP_REASONS = frozenset({"max_tokens", "model_context_window_exceeded"})


class AnthropicClient(HttpLlmClient):
    """A thread-safe client for the Anthropic Messages API (or a server speaking it)."""

    provider = "anthropic"

    def _endpoint(self, base_url: str) -> str:
        base = base_url.rstrip("/")
        if base.endswith("/v1"):  # accept the OpenAI-style habit of including the version
            base = base[: -len("/v1")]
        return f"{base}/v1/messages"

    def _headers(self, api_key: str | None) -> dict[str, str]:
        headers = {
            "anthropic-version": ANTHROPIC_VERSION,
            "content-type": "application/json",
            "accept": "application/json",
        }
        if api_key:
            headers["x-api-key"] = api_key
        return headers

    def _payload(self, request: LlmRequest, model: str) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": model,
            "max_tokens": request.max_tokens,
            "messages": [
                {"role": turn.role, "content": turn.content} for turn in request.conversation()
            ],
        }
        if request.system:
            payload["system"] = request.system
        temperature = (
            request.temperature if request.temperature is not None else self.settings.temperature
        )
        if temperature is not None:
            payload["temperature"] = temperature
        return payload

    def _parse(self, body: object) -> ReplyBody:
        if not isinstance(body, dict):
            raise MalformedReply("the body is not a JSON object")
        if body.get("type") == "error":
            raise MalformedReply("a 2xx reply carries an error object")
        content = body.get("content")
        if not isinstance(content, list):
            raise MalformedReply("content is missing or not a list")
        texts: list[str] = []
        for block in content:
            if not isinstance(block, dict):
                raise MalformedReply("a content block is not an object")
            if block.get("type") == "text":
                text = block.get("text")
                if not isinstance(text, str):
                    raise MalformedReply("a text block has no text")
                texts.append(text)
        usage = body.get("usage")
        if usage is not None and not isinstance(usage, Mapping):
            raise MalformedReply("usage is not an object")
        input_tokens, output_tokens = _usage(usage or {})
        stop_reason = optional_str(body, "stop_reason")
        return ReplyBody(
            text="".join(texts),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            stop_reason=stop_reason,
            truncated=stop_reason in TRUNCATION_STOP_REASONS,
            response_model=optional_str(body, "model"),
            response_id=optional_str(body, "id"),
        )


def _usage(usage: Mapping[str, object]) -> tuple[int | None, int | None]:
    """(input, output). Input counts every prompt token: uncached, cache writes, cache reads."""
    uncached = token_count(usage, "input_tokens")
    cache_write = token_count(usage, "cache_creation_input_tokens") or 0
    cache_read = token_count(usage, "cache_read_input_tokens") or 0
    input_tokens = None if uncached is None else uncached + cache_write + cache_read
    return input_tokens, token_count(usage, "output_tokens")
