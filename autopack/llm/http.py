"""One JSON POST to an LLM endpoint, with timeouts, retries, back-off and a record of attempts.

The two wire protocols (`anthropic.py`, `openai.py`) subclass `HttpLlmClient` and supply only
what differs: the endpoint, the headers, the request body and how to read a reply.

Retry policy: 429, 5xx, timeouts and connection errors are retried (at most
`max_retries` times) after `retry-after-ms` / `retry-after` when the server sends one, else after
an exponential back-off with jitter. Any other status, and a 2xx whose body is malformed, is
final at once. The API key is sent per request (never stored in the httpx client's default
headers) and scrubbed from every message this module produces.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import re
import ssl
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, ClassVar, Self
from urllib.parse import urlsplit, urlunsplit

import httpx

from autopack import __version__
from autopack.llm.base import (
    AttemptKind,
    FailureKind,
    LlmAttempt,
    LlmCallError,
    LlmRequest,
    LlmResult,
    Provider,
)
from autopack.llm.settings import LlmSettings
from autopack.text import valid_unicode

logger = logging.getLogger("autopack.llm")

RETRYABLE_KINDS: frozenset[AttemptKind] = frozenset(
    {"rate_limited", "http_5xx", "timeout", "connection"}
)
_EXHAUSTED: dict[AttemptKind, FailureKind] = {
    "rate_limited": "rate_limited_exhausted",
    "http_5xx": "http_5xx_exhausted",
    "timeout": "timeout_exhausted",
    "connection": "connection_exhausted",
}
_EXCERPT_CHARS = 300
_KEY_LIKE = re.compile(r"\b(sk-|sk_)[A-Za-z0-9_\-*.]{4,}")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to wait before retrying a transient failure.

    Back-off before retry n (1-based) is `min(max_delay_s, base_delay_s * 2**(n-1))`, reduced
    by up to `jitter` (a fraction) at random so that concurrent workers do not retry in step.
    A server's `retry-after` is honoured exactly instead; if it asks for more than
    `max_retry_after_s`, the call fails at once rather than stall a worker for that long.
    """

    max_retries: int = 3
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0
    jitter: float = 0.25
    max_retry_after_s: float = 120.0

    def backoff_s(self, retry_number: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry `retry_number` (1 = the first retry) without a hint."""
        delay = min(self.max_delay_s, self.base_delay_s * 2.0 ** (retry_number - 1))
        return delay * (1.0 - self.jitter * rand())


def parse_retry_after(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """The wait a reply asks for, in seconds: `retry-after-ms`, else `retry-after` (seconds or
    an HTTP date). None when absent or unreadable; a date in the past gives 0."""
    lowered = {name.lower(): value for name, value in headers.items()}
    millis = lowered.get("retry-after-ms")
    if millis is not None:
        seconds = _non_negative_float(millis)
        if seconds is not None:
            return seconds / 1000.0
    value = lowered.get("retry-after")
    if value is None:
        return None
    seconds = _non_negative_float(value)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now if now is not None else datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


def _non_negative_float(text: str) -> float | None:
    try:
        number = float(text.strip())
    except ValueError:
        return None
    if number != number or number < 0 or number == float("inf"):  # NaN, negative, inf
        return None
    return number


def safe_url(url: str) -> str:
    """The URL without user info, query or fragment: what may be shown in messages."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def error_text(body: object) -> str:
    """The human part of an error body in the usual shapes (Anthropic, OpenAI, Ollama, FastAPI)."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            message = error.get("message")
            kind = error.get("type")
            if isinstance(message, str) and isinstance(kind, str) and kind:
                return f"{kind}: {message}"
            if isinstance(message, str):
                return message
        if isinstance(error, str):
            return error
        detail = body.get("detail") or body.get("message")
        if isinstance(detail, str):
            return detail
    return ""


class MalformedReply(Exception):
    """A 2xx reply whose body is not in the provider's wire format."""


@dataclass(frozen=True, slots=True)
class ReplyBody:
    """What a protocol reads out of a 2xx body (the text and usage, before it is an LlmResult)."""

    text: str
    input_tokens: int | None
    output_tokens: int | None
    stop_reason: str | None
    truncated: bool
    response_model: str | None
    response_id: str | None


def token_count(usage: Mapping[str, object], name: str) -> int | None:
    """A usage figure: absent or null → None; anything but a non-negative int → malformed."""
    value = usage.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MalformedReply(f"usage.{name} is not a non-negative integer")
    return value


def optional_str(body: Mapping[str, object], name: str) -> str | None:
    """A string field that may be absent or null; any other type → malformed."""
    value = body.get(name)
    if value is None or isinstance(value, str):
        return value
    raise MalformedReply(f"{name} is not a string")


class HttpLlmClient(ABC):
    """The retry loop shared by both wire protocols. Thread-safe: one httpx pool per client."""

    provider: ClassVar[Provider]

    def __init__(
        self,
        settings: LlmSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        if settings.provider != self.provider:
            raise ValueError(
                f"{type(self).__name__} speaks {self.provider}, settings say {settings.provider}"
            )
        self.settings = settings
        self.retry_policy = retry_policy or RetryPolicy(max_retries=settings.max_retries)
        self.endpoint = self._endpoint(settings.base_url)
        self._sleep = sleep
        self._secret = settings.api_key.get_secret_value() if settings.api_key else None
        self._closed = threading.Event()
        self._http = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(settings.timeout_s, connect=min(settings.timeout_s, 10.0)),
            follow_redirects=False,  # a redirect must not carry the key to another host
            verify=_tls_context(),
            headers={"user-agent": f"autopack/{__version__}"},
        )

    # -- what each wire protocol supplies ------------------------------------------------------

    @abstractmethod
    def _endpoint(self, base_url: str) -> str:
        """The full URL to POST to."""

    @abstractmethod
    def _headers(self, api_key: str | None) -> dict[str, str]:
        """Per-request headers, including the key's header when there is a key."""

    @abstractmethod
    def _payload(self, request: LlmRequest, model: str) -> dict[str, Any]:
        """The JSON request body."""

    @abstractmethod
    def _parse(self, body: object) -> ReplyBody:
        """Read a 2xx body; raise `MalformedReply` if it is not in the wire format."""

    # -- the call ------------------------------------------------------------------------------

    def complete(self, request: LlmRequest) -> LlmResult:
        """Send `request`, retrying transient failures; raise `LlmCallError` if it fails."""
        if self._closed.is_set():
            raise RuntimeError(f"{type(self).__name__} is closed")
        model = request.model or self.settings.model
        payload = self._payload(request, model)
        headers = self._headers(self._secret)
        attempts: list[LlmAttempt] = []
        waited = 0.0
        started = time.perf_counter()
        total = self.retry_policy.max_retries + 1
        for number in range(1, total + 1):
            attempt_started = time.perf_counter()
            response: httpx.Response | None = None
            kind: AttemptKind
            timeout_s = self._attempt_timeout(request)
            try:
                response = self._http.post(
                    self.endpoint, json=payload, headers=headers, timeout=timeout_s
                )
            except httpx.TimeoutException as exc:
                kind = "timeout"
                detail = f"{type(exc).__name__} after {timeout_s:g} s"
            except httpx.TransportError as exc:
                kind = "connection"
                detail = f"{type(exc).__name__}: {self._scrub(str(exc))}"
            else:
                kind = _status_kind(response.status_code)
                detail = "" if kind == "ok" else self._error_detail(response)
            latency = time.perf_counter() - attempt_started
            status = response.status_code if response is not None else None
            if response is not None and kind == "ok":
                return self._answered(
                    response, request, model, number, latency, waited, started, attempts
                )

            attempts.append(LlmAttempt(number, kind, status, latency, waited, detail))
            if kind not in RETRYABLE_KINDS:
                raise self._failure(
                    "http_4xx" if kind == "http_4xx" else "http_unexpected", attempts, model
                )
            if number == total:
                raise self._failure(_EXHAUSTED[kind], attempts, model)

            hinted = parse_retry_after(response.headers) if response is not None else None
            if hinted is not None and hinted > self.retry_policy.max_retry_after_s:
                raise self._failure(_EXHAUSTED[kind], attempts, model, asked_to_wait=hinted)
            waited = hinted if hinted is not None else self.retry_policy.backoff_s(number)
            if request.deadline is not None and time.monotonic() + waited >= request.deadline:
                # The phase's time is up before the retry could start: give up now.
                raise self._failure(_EXHAUSTED[kind], attempts, model)
            logger.warning(
                "%s call attempt %d/%d failed (%s); retrying in %.2f s",
                self.provider,
                number,
                total,
                detail,
                waited,
            )
            self._sleep(waited)
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def _attempt_timeout(self, request: LlmRequest) -> float:
        """The settings' timeout, cut to what is left before the request's deadline."""
        if request.deadline is None:
            return self.settings.timeout_s
        return max(0.001, min(self.settings.timeout_s, request.deadline - time.monotonic()))

    def _answered(
        self,
        response: httpx.Response,
        request: LlmRequest,
        model: str,
        number: int,
        latency: float,
        waited: float,
        started: float,
        attempts: list[LlmAttempt],
    ) -> LlmResult:
        status = response.status_code
        try:
            body: object = json.loads(response.content)
            parsed = self._parse(body)
        except (ValueError, MalformedReply, RecursionError) as exc:  # JSONDecodeError: ValueError
            reason = (
                str(exc)
                if isinstance(exc, MalformedReply)
                else "the body is JSON nested too deeply to read"
                if isinstance(exc, RecursionError)
                else "the body is not JSON"
            )
            excerpt = self._excerpt(response.text)
            attempts.append(
                LlmAttempt(number, "malformed_body", status, latency, waited, self._scrub(reason))
            )
            raise LlmCallError(
                f"{self.provider} reply from {safe_url(self.endpoint)} (HTTP {status}) is "
                f"malformed: {self._scrub(reason)}",
                kind="malformed_body",
                attempts=tuple(attempts),
                provider=self.provider,
                model=model,
                status=status,
                hint=(
                    f"the server did not answer in the {self.provider} wire format; check "
                    "AUTOPACK_LLM_PROVIDER and AUTOPACK_LLM_BASE_URL"
                ),
                body_excerpt=excerpt,
            ) from None
        # Metadata goes into telemetry rows and transcripts: a lone surrogate in it must not
        # make those writes fail. The text itself stays as sent; parse_reply judges it.
        parsed = replace(
            parsed,
            stop_reason=_valid_or_none(parsed.stop_reason),
            response_model=_valid_or_none(parsed.response_model),
            response_id=_valid_or_none(parsed.response_id),
        )
        attempts.append(LlmAttempt(number, "ok", status, latency, waited))
        logger.debug(
            "%s call answered: HTTP %d in %.2f s, %s output tokens, stop_reason=%s",
            self.provider,
            status,
            latency,
            parsed.output_tokens,
            parsed.stop_reason,
        )
        return LlmResult(
            text=parsed.text,
            input_tokens=parsed.input_tokens,
            output_tokens=parsed.output_tokens,
            stop_reason=parsed.stop_reason,
            truncated=parsed.truncated,
            latency_s=latency,
            elapsed_s=time.perf_counter() - started,
            http_status=status,
            attempts=tuple(attempts),
            provider=self.provider,
            model=model,
            max_tokens=request.max_tokens,
            response_model=parsed.response_model,
            response_id=parsed.response_id,
        )

    # -- failures ------------------------------------------------------------------------------

    def _failure(
        self,
        kind: FailureKind,
        attempts: list[LlmAttempt],
        model: str,
        *,
        asked_to_wait: float | None = None,
    ) -> LlmCallError:
        last = attempts[-1]
        where = safe_url(self.endpoint)
        if kind in ("http_4xx", "http_unexpected"):
            message = f"{self.provider} refused the call: HTTP {last.status} from {where}"
        elif asked_to_wait is not None:
            limit = self.retry_policy.max_retry_after_s
            message = (
                f"{self.provider} call gave up after {len(attempts)} attempt(s): the server asked "
                f"to wait {asked_to_wait:.0f} s, more than the {limit:g} s this client waits"
            )
        else:
            message = f"{self.provider} call failed after {len(attempts)} attempt(s) to {where}"
        if last.detail:
            message = f"{message}: {last.detail}"
        return LlmCallError(
            self._scrub(message),
            kind=kind,
            attempts=tuple(attempts),
            provider=self.provider,
            model=model,
            status=last.status,
            hint=self._hint(kind, last.status, model),
        )

    def _hint(self, kind: FailureKind, status: int | None, model: str) -> str:
        settings = self.settings
        if status in (401, 403):
            variable = settings.api_key_variable or "AUTOPACK_LLM_API_KEY"
            return f"check the API key in {variable}: the {self.provider} server rejected it"
        if status == 404:
            tail = (
                " (OpenAI-compatible servers usually end in /v1)"
                if self.provider == "openai"
                else ""
            )
            return (
                f"check AUTOPACK_LLM_BASE_URL ({safe_url(settings.base_url)}){tail} and "
                f"AUTOPACK_LLM_MODEL ({model})"
            )
        hints: dict[FailureKind, str] = {
            "http_4xx": "the server refused the request as sent; check AUTOPACK_LLM_MODEL and the "
            "max_tokens the model allows",
            "http_unexpected": "check AUTOPACK_LLM_BASE_URL: the server answered with a status "
            "an LLM API does not use",
            "rate_limited_exhausted": "the provider kept rate-limiting: drain with fewer workers "
            "or raise AUTOPACK_LLM_MAX_RETRIES",
            "http_5xx_exhausted": "the provider kept failing; try again later",
            "timeout_exhausted": f"no reply within AUTOPACK_LLM_TIMEOUT_S={settings.timeout_s:g} "
            "s; raise it or lower max_tokens",
            "connection_exhausted": f"is the server at {safe_url(settings.base_url)} running "
            "and reachable?",
            "malformed_body": "check AUTOPACK_LLM_PROVIDER and AUTOPACK_LLM_BASE_URL",
        }
        return hints[kind]

    def _error_detail(self, response: httpx.Response) -> str:
        try:
            text = error_text(json.loads(response.content))
        except (ValueError, RecursionError):
            text = ""
        if not text:
            text = response.text or response.reason_phrase
        return self._scrub(f"HTTP {response.status_code} {self._excerpt(text)}".strip())

    def _excerpt(self, text: str) -> str:
        flat = " ".join(text.split())
        if len(flat) > _EXCERPT_CHARS:
            flat = flat[: _EXCERPT_CHARS - 1] + "…"
        return self._scrub(flat)

    def _scrub(self, text: str) -> str:
        """Remove the API key, and anything shaped like a key, from text meant for people."""
        text = valid_unicode(text)
        if self._secret:
            text = text.replace(self._secret, "***")
        return _KEY_LIKE.sub(r"\1***", text)

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pool. Further calls raise."""
        self._closed.set()
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={self.settings.model!r}, "
            f"endpoint={safe_url(self.endpoint)!r}, max_retries={self.retry_policy.max_retries})"
        )


@functools.cache
def _valid_or_none(text: str | None) -> str | None:
    return None if text is None else valid_unicode(text)


def _tls_context() -> ssl.SSLContext:
    """httpx's default verifying TLS context, built once per process instead of per client.

    Building one loads the CA bundle (tens of milliseconds); an SSLContext is safe to share
    between clients and threads.
    """
    return httpx.create_ssl_context()


def _status_kind(status: int) -> AttemptKind:
    if 200 <= status < 300:
        return "ok"
    if status == 429:
        return "rate_limited"
    if 500 <= status < 600:
        return "http_5xx"
    if 400 <= status < 500:
        return "http_4xx"
    return "http_unexpected"
