"""A fake LLM server for tests: real HTTP on 127.0.0.1, both wire protocols, scripted replies.

    def test_something(fake_llm):
        fake_llm.queue(Reply.rate_limited(retry_after="2"), Reply.ok("hello", output_tokens=42))
        settings = load_llm_settings(fake_llm.env("anthropic"))
        ...
        assert fake_llm.answered_2xx == 1
        assert fake_llm.requests[0].headers["x-api-key"] == "test-key"

Paths: `POST …/v1/messages` is answered in the Anthropic Messages format and
`POST …/chat/completions` in the OpenAI format, under any base path (`/proxy/v1/messages`
works too). Replies come from a FIFO queue shared by both protocols; when it is empty the
`default_reply` is used, so bulk tests and benchmarks can make any number of calls.
`latency_s` adds a fixed delay to every reply. Like the real APIs, an Anthropic request
without `x-api-key`, `anthropic-version`, `model`, `max_tokens` or `messages` gets a 400/401
(and does not consume a scripted reply); set `expected_api_key` to check the key itself.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import select
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import pytest

Protocol = Literal["anthropic", "openai"]

_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass(frozen=True)
class Reply:
    """One scripted reply. Build it with the class methods; the fields are the fine print.

    `raw_body` (if set) is sent verbatim instead of a rendered body; `no_content` sends an
    empty content list (Anthropic) / null content (OpenAI); `include_usage=False` omits usage;
    `echo_prompt` answers with the last user message; `delay_s` waits before answering;
    `reset` answers nothing and resets the connection.
    """

    text: str = "ok"
    input_tokens: int = 12
    output_tokens: int = 7
    stop_reason: str | None = None
    truncated: bool = False
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    raw_body: str | None = None
    error_message: str = ""
    delay_s: float = 0.0
    no_content: bool = False
    include_usage: bool = True
    echo_prompt: bool = False
    reset: bool = False

    @classmethod
    def ok(
        cls,
        text: str = "ok",
        *,
        input_tokens: int = 12,
        output_tokens: int = 7,
        stop_reason: str | None = None,
        delay_s: float = 0.0,
    ) -> Reply:
        """A normal answer (`end_turn` / `stop` unless `stop_reason` is given)."""
        return cls(
            text=text,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            stop_reason=stop_reason,
            delay_s=delay_s,
        )

    @classmethod
    def cut_off(cls, text: str = "partial", *, output_tokens: int = 16384) -> Reply:
        """An answer that hit the output ceiling (`max_tokens` / `length`)."""
        return cls(text=text, output_tokens=output_tokens, truncated=True)

    @classmethod
    def empty(cls, *, output_tokens: int = 1) -> Reply:
        """A 200 with no text at all."""
        return cls(text="", output_tokens=output_tokens, no_content=True)

    @classmethod
    def malformed(cls, body: str = '{"id": "broken", "content": [') -> Reply:
        """A 200 whose body is not valid JSON (or, with `body`, JSON in the wrong shape)."""
        return cls.raw(body)

    @classmethod
    def raw(
        cls, body: str, *, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> Reply:
        """Exactly this body and status, for replies the other constructors do not cover."""
        return cls(raw_body=body, status=status, headers=dict(headers or {}))

    @classmethod
    def rate_limited(cls, retry_after: str | None = "1", *, status: int = 429) -> Reply:
        """A 429 with a `retry-after` header (seconds or an HTTP date; None for no header)."""
        headers = {"retry-after": retry_after} if retry_after is not None else {}
        return cls(status=status, headers=headers, error_message="rate limit exceeded")

    @classmethod
    def server_error(cls, status: int = 500, message: str = "internal server error") -> Reply:
        """A 5xx with the provider's error body."""
        return cls(status=status, error_message=message)

    @classmethod
    def client_error(cls, status: int = 400, message: str = "invalid request") -> Reply:
        """A 4xx with the provider's error body."""
        return cls(status=status, error_message=message)

    @classmethod
    def slow(cls, delay_s: float, text: str = "late") -> Reply:
        """A normal answer sent only after `delay_s` (past the client's timeout, usually)."""
        return cls(text=text, delay_s=delay_s)

    @classmethod
    def connection_reset(cls) -> Reply:
        """No reply at all: the server resets the connection (TCP RST) after the request."""
        return cls(reset=True)

    @classmethod
    def echo(cls, *, output_tokens: int = 7, delay_s: float = 0.0) -> Reply:
        """An answer whose text is the request's last user message."""
        return cls(echo_prompt=True, output_tokens=output_tokens, delay_s=delay_s)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received: lower-cased header names, the JSON body (None if not JSON)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes
    protocol: Protocol | None


