"""The simulated model: a local HTTP server that speaks the Anthropic Messages API.

`POST /v1/messages` with the real API's headers and body; the reply has the real shape
(`content` text blocks, `usage.input_tokens` / `usage.output_tokens`, `stop_reason`
`end_turn` or `max_tokens`), so autopack's own client, parser, workspace, verification,
telemetry and escalation all run unchanged against it. Like the real API, a request without
`x-api-key` is a 401 and one without `anthropic-version`, `model`, `max_tokens` or
`messages` a 400.

What it writes is valid files for the phase's deliverables (autopack.demo.replies); how many
output tokens it says it spent is drawn from the original's real figures
(autopack.demo.token_draws, original_spec.md §12.3). It listens on 127.0.0.1 only, on an
ephemeral port, in a daemon thread:

    with SimulatedModel(seed=13) as model:
        environ = model.llm_environ()      # AUTOPACK_LLM_* for a drain against it
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, Self

from autopack.demo.replies import PromptFacts, read_prompt, reply_text
from autopack.demo.token_draws import TRUNCATION_PROBABILITY, draw_output_tokens, rng_for
from autopack.estimator import estimate, load_builtin_set, normalize_category

SIMULATED_MODEL_NAME: Final = "simulated-claude"
"""The model name on every row the simulated model produces; `simulated-` marks it as such."""
SIMULATED_API_KEY: Final = "simulated-key-not-secret"
_CHARS_PER_TOKEN: Final = 4


@dataclass(frozen=True)
class AnsweredCall:
    """What the server answered, for the demo's report and the tests."""

    phase_id: str
    max_tokens: int
    input_tokens: int
    output_tokens: int
    stop_reason: str


class SimulatedModel:
    """A running simulated Anthropic server (start/stop it with `with`)."""

    def __init__(self, *, seed: int = 13, truncation_probability: float | None = None) -> None:
        self.seed = seed
        self.truncation_probability = (
            TRUNCATION_PROBABILITY if truncation_probability is None else truncation_probability
        )
        self.calls: list[AnsweredCall] = []
        self._attempts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._coefficients = load_builtin_set("default")
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the simulated model is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def llm_environ(self) -> dict[str, str]:
        """The AUTOPACK_LLM_* settings of a drain against this server."""
        return {
            "AUTOPACK_LLM_PROVIDER": "anthropic",
            "AUTOPACK_LLM_MODEL": SIMULATED_MODEL_NAME,
            "AUTOPACK_LLM_BASE_URL": self.base_url,
            "AUTOPACK_LLM_API_KEY": SIMULATED_API_KEY,
            "AUTOPACK_LLM_TIMEOUT_S": "30",
            "AUTOPACK_LLM_MAX_RETRIES": "1",
        }

    def start(self) -> Self:
        handler = _handler_for(self)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="simulated-model", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        """The Messages API reply to one well-formed request body."""
        user = _last_user_text(body["messages"])
        system = body.get("system") if isinstance(body.get("system"), str) else ""
        facts = read_prompt(user)
        max_tokens = int(body["max_tokens"])
        phase_key = f"{facts.run_id}/{facts.phase_id}"
        with self._lock:
            self._attempts[phase_key] += 1
            attempt = self._attempts[phase_key]
        draw = draw_output_tokens(
            rng_for(self.seed, phase_key, attempt),
            category=normalize_category(facts.category) or facts.category,
            complexity=facts.complexity,
            predicted=self._predicted(facts),
            max_tokens=max_tokens,
            first_attempt=attempt == 1,
            truncation_probability=self.truncation_probability,
        )
        input_tokens = max(1, (len(user) + len(system or "")) // _CHARS_PER_TOKEN)
        stop_reason = "max_tokens" if draw.truncated else "end_turn"
        with self._lock:
            self.calls.append(
                AnsweredCall(
                    facts.phase_id, max_tokens, input_tokens, draw.output_tokens, stop_reason
                )
            )
        return {
            "id": f"msg_sim_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": str(body["model"]),
            "content": [{"type": "text", "text": reply_text(facts, cut_off=draw.truncated)}],
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": draw.output_tokens},
        }

    def _predicted(self, facts: PromptFacts) -> int:
        """What the default estimator predicts for the phase (the ratios are relative to it)."""
        return estimate(
            list(facts.deliverables),
            facts.category,
            facts.complexity,
            coefficients=self._coefficients,
            workspace=None,
            task_description=facts.goal,
        ).estimated_tokens


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "".join(
                    str(block.get("text", ""))
                    for block in content
                    if isinstance(block, dict) and block.get("type") == "text"
                )
    return ""


def _request_problem(headers: Any, body: object) -> tuple[int, str, str] | None:
    """(status, error type, message) for a request the real API would refuse, else None."""
    if not headers.get("x-api-key"):
        return 401, "authentication_error", "x-api-key header is required"
    if not headers.get("anthropic-version"):
        return 400, "invalid_request_error", "anthropic-version header is required"
    if not isinstance(body, dict):
        return 400, "invalid_request_error", "the body must be a JSON object"
    for field in ("model", "max_tokens", "messages"):
        if field not in body:
            return 400, "invalid_request_error", f"{field}: Field required"
    max_tokens = body["max_tokens"]
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        return 400, "invalid_request_error", "max_tokens: must be a positive integer"
    if not isinstance(body["messages"], list) or not body["messages"]:
        return 400, "invalid_request_error", "messages: at least one message is required"
    return None


def _handler_for(model: SimulatedModel) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            if not self.path.rstrip("/").endswith("/v1/messages"):
                self._send(404, _error("not_found_error", f"no route {self.path}"))
                return
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length)
            try:
                body: object = json.loads(raw)
            except ValueError:
                body = None
            problem = _request_problem(self.headers, body)
            if problem is not None:
                status, kind, message = problem
                self._send(status, _error(kind, message))
                return
            assert isinstance(body, dict)
            self._send(200, model.answer(body))

        def _send(self, status: int, document: dict[str, Any]) -> None:
            data = json.dumps(document).encode("utf-8")
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.send_header("request-id", f"req_sim_{uuid.uuid4().hex[:16]}")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            """Silent: the demo shows its own progress."""

    return Handler


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


__all__ = ["SIMULATED_API_KEY", "SIMULATED_MODEL_NAME", "AnsweredCall", "SimulatedModel"]
