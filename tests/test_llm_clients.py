"""The builder-LLM clients against the fake server over real HTTP, and their settings."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from autopack.errors import EXIT_REFUSED, ConfigError
from autopack.llm.anthropic import AnthropicClient
from autopack.llm.base import (
    LlmCallError,
    LlmClient,
    LlmMessage,
    LlmRequest,
    Provider,
)
from autopack.llm.clients import make_client
from autopack.llm.http import HttpLlmClient, RetryPolicy, parse_retry_after
from autopack.llm.openai import OpenAIClient
from autopack.llm.settings import LlmSettings, load_llm_settings
from tests.conftest import CliRunner
from tests.fake_llm import FakeLlmServer, Reply, http_date

KEY = "sk-test-TOPSECRET-0123456789abcdef"
PROVIDERS: list[Provider] = ["anthropic", "openai"]
REQUEST = LlmRequest(prompt="Write the module.", system="You build.", max_tokens=321)

Connect = Callable[..., tuple[HttpLlmClient, list[float]]]


@pytest.fixture
def connect(fake_llm: FakeLlmServer) -> Iterator[Connect]:
    """Build a client for the fake server through the settings; records back-off sleeps."""
    made: list[HttpLlmClient] = []

    def factory(
        provider: Provider,
        *,
        api_key: str | None = KEY,
        base_url: str | None = None,
        retry_policy: RetryPolicy | None = None,
        **extra: str,
    ) -> tuple[HttpLlmClient, list[float]]:
        env = fake_llm.env(provider, api_key=api_key, **extra)
        if base_url is not None:
            env["AUTOPACK_LLM_BASE_URL"] = base_url
        sleeps: list[float] = []
        client = make_client(load_llm_settings(env), sleep=sleeps.append, retry_policy=retry_policy)
        made.append(client)
        return client, sleeps

    yield factory
    for client in made:
        client.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- answered calls ----------------------------------------------------------------------------


@pytest.mark.parametrize(("provider", "stop"), [("anthropic", "end_turn"), ("openai", "stop")])
def test_text_usage_and_stop_reason(
    connect: Connect, fake_llm: FakeLlmServer, provider: Provider, stop: str
) -> None:
    client, sleeps = connect(provider)
    fake_llm.queue(Reply.ok("print('hi')", input_tokens=1200, output_tokens=345))

    result = client.complete(REQUEST)

    assert result.text == "print('hi')"
    assert (result.input_tokens, result.output_tokens, result.total_tokens) == (1200, 345, 1545)
    assert result.stop_reason == stop
    assert result.truncated is False
    assert result.http_status == 200
    assert result.provider == provider
    assert result.model == "fake-model"
    assert result.response_model == "fake-model"
    assert result.response_id
    assert result.max_tokens == 321
    assert result.retries == 0
    assert [(a.number, a.kind, a.status, a.waited_s) for a in result.attempts] == [
        (1, "ok", 200, 0.0)
    ]
    assert 0 < result.latency_s <= result.elapsed_s
    assert sleeps == []
    assert fake_llm.answered_2xx == 1


def test_anthropic_wire_format(connect: Connect, fake_llm: FakeLlmServer) -> None:
    client, _ = connect("anthropic")
    client.complete(REQUEST)

    [sent] = fake_llm.requests
    assert sent.path == "/v1/messages"
    assert sent.protocol == "anthropic"
    assert sent.headers["x-api-key"] == KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["content-type"] == "application/json"
    assert "authorization" not in sent.headers
    assert sent.body == {
        "model": "fake-model",
        "max_tokens": 321,
        "messages": [{"role": "user", "content": "Write the module."}],
        "system": "You build.",
        "temperature": 0.2,
    }


def test_openai_wire_format(connect: Connect, fake_llm: FakeLlmServer) -> None:
    client, _ = connect("openai")
    client.complete(REQUEST)

    [sent] = fake_llm.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.protocol == "openai"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert "x-api-key" not in sent.headers
    assert sent.body == {
        "model": "fake-model",
        "messages": [
            {"role": "system", "content": "You build."},
            {"role": "user", "content": "Write the module."},
        ],
        "max_tokens": 321,  # a non-default base URL: the field every compatible server knows
        "temperature": 0.2,
    }


def test_openai_max_completion_tokens_field_and_no_key(
    connect: Connect, fake_llm: FakeLlmServer
) -> None:
    client, _ = connect("openai", api_key=None, MAX_TOKENS_FIELD="max_completion_tokens")
    client.complete(LlmRequest(prompt="hi", max_tokens=50))

    [sent] = fake_llm.requests
    assert sent.body["max_completion_tokens"] == 50
    assert "max_tokens" not in sent.body
    assert "authorization" not in sent.headers  # a local server without a key


@pytest.mark.parametrize("provider", PROVIDERS)
def test_conversation_overrides_and_no_temperature(
    connect: Connect, fake_llm: FakeLlmServer, provider: Provider
) -> None:
    client, _ = connect(provider, TEMPERATURE="none")
    request = LlmRequest(
        messages=(LlmMessage("user", "Write a.py"), LlmMessage("assistant", "```python")),
        prompt="Continue from b.py.",
        max_tokens=64,
        model="other-model",
    )
    client.complete(request)
    client.complete(LlmRequest(prompt="again", max_tokens=64, temperature=0.7))

    first, second = (sent.body for sent in fake_llm.requests)
    assert first["model"] == "other-model"
    assert first["messages"] == [
        {"role": "user", "content": "Write a.py"},
        {"role": "assistant", "content": "```python"},
        {"role": "user", "content": "Continue from b.py."},
    ]
    assert "temperature" not in first
    assert second["model"] == "fake-model"
    assert second["temperature"] == 0.7


@pytest.mark.parametrize(
    ("provider", "reply", "stop", "truncated"),
    [
        ("anthropic", Reply.cut_off(output_tokens=16384), "max_tokens", True),
        (
            "anthropic",
            Reply.ok(stop_reason="model_context_window_exceeded"),
            "model_context_window_exceeded",
            True,
        ),
        ("anthropic", Reply.ok(stop_reason="stop_sequence"), "stop_sequence", False),
        ("openai", Reply.cut_off(output_tokens=16384), "length", True),
        ("openai", Reply.ok(stop_reason="content_filter"), "content_filter", False),
    ],
)
def test_truncated_flag_follows_stop_reason(
    connect: Connect,
    fake_llm: FakeLlmServer,
    provider: Provider,
    reply: Reply,
    stop: str,
    truncated: bool,
) -> None:
    client, _ = connect(provider)
    fake_llm.queue(reply)

    result = client.complete(REQUEST)

    assert result.stop_reason == stop
    assert result.truncated is truncated


@pytest.mark.parametrize("provider", PROVIDERS)
def test_empty_content_is_a_result_with_empty_text(
    connect: Connect, fake_llm: FakeLlmServer, provider: Provider
) -> None:
    client, _ = connect(provider)
    fake_llm.queue(Reply.empty(output_tokens=2))

    result = client.complete(REQUEST)

    assert result.text == ""
    assert result.output_tokens == 2
    assert result.truncated is False
    assert fake_llm.answered_2xx == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_missing_usage_gives_unknown_token_counts(
    connect: Connect, fake_llm: FakeLlmServer, provider: Provider
) -> None:
    client, _ = connect(provider)
    fake_llm.queue(Reply(text="fine", include_usage=False))

    result = client.complete(REQUEST)

    assert result.text == "fine"
    assert (result.input_tokens, result.output_tokens, result.total_tokens) == (None, None, None)


def test_anthropic_input_tokens_include_cached_prompt_tokens(
    connect: Connect, fake_llm: FakeLlmServer
) -> None:
    client, _ = connect("anthropic")
    body = (
        '{"content": [{"type": "text", "text": "a"}, {"type": "thinking", "thinking": "…"},'
        ' {"type": "text", "text": "b"}], "stop_reason": "end_turn", "usage": {"input_tokens": 10,'
        ' "cache_creation_input_tokens": 100, "cache_read_input_tokens": 1000,'
        ' "output_tokens": 60}}'
    )
    fake_llm.queue(Reply.raw(body))

    result = client.complete(REQUEST)

    assert result.text == "ab"  # text blocks joined, other block types skipped
    assert (result.input_tokens, result.output_tokens) == (1110, 60)


@pytest.mark.parametrize(
    ("provider", "base_path", "expected_path"),
    [
        ("anthropic", "/proxy", "/proxy/v1/messages"),
        ("anthropic", "/v1", "/v1/messages"),  # a trailing /v1 is not doubled
        ("openai", "/proxy/v1", "/proxy/v1/chat/completions"),
    ],
)
def test_base_url_with_a_path(
    connect: Connect,
    fake_llm: FakeLlmServer,
    provider: Provider,
    base_path: str,
    expected_path: str,
) -> None:
    client, _ = connect(provider, base_url=fake_llm.url + base_path + "/")

    assert client.complete(REQUEST).text == "ok"
    assert [sent.path for sent in fake_llm.requests] == [expected_path]


# -- retries -----------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_429_retry_after_seconds_is_honoured(
    connect: Connect, fake_llm: FakeLlmServer, provider: Provider
) -> None:
    client, sleeps = connect(provider)
    fake_llm.queue(Reply.rate_limited(retry_after="7"), Reply.ok("done"))

    result = client.complete(REQUEST)

    assert result.text == "done"
    assert sleeps == [7.0]
    assert [(a.kind, a.status, a.waited_s) for a in result.attempts] == [
        ("rate_limited", 429, 0.0),
        ("ok", 200, 7.0),
    ]
    assert "rate limit exceeded" in result.attempts[0].detail
    assert result.retries == 1
    assert len(fake_llm.requests) == 2
    assert fake_llm.answered_2xx == 1


def test_429_retry_after_http_date_is_honoured(connect: Connect, fake_llm: FakeLlmServer) -> None:
    client, sleeps = connect("anthropic")
    fake_llm.queue(Reply.rate_limited(retry_after=http_date(30)), Reply.ok())

    client.complete(REQUEST)

    [slept] = sleeps
    assert 28.0 <= slept <= 30.0


def test_429_without_retry_after_backs_off(connect: Connect, fake_llm: FakeLlmServer) -> None:
    client, sleeps = connect("openai")
    fake_llm.queue(Reply.rate_limited(retry_after=None), Reply.ok())

    client.complete(REQUEST)

    [slept] = sleeps
    assert 0.75 <= slept <= 1.0  # 1 s minus up to 25 % jitter


def test_retry_after_beyond_the_cap_fails_at_once(
    connect: Connect, fake_llm: FakeLlmServer
) -> None:
    client, sleeps = connect("anthropic")
    fake_llm.queue(Reply.rate_limited(retry_after="3600"), Reply.ok())

    with pytest.raises(LlmCallError) as caught:
        client.complete(REQUEST)

    assert caught.value.kind == "rate_limited_exhausted"
    assert "3600" in caught.value.message
    assert len(caught.value.attempts) == 1
    assert sleeps == []
    assert fake_llm.pending == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_server_error_then_success(
    connect: Connect, fake_llm: FakeLlmServer, provider: Provider
) -> None:
    client, sleeps = connect(provider)
    fake_llm.queue(Reply.server_error(500), Reply.ok("recovered"))

    result = client.complete(REQUEST)

    assert result.text == "recovered"
    assert [a.kind for a in result.attempts] == ["http_5xx", "ok"]
    assert result.attempts[0].status == 500
    assert len(sleeps) == 1
    assert 0.75 <= sleeps[0] <= 1.0
    assert result.attempts[1].waited_s == sleeps[0]
    assert fake_llm.answered_2xx == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_server_errors_exhaust_the_retries(
    connect: Connect, fake_llm: FakeLlmServer, provider: Provider
) -> None:
    client, sleeps = connect(provider)
    fake_llm.queue(*[Reply.server_error(529, "overloaded")] * 4, Reply.ok())

    with pytest.raises(LlmCallError) as caught:
        client.complete(REQUEST)

    error = caught.value
    assert error.kind == "http_5xx_exhausted"
    assert error.answered is False
    assert error.status == 529
    assert [(a.number, a.kind, a.status) for a in error.attempts] == [
        (n, "http_5xx", 529) for n in (1, 2, 3, 4)
    ]
    assert [a.waited_s for a in error.attempts[1:]] == sleeps
    assert 0.75 <= sleeps[0] <= 1.0
    assert 1.5 <= sleeps[1] <= 2.0
    assert 3.0 <= sleeps[2] <= 4.0
    assert "4 attempt(s)" in error.message
    assert "overloaded" in error.message
    assert error.hint
    assert len(fake_llm.requests) == 4
    assert fake_llm.pending == 1
    assert fake_llm.answered_2xx == 0


@pytest.mark.parametrize("provider", PROVIDERS)
def test_client_error_is_not_retried(
    connect: Connect, fake_llm: FakeLlmServer, provider: Provider
) -> None:
    client, sleeps = connect(provider)
    fake_llm.queue(Reply.client_error(400, "max_tokens: 999999 > 64000"), Reply.ok())

    with pytest.raises(LlmCallError) as caught:
        client.complete(REQUEST)

    error = caught.value
    assert error.kind == "http_4xx"
    assert error.status == 400
    assert "max_tokens: 999999 > 64000" in error.message
    assert [(a.kind, a.status) for a in error.attempts] == [("http_4xx", 400)]
    assert sleeps == []
    assert len(fake_llm.requests) == 1
    assert fake_llm.pending == 1


@pytest.mark.parametrize(
    ("status", "hint_words"),
    [(401, ["AUTOPACK_LLM_API_KEY"]), (404, ["AUTOPACK_LLM_BASE_URL", "AUTOPACK_LLM_MODEL"])],
)
def test_client_error_hints(
    connect: Connect, fake_llm: FakeLlmServer, status: int, hint_words: list[str]
) -> None:
    client, _ = connect("openai")
    fake_llm.queue(Reply.client_error(status, "nope"))

    with pytest.raises(LlmCallError) as caught:
        client.complete(REQUEST)

    assert caught.value.status == status
    assert caught.value.hint is not None
    for word in hint_words:
        assert word in caught.value.hint


def test_fallback_key_is_named_in_the_401_hint(fake_llm: FakeLlmServer) -> None:
    env = fake_llm.env("anthropic", api_key=None) | {"ANTHROPIC_API_KEY": "vendor-key"}
    fake_llm.queue(Reply.client_error(401, "invalid x-api-key"))
    with make_client(load_llm_settings(env)) as client, pytest.raises(LlmCallError) as caught:
        client.complete(REQUEST)

    assert fake_llm.requests[0].headers["x-api-key"] == "vendor-key"
    assert caught.value.hint is not None
    assert "ANTHROPIC_API_KEY" in caught.value.hint


@pytest.mark.parametrize("provider", PROVIDERS)
def test_malformed_body_is_an_answered_failure(
    connect: Connect, fake_llm: FakeLlmServer, provider: Provider
) -> None:
    client, sleeps = connect(provider)
    fake_llm.queue(Reply.malformed(), Reply.ok())

    with pytest.raises(LlmCallError) as caught:
        client.complete(REQUEST)

    error = caught.value
    assert error.kind == "malformed_body"
    assert error.answered is True
    assert error.status == 200
    assert [(a.kind, a.status) for a in error.attempts] == [("malformed_body", 200)]
    assert '"broken"' in error.body_excerpt
    assert sleeps == []  # an answered (and maybe billed) call is not sent again
    assert fake_llm.answered_2xx == 1
    assert fake_llm.pending == 1


@pytest.mark.parametrize(
    ("provider", "body"),
    [
        ("anthropic", "[]"),
        ("anthropic", '{"content": "not a list"}'),
        ("anthropic", '{"content": [{"type": "text"}]}'),
        ("anthropic", '{"content": [], "usage": {"output_tokens": "7"}}'),
        ("anthropic", '{"type": "error", "error": {"type": "overloaded_error"}}'),
        ("openai", '{"choices": []}'),
        ("openai", '{"choices": [{"finish_reason": "stop"}]}'),
        ("openai", '{"choices": [{"message": {"content": 5}}]}'),
        ("openai", '{"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": -1}}'),
    ],
)
def test_json_in_the_wrong_shape_is_malformed(
    connect: Connect, fake_llm: FakeLlmServer, provider: Provider, body: str
) -> None:
    client, _ = connect(provider)
    fake_llm.queue(Reply.malformed(body))

    with pytest.raises(LlmCallError) as caught:
        client.complete(REQUEST)

    assert caught.value.kind == "malformed_body"
    assert caught.value.attempts[0].detail


@pytest.mark.parametrize("provider", PROVIDERS)
def test_slow_reply_times_out_and_is_retried(
    connect: Connect, fake_llm: FakeLlmServer, provider: Provider
) -> None:
    client, sleeps = connect(provider, TIMEOUT_S="0.3")
    fake_llm.queue(Reply.slow(5.0), Reply.ok("in time"))

    result = client.complete(REQUEST)

    assert result.text == "in time"
    assert [(a.kind, a.status) for a in result.attempts] == [("timeout", None), ("ok", 200)]
    assert 0.25 <= result.attempts[0].latency_s < 2.0
    assert "0.3 s" in result.attempts[0].detail
    assert len(sleeps) == 1
    assert fake_llm.answered_2xx == 1  # the late reply found its client gone


def test_timeouts_exhaust_the_retries(connect: Connect, fake_llm: FakeLlmServer) -> None:
    client, sleeps = connect("anthropic", TIMEOUT_S="0.3", MAX_RETRIES="1")
    fake_llm.queue(Reply.slow(5.0), Reply.slow(5.0))

    with pytest.raises(LlmCallError) as caught:
        client.complete(REQUEST)

    assert caught.value.kind == "timeout_exhausted"
    assert caught.value.status is None
    assert [a.kind for a in caught.value.attempts] == ["timeout", "timeout"]
    assert caught.value.hint is not None
    assert "AUTOPACK_LLM_TIMEOUT_S" in caught.value.hint
    assert len(sleeps) == 1
    assert fake_llm.answered_2xx == 0


def test_connection_errors_exhaust_the_retries() -> None:
    port = _free_port()  # nothing listens there any more
    env = {
        "AUTOPACK_LLM_PROVIDER": "openai",
        "AUTOPACK_LLM_MODEL": "m",
        "AUTOPACK_LLM_BASE_URL": f"http://127.0.0.1:{port}/v1",
        "AUTOPACK_LLM_MAX_RETRIES": "2",
    }
    sleeps: list[float] = []
    with (
        make_client(load_llm_settings(env), sleep=sleeps.append) as client,
        pytest.raises(LlmCallError) as caught,
    ):
        client.complete(REQUEST)

    assert caught.value.kind == "connection_exhausted"
    assert [a.kind for a in caught.value.attempts] == ["connection"] * 3
    assert len(sleeps) == 2
    assert caught.value.hint is not None
    assert f"127.0.0.1:{port}" in caught.value.hint


def test_retry_policy_from_settings_and_custom_policy(
    connect: Connect, fake_llm: FakeLlmServer
) -> None:
    client, _ = connect("openai", MAX_RETRIES="0")
    fake_llm.queue(Reply.server_error(500))
    with pytest.raises(LlmCallError) as caught:
        client.complete(REQUEST)
    assert len(caught.value.attempts) == 1

    policy = RetryPolicy(max_retries=1, base_delay_s=0.01, max_delay_s=0.01, jitter=0.0)
    client, sleeps = connect("openai", retry_policy=policy)
    fake_llm.queue(Reply.server_error(502), Reply.ok())
    assert client.complete(REQUEST).retries == 1
    assert sleeps == [0.01]


# -- secrets -----------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("key", [KEY, "local-gateway-password-42"])
def test_the_key_never_appears_in_errors_reprs_or_logs(
    connect: Connect,
    fake_llm: FakeLlmServer,
    caplog: pytest.LogCaptureFixture,
    provider: Provider,
    key: str,
) -> None:
    caplog.set_level(logging.DEBUG, logger="autopack.llm")
    client, _ = connect(provider, api_key=key)
    # A server that echoes the key back, whole and partly masked (as OpenAI's 401 does).
    echo = f"bad key {key}; Incorrect API key provided: sk-test-TOPS*****cdef"
    fake_llm.queue(Reply.server_error(500, echo), Reply.client_error(401, echo))

    with pytest.raises(LlmCallError) as caught:
        client.complete(REQUEST)

    error = caught.value
    texts = [
        str(error),
        repr(error),
        error.message,
        str(error.hint),
        error.body_excerpt,
        *(attempt.detail for attempt in error.attempts),
        caplog.text,
        repr(client),
        repr(client.settings),
        str(client.settings),
        str(client.settings.describe()),
        client.settings.model_dump_json(),
    ]
    for text in texts:
        assert key not in text
        assert "TOPS" not in text
    assert "bad key ***" in error.message
    assert "retrying" in caplog.text
    sent = fake_llm.requests[0].headers
    assert sent.get("x-api-key") == key or sent.get("authorization") == f"Bearer {key}"


# -- threads, lifecycle, factory ---------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_concurrent_calls_from_several_threads(
    connect: Connect, fake_llm: FakeLlmServer, provider: Provider
) -> None:
    client, _ = connect(provider)
    fake_llm.default_reply = Reply.echo()
    fake_llm.latency_s = 0.2
    prompts = [f"phase-{n:02d}" for n in range(16)]
    seen_threads: set[int] = set()

    def call(prompt: str) -> str:
        seen_threads.add(threading.get_ident())
        return client.complete(LlmRequest(prompt=prompt, max_tokens=10)).text

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=8) as pool:
        texts = list(pool.map(call, prompts))
    elapsed = time.perf_counter() - started

    assert texts == prompts  # every thread got its own reply, nothing crossed
    assert len(seen_threads) > 1
    assert fake_llm.answered_2xx == 16
    assert len(fake_llm.requests) == 16
    assert elapsed < 16 * 0.2 / 2  # the calls overlapped: far less than back to back


def test_make_client_picks_the_protocol(fake_llm: FakeLlmServer) -> None:
    anthropic = make_client(load_llm_settings(fake_llm.env("anthropic")))
    openai = make_client(
        load_llm_settings(fake_llm.env("openai")), transport=httpx.HTTPTransport(retries=0)
    )
    try:
        assert isinstance(anthropic, AnthropicClient)
        assert isinstance(openai, OpenAIClient)
        assert isinstance(anthropic, LlmClient)
        assert isinstance(openai, LlmClient)
        assert openai.complete(REQUEST).text == "ok"  # through the injected transport
        assert "fake-model" in repr(anthropic)
    finally:
        anthropic.close()
        openai.close()
    with pytest.raises(RuntimeError, match="closed"):
        anthropic.complete(REQUEST)


def test_a_client_refuses_settings_for_the_other_protocol(fake_llm: FakeLlmServer) -> None:
    with pytest.raises(ValueError, match="speaks openai"):
        OpenAIClient(load_llm_settings(fake_llm.env("anthropic")))


def test_request_validation() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        LlmRequest(prompt="x", max_tokens=0)
    with pytest.raises(ValueError, match="prompt or at least one message"):
        LlmRequest(max_tokens=10)
    request = LlmRequest(messages=(LlmMessage("user", "a"),), max_tokens=10)
    assert request.conversation() == (LlmMessage("user", "a"),)


# -- retry-after and back-off ------------------------------------------------------------------


def test_parse_retry_after() -> None:
    now = datetime(2025, 12, 29, 12, 0, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=45), usegmt=True)
    earlier = format_datetime(now - timedelta(seconds=45), usegmt=True)

    assert parse_retry_after({"Retry-After": "12"}) == 12.0
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": later}, now=now) == 45.0
    assert parse_retry_after({"retry-after": earlier}, now=now) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({"retry-after": "-3"}) is None
    assert parse_retry_after({}) is None


def test_backoff_grows_exponentially_with_a_cap_and_jitter() -> None:
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=5.0, jitter=0.25)
    assert [policy.backoff_s(n, rand=lambda: 0.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
    assert policy.backoff_s(2, rand=lambda: 1.0) == 1.5


# -- settings ----------------------------------------------------------------------------------


def _config_error(env: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_llm_settings(env)
    error = caught.value
    assert error.exit_code == EXIT_REFUSED
    assert "\n" not in error.message
    assert error.hint
    return error


def test_settings_defaults_and_fallback_key() -> None:
    settings = load_llm_settings(
        {
            "AUTOPACK_LLM_PROVIDER": "Anthropic",
            "AUTOPACK_LLM_MODEL": " claude-sonnet-4-5 ",
            "ANTHROPIC_API_KEY": "vendor-key\n",
            "OPENAI_API_KEY": "other-vendor-key",
        }
    )
    assert settings.provider == "anthropic"
    assert settings.model == "claude-sonnet-4-5"
    assert settings.base_url == "https://api.anthropic.com"
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == "vendor-key"
    assert settings.api_key_variable == "ANTHROPIC_API_KEY"
    assert (settings.timeout_s, settings.max_retries, settings.temperature) == (600.0, 3, 0.2)
    assert settings.describe()["api_key"] == "set (from ANTHROPIC_API_KEY)"


def test_settings_explicit_key_wins_and_openai_defaults() -> None:
    settings = load_llm_settings(
        {
            "AUTOPACK_LLM_PROVIDER": "openai",
            "AUTOPACK_LLM_MODEL": "gpt-4.1",
            "AUTOPACK_LLM_API_KEY": "explicit",
            "OPENAI_API_KEY": "vendor",
            "AUTOPACK_LLM_TIMEOUT_S": "30",
            "AUTOPACK_LLM_MAX_RETRIES": "5",
        }
    )
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == "explicit"
    assert settings.api_key_variable == "AUTOPACK_LLM_API_KEY"
    assert settings.base_url == "https://api.openai.com/v1"
    assert settings.openai_max_tokens_field == "max_completion_tokens"
    assert (settings.timeout_s, settings.max_retries) == (30.0, 5)


def test_settings_local_openai_server_needs_no_key() -> None:
    settings = load_llm_settings(
        {
            "AUTOPACK_LLM_PROVIDER": "openai",
            "AUTOPACK_LLM_MODEL": "qwen2.5-coder:14b",
            "AUTOPACK_LLM_BASE_URL": "http://localhost:11434/v1/",
        }
    )
    assert settings.api_key is None
    assert settings.base_url == "http://localhost:11434/v1"
    assert settings.openai_max_tokens_field == "max_tokens"
    assert settings.describe()["api_key"] == "none"


def test_settings_missing_provider() -> None:
    error = _config_error({"AUTOPACK_LLM_MODEL": "m", "ANTHROPIC_API_KEY": "k"})
    assert error.message == "AUTOPACK_LLM_PROVIDER is not set."
    assert error.hint is not None
    assert "AUTOPACK_LLM_PROVIDER=anthropic" in error.hint


def test_settings_unknown_provider() -> None:
    error = _config_error({"AUTOPACK_LLM_PROVIDER": "gemini", "AUTOPACK_LLM_MODEL": "m"})
    assert "AUTOPACK_LLM_PROVIDER" in error.message
    assert "'gemini'" in error.message


def test_settings_missing_model() -> None:
    error = _config_error({"AUTOPACK_LLM_PROVIDER": "anthropic", "ANTHROPIC_API_KEY": "k"})
    assert error.message == "AUTOPACK_LLM_MODEL is not set."
    assert error.hint is not None
    assert "AUTOPACK_LLM_MODEL" in error.hint


@pytest.mark.parametrize(
    ("env", "fallback"),
    [
        ({"AUTOPACK_LLM_PROVIDER": "anthropic"}, "ANTHROPIC_API_KEY"),
        # a vendor key is only ever used for its own provider
        ({"AUTOPACK_LLM_PROVIDER": "anthropic", "OPENAI_API_KEY": "k"}, "ANTHROPIC_API_KEY"),
        ({"AUTOPACK_LLM_PROVIDER": "openai", "ANTHROPIC_API_KEY": "k"}, "OPENAI_API_KEY"),
        (
            {"AUTOPACK_LLM_PROVIDER": "anthropic", "AUTOPACK_LLM_BASE_URL": "http://gw:8080"},
            "ANTHROPIC_API_KEY",
        ),
    ],
)
def test_settings_missing_key(env: dict[str, str], fallback: str) -> None:
    error = _config_error({"AUTOPACK_LLM_MODEL": "m", "AUTOPACK_LLM_API_KEY": "  "} | env)
    assert "No API key" in error.message
    assert error.hint is not None
    assert "AUTOPACK_LLM_API_KEY" in error.hint
    assert fallback in error.hint


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AUTOPACK_LLM_TIMEOUT_S", "abc"),
        ("AUTOPACK_LLM_TIMEOUT_S", "0"),
        ("AUTOPACK_LLM_MAX_RETRIES", "-1"),
        ("AUTOPACK_LLM_MAX_RETRIES", "many"),
        ("AUTOPACK_LLM_TEMPERATURE", "3"),
        ("AUTOPACK_LLM_BASE_URL", "localhost:11434"),
        ("AUTOPACK_LLM_MAX_TOKENS_FIELD", "n_predict"),
    ],
)
def test_settings_invalid_values_name_the_variable(variable: str, value: str) -> None:
    env = {
        "AUTOPACK_LLM_PROVIDER": "openai",
        "AUTOPACK_LLM_MODEL": "m",
        "AUTOPACK_LLM_API_KEY": KEY,
        variable: value,
    }
    error = _config_error(env)
    assert error.message.startswith(variable)
    assert repr(value) in error.message
    assert error.hint is not None
    assert variable in error.hint
    assert KEY not in f"{error.message} {error.hint} {error!r}"


def test_settings_read_the_process_environment_only_without_a_mapping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AUTOPACK_LLM_PROVIDER", "anthropic")
    monkeypatch.setenv("AUTOPACK_LLM_MODEL", "from-os")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "os-key")

    assert load_llm_settings(os.environ).model == "from-os"
    assert LlmSettings().api_key_variable == "ANTHROPIC_API_KEY"
    error = _config_error({})  # an explicit mapping: the process environment is not read
    assert "AUTOPACK_LLM_PROVIDER" in error.message


def test_settings_never_send_a_vendor_key_to_the_other_provider(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AUTOPACK_LLM_PROVIDER", "anthropic")
    monkeypatch.setenv("AUTOPACK_LLM_MODEL", "m")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "anthropic-only")

    settings = LlmSettings(provider="openai", base_url="http://localhost:8000/v1")

    assert settings.provider == "openai"
    assert settings.api_key is None


# -- the fake server itself --------------------------------------------------------------------


def test_the_fake_refuses_what_the_real_api_refuses(fake_llm: FakeLlmServer) -> None:
    fake_llm.queue(Reply.ok("scripted"))
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    with httpx.Client(transport=httpx.HTTPTransport()) as http:
        no_key = http.post(f"{fake_llm.url}/v1/messages", json=body)
        no_version = http.post(f"{fake_llm.url}/v1/messages", json=body, headers={"x-api-key": "k"})
        unknown = http.post(f"{fake_llm.url}/v1/complete", json=body)

    assert (no_key.status_code, no_key.json()["error"]["type"]) == (401, "authentication_error")
    assert no_version.status_code == 400
    assert unknown.status_code == 404
    assert fake_llm.pending == 1  # refused requests do not use up scripted replies
    assert fake_llm.answered_2xx == 0
    assert [sent.protocol for sent in fake_llm.requests] == ["anthropic", "anthropic", None]


def test_deadline_cuts_the_attempt_timeout_and_stops_retries(
    connect: Connect, fake_llm: FakeLlmServer
) -> None:
    """A phase timeout: the call gives up at its deadline, well before the settings' timeout."""
    client, sleeps = connect("anthropic", TIMEOUT_S="30")
    fake_llm.queue(Reply.slow(5.0), Reply.ok("too late"))
    request = LlmRequest(prompt="hi", max_tokens=100, deadline=time.monotonic() + 0.4)

    started = time.monotonic()
    with pytest.raises(LlmCallError) as caught:
        client.complete(request)

    assert time.monotonic() - started < 2.0
    assert caught.value.kind == "timeout_exhausted"
    assert [a.kind for a in caught.value.attempts] == ["timeout"]
    assert sleeps == []


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AUTOPACK_LLM_API_KEY", "sk-real-part\nInjected: header"),
        ("AUTOPACK_LLM_API_KEY", "sk-with\x07bell"),
        ("ANTHROPIC_API_KEY", "sk-ключ-secret"),
        ("AUTOPACK_LLM_API_KEY", "sk-two words"),
    ],
)
def test_an_unsafe_api_key_is_refused_and_never_shown(variable: str, value: str) -> None:
    env = {"AUTOPACK_LLM_PROVIDER": "anthropic", "AUTOPACK_LLM_MODEL": "m", variable: value}
    error = _config_error(env)
    assert variable in error.message
    assert "not shown" in error.message
    for part in ("sk-", "real-part", "Injected", "bell", "ключ", "secret", "words"):
        assert part not in f"{error.message} {error.hint} {error!r}"