def http_date(seconds_from_now: float) -> str:
    """An HTTP date (as in `retry-after`) `seconds_from_now` seconds ahead."""
    return formatdate(time.time() + seconds_from_now, usegmt=True)


class FakeLlmServer:
    """The fake server. Use the `fake_llm` fixture, or `with FakeLlmServer() as server:`."""

    def __init__(self, *, default_reply: Reply | None = None, latency_s: float = 0.0) -> None:
        self.default_reply = default_reply or Reply.ok()
        self.latency_s = latency_s
        self.expected_api_key: str | None = None
        self._lock = threading.Lock()
        self._queue: deque[Reply] = deque()
        self._requests: list[RecordedRequest] = []
        self._answered_2xx = 0
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> FakeLlmServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes replies that are sleeping
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:  # unblock handler threads waiting on idle keep-alive connections
            open_connections = list(self._connections)
        for connection in open_connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeLlmServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- addresses -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The server root, e.g. http://127.0.0.1:40123."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def anthropic_url(self) -> str:
        """A base URL for the anthropic provider (the client appends /v1/messages)."""
        return self.url

    @property
    def openai_url(self) -> str:
        """A base URL for the openai provider (the client appends /chat/completions)."""
        return f"{self.url}/v1"

    def base_url(self, provider: Protocol) -> str:
        return self.anthropic_url if provider == "anthropic" else self.openai_url

    def env(
        self,
        provider: Protocol,
        *,
        model: str = "fake-model",
        api_key: str | None = "test-key",
        **extra: str,
    ) -> dict[str, str]:
        """AUTOPACK_LLM_* variables pointing at this server, for `load_llm_settings(env)`.

        `extra` adds variables by suffix: `env("openai", TIMEOUT_S="0.3")`.
        """
        env = {
            "AUTOPACK_LLM_PROVIDER": provider,
            "AUTOPACK_LLM_MODEL": model,
            "AUTOPACK_LLM_BASE_URL": self.base_url(provider),
        }
        if api_key is not None:
            env["AUTOPACK_LLM_API_KEY"] = api_key
        env.update({f"AUTOPACK_LLM_{name.upper()}": value for name, value in extra.items()})
        return env

    # -- script and record ---------------------------------------------------------------------

    def queue(self, *replies: Reply) -> None:
        """Append replies to the script, answered in order (then `default_reply`)."""
        with self._lock:
            self._queue.extend(replies)

    @property
    def pending(self) -> int:
        """Scripted replies not used yet."""
        with self._lock:
            return len(self._queue)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def answered_2xx(self) -> int:
        """How many 2xx replies were delivered (a reply whose client had gone is not counted)."""
        with self._lock:
            return self._answered_2xx

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _next_reply(self) -> Reply:
        with self._lock:
            return self._queue.popleft() if self._queue else self.default_reply

    def _count_2xx(self, change: int) -> None:
        with self._lock:
            self._answered_2xx += change

    def _opened(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.add(connection)

    def _closed(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.discard(connection)

    def _next_id(self) -> int:
        with self._lock:
            return next(self._ids)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    fake: FakeLlmServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client killed mid-request (the crash trials do that) is not a server error."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    wbufsize = -1  # headers and body leave in one write (flushed in _send)
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.fake._opened(self.connection)

    def finish(self) -> None:
        self.server.fake._closed(self.connection)
        with contextlib.suppress(OSError):  # the client may have reset the connection
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request log on stderr."""

    def do_GET(self) -> None:
        self._send_json(404, {"error": {"type": "not_found_error", "message": "not found"}})

    def do_POST(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        protocol: Protocol | None = None
        if path.endswith("/v1/messages"):
            protocol = "anthropic"
        elif path.endswith("/chat/completions"):
            protocol = "openai"
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {name.lower(): value for name, value in self.headers.items()}
        fake._record(RecordedRequest("POST", path, headers, body, raw, protocol))

        if protocol is None:
            self._send_json(404, {"error": {"type": "not_found_error", "message": "no route"}})
            return
        refusal = _check_request(protocol, headers, body, fake.expected_api_key)
        if refusal is not None:
            status, message = refusal
            self._send(status, _error_body(protocol, status, message), {})
            return

        reply = fake._next_reply()
        if reply.reset:
            # Linger 0: closing sends RST instead of FIN, as a crashed proxy would.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        delay = fake.latency_s + reply.delay_s
        if delay > 0 and fake._stopping.wait(delay):
            self.close_connection = True
            return
        if delay > 0 and self._client_gone():
            self.close_connection = True
            return
        status, payload = _render(protocol, reply, body, fake._next_id())
        success = 200 <= status < 300
        if success:  # counted before the client can see the reply, so tests never race it
            fake._count_2xx(+1)
        if not self._send(status, payload, reply.headers) and success:
            fake._count_2xx(-1)

    # -- helpers -------------------------------------------------------------------------------

    def _client_gone(self) -> bool:
        """True when the client closed the connection while we were 'thinking'."""
        sock = self.connection
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _send_json(self, status: int, body: object) -> bool:
        return self._send(status, json.dumps(body).encode(), {})

    def _send(self, status: int, payload: bytes, headers: Mapping[str, str]) -> bool:
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
        except OSError:  # the client went away (timed out); nothing was delivered
            self.close_connection = True
            return False
        return True


def _check_request(
    protocol: Protocol, headers: Mapping[str, str], body: Any, expected_key: str | None
) -> tuple[int, str] | None:
    """What the real API would refuse: (status, message), or None if the request is fine."""
    if protocol == "anthropic":
        key = headers.get("x-api-key")
        if not key:
            return 401, "x-api-key header is required"
        if expected_key is not None and key != expected_key:
            return 401, "invalid x-api-key"
        if not headers.get("anthropic-version"):
            return 400, "anthropic-version header is required"
        if not isinstance(body, dict):
            return 400, "the body must be a JSON object"
        if not isinstance(body.get("max_tokens"), int):
            return 400, "max_tokens: field required"
    else:
        if expected_key is not None and headers.get("authorization") != f"Bearer {expected_key}":
            return 401, "Incorrect API key provided"
        if not isinstance(body, dict):
            return 400, "the body must be a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return 400, "model: field required"
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return 400, "messages: field required"
    return None


def _error_body(protocol: Protocol, status: int, message: str) -> bytes:
    if protocol == "anthropic":
        kind = _ANTHROPIC_ERROR_TYPES.get(status, "api_error")
        return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()
    kind = "invalid_request_error" if status < 500 else "server_error"
    error = {"message": message, "type": kind, "param": None, "code": None}
    return json.dumps({"error": error}).encode()


def _last_user_text(body: Any) -> str:
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


def _render(protocol: Protocol, reply: Reply, body: Any, number: int) -> tuple[int, bytes]:
    if reply.raw_body is not None:
        return reply.status, reply.raw_body.encode()
    if not 200 <= reply.status < 300:
        error = reply.error_message or f"HTTP {reply.status}"
        return reply.status, _error_body(protocol, reply.status, error)
    text = _last_user_text(body) if reply.echo_prompt else reply.text
    model = body.get("model", "")
    if protocol == "anthropic":
        stop = reply.stop_reason or ("max_tokens" if reply.truncated else "end_turn")
        message: dict[str, Any] = {
            "id": f"msg_fake_{number:06d}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [] if reply.no_content else [{"type": "text", "text": text}],
            "stop_reason": stop,
            "stop_sequence": None,
        }
        if reply.include_usage:
            message["usage"] = {
                "input_tokens": reply.input_tokens,
                "output_tokens": reply.output_tokens,
            }
        return reply.status, json.dumps(message).encode()
    finish = reply.stop_reason or ("length" if reply.truncated else "stop")
    completion: dict[str, Any] = {
        "id": f"chatcmpl-fake-{number:06d}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None if reply.no_content else text},
                "finish_reason": finish,
            }
        ],
    }
    if reply.include_usage:
        completion["usage"] = {
            "prompt_tokens": reply.input_tokens,
            "completion_tokens": reply.output_tokens,
            "total_tokens": reply.input_tokens + reply.output_tokens,
        }
    return reply.status, json.dumps(completion).encode()


@pytest.fixture
def fake_llm(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLlmServer]:
    """A started `FakeLlmServer` on 127.0.0.1 (random port), stopped after the test.

    127.0.0.1 is added to NO_PROXY for the test, so an HTTP(S)_PROXY in the environment does
    not send the product's requests for the fake server through a proxy.
    """
    for name in ("NO_PROXY", "no_proxy"):
        current = [host for host in os.environ.get(name, "").split(",") if host.strip()]
        monkeypatch.setenv(name, ",".join([*current, "127.0.0.1"]))
    with FakeLlmServer() as server:
        yield server
