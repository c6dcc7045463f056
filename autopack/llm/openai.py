"""OpenAI chat completions (`POST {base}/chat/completions`) over httpx, without the vendor SDK.

The same wire format is served by OpenAI and by local servers (Ollama, vLLM, llama.cpp,
LM Studio), so this client is the one for all of them. Request: `model`, `messages` (the system
prompt first), the output ceiling as `max_tokens` or `max_completion_tokens` (see
`LlmSettings.openai_max_tokens_field`), optional `temperature`; header
`Authorization: Bearer <key>` when there is a key. Reply: `choices[0].message.content`,
`usage.prompt_tokens` / `usage.completion_tokens`, `choices[0].finish_reason`; `length` means
the output was cut off.
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

TRUNCATION_FINISH_REASONS = frozenset({"length", "max_tokens", "model_context_window_exceeded"})


class OpenAIClient(HttpLlmClient):
    """A thread-safe client for OpenAI-compatible chat completions."""

    provider = "openai"

    def _endpoint(self, base_url: str) -> str:
        return f"{base_url.rstrip('/')}/chat/completions"

    def _headers(self, api_key: str | None) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "application/json"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        return headers

    def _payload(self, request: LlmRequest, model: str) -> dict[str, Any]:
        messages = [{"role": "system", "content": request.system}] if request.system else []
        messages.extend(
            {"role": turn.role, "content": turn.content} for turn in request.conversation()
        )
        payload: dict[str, Any] = {
            "model": model,
            "messages": messages,
            self.settings.openai_max_tokens_field: request.max_tokens,
        }
        temperature = (
            request.temperature if request.temperature is not None else self.settings.temperature
        )
        if temperature is not None:
            payload["temperature"] = temperature
        return payload

    def _parse(self, body: object) -> ReplyBody:
        if not isinstance(body, dict):
            raise MalformedReply("the body is not a JSON object")
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices:
            raise MalformedReply("choices is missing or empty")
        choice = choices[0]
        if not isinstance(choice, dict):
            raise MalformedReply("choices[0] is not an object")
        message = choice.get("message")
        if not isinstance(message, dict):
            raise MalformedReply("choices[0].message is missing")
        usage = body.get("usage")
        if usage is not None and not isinstance(usage, Mapping):
            raise MalformedReply("usage is not an object")
        usage = usage or {}
        finish_reason = optional_str(choice, "finish_reason")
        return ReplyBody(
            text=_content_text(message.get("content")),
            input_tokens=token_count(usage, "prompt_tokens"),
            output_tokens=token_count(usage, "completion_tokens"),
            stop_reason=finish_reason,
            truncated=finish_reason in TRUNCATION_FINISH_REASONS,
            response_model=optional_str(body, "model"),
            response_id=optional_str(body, "id"),
        )


def _content_text(content: object) -> str:
    """`content` as text: a string, null (no text: a refusal or tool call), or text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if not isinstance(part, dict):
                raise MalformedReply("a content part is not an object")
            if part.get("type") == "text":
                text = part.get("text")
                if not isinstance(text, str):
                    raise MalformedReply("a text part has no text")
                texts.append(text)
        return "".join(texts)
    raise MalformedReply("choices[0].message.content is not text")