def test_every_wrong_setting_is_named_at_once() -> None:
    error = _config_error(
        {
            "AUTOPACK_LLM_PROVIDER": "anthropic",
            "AUTOPACK_LLM_MODEL": "m",
            "AUTOPACK_LLM_API_KEY": "sk-bad\nkey",
            "AUTOPACK_LLM_TIMEOUT_S": "soon",
            "AUTOPACK_LLM_TEMPERATURE": "hot",
        }
    )
    assert error.message.startswith("3 LLM settings are wrong:")
    for variable in ("AUTOPACK_LLM_API_KEY", "AUTOPACK_LLM_TIMEOUT_S", "AUTOPACK_LLM_TEMPERATURE"):
        assert variable in error.message
        assert error.hint is not None
        assert variable in error.hint
    assert "sk-bad" not in f"{error.message} {error.hint}"


@pytest.mark.parametrize("key", ["sk-head\nsk-tail-secret", "sk-ключ-secret", "sk-\x1b[2Jsecret"])
def test_the_cli_refuses_an_unsafe_key_with_exit_2_and_never_echoes_it(
    cli: CliRunner, fake_llm: FakeLlmServer, key: str
) -> None:
    env = {**fake_llm.env("anthropic"), "AUTOPACK_LLM_API_KEY": key}
    for extra in ((), ("--json",)):
        result = cli("drain", "batch", "--db", "seed", *extra, env=env)
        assert result.exit_code == 2, result.stderr
        assert "AUTOPACK_LLM_API_KEY holds a newline" in result.stderr
        assert "secret" not in result.stdout + result.stderr
    assert fake_llm.requests == []


def test_a_missing_key_is_named_with_the_other_wrong_settings() -> None:
    # Before, the key rule ran only once every other setting passed: one problem per run.
    error = _config_error(
        {
            "AUTOPACK_LLM_PROVIDER": "anthropic",
            "AUTOPACK_LLM_MODEL": "m",
            "AUTOPACK_LLM_BASE_URL": "ftp://x",
            "AUTOPACK_LLM_MAX_RETRIES": "99",
        }
    )
    assert error.message.startswith("3 LLM settings are wrong:")
    assert "No API key for the anthropic LLM provider." in error.message
    assert "AUTOPACK_LLM_BASE_URL" in error.message
    assert "AUTOPACK_LLM_MAX_RETRIES" in error.message


def test_a_local_openai_server_still_needs_no_key() -> None:
    env = {
        "AUTOPACK_LLM_PROVIDER": "openai",
        "AUTOPACK_LLM_MODEL": "m",
        "AUTOPACK_LLM_BASE_URL": "http://localhost:11434/v1",
    }
    assert load_llm_settings(env).api_key is None
    assert (
        "No API key for the openai" in _config_error({**env, "AUTOPACK_LLM_BASE_URL": ""}).message
    )
