"""The builder-LLM contract: request, result, attempts, the call error, and the client protocol.

Everything here is plain data plus one protocol, so the drain steps and the telemetry recorder
depend on this module only, never on a wire protocol. `autopack.llm.clients.make_client` picks
the protocol from the settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from autopack.errors import EXIT_FOUND_PROBLEMS, AutopackError

Provider = Literal["anthropic", "openai"]
"""The two wire protocols. `openai` covers every OpenAI-compatible server (Ollama, vLLM, …)."""

Role = Literal["user", "assistant"]

AttemptKind = Literal[
    "ok",
    "rate_limited",
    "http_5xx",
    "http_4xx",
    "http_unexpected",
    "timeout",
    "connection",
    "malformed_body",
]
"""What one HTTP attempt ended with. `ok` is a 2xx reply whose body parsed."""

FailureKind = Literal[
    "http_4xx",
    "http_unexpected",
    "http_5xx_exhausted",
    "rate_limited_exhausted",
    "timeout_exhausted",
    "connection_exhausted",
    "malformed_body",
]
"""Why a call failed as a whole. Only `malformed_body` means the server answered with a 2xx."""


@dataclass(frozen=True, slots=True)
class LlmMessage:
    """One turn of a conversation (the system prompt is separate: `LlmRequest.system`)."""

    role: Role
    content: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LlmRequest:
    """One builder call.

    Give `prompt` for a single user turn, `messages` for a conversation, or both (the prompt is
    then appended as the last user turn). `temperature` and `model` default to the settings.
    `max_tokens` is the output ceiling sent to the provider, as is (the caller caps it).
    """

    max_tokens: int
    prompt: str = ""
    system: str = ""
    messages: tuple[LlmMessage, ...] = ()
    temperature: float | None = None
    model: str | None = None
    deadline: float | None = None
    """A `time.monotonic()` instant the whole call (retries included) must not outlive: each
    attempt's timeout is cut to the time left, and no retry starts after it (phase timeouts)."""

    def __post_init__(self) -> None:
        if isinstance(self.max_tokens, bool) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive integer, not {self.max_tokens!r}")
        if not self.prompt and not self.messages:
            raise ValueError("an LlmRequest needs a prompt or at least one message")

    def conversation(self) -> tuple[LlmMessage, ...]:
        """The turns to send, in order: `messages`, then `prompt` as a user turn if given."""
        if self.prompt:
            return (*self.messages, LlmMessage("user", self.prompt))
        return self.messages


@dataclass(frozen=True, slots=True)
class LlmAttempt:
    """One HTTP attempt of a call. Every retry is one of these, so nothing is hidden.

    `status` is the HTTP status when a reply arrived (None on timeouts and connection errors);
    `waited_s` is the back-off slept *before* this attempt (0 for the first); `detail` is a
    short, secret-free description (the provider's error message, the exception type, …).
    """

    number: int
    kind: AttemptKind
    status: int | None
    latency_s: float
    waited_s: float
    detail: str = ""


@dataclass(frozen=True, slots=True)
class LlmResult:
    """An answered call: a 2xx reply whose body parsed in the provider's wire format.

    `input_tokens` / `output_tokens` are the provider's usage figures (None when the server
    reported none, which some local servers do). `stop_reason` is the raw provider value
    (`end_turn`, `max_tokens`, `stop`, `length`, …); `truncated` says whether it means the output
    hit a ceiling, so the output tokens are only a lower bound. `latency_s` is the answered
    attempt's HTTP time; `elapsed_s` covers the whole call, retries and back-off included.
    `model` is the model asked for; `response_model` the one the server says it used.
    """

    text: str
    input_tokens: int | None
    output_tokens: int | None
    stop_reason: str | None
    truncated: bool
    latency_s: float
    elapsed_s: float
    http_status: int
    attempts: tuple[LlmAttempt, ...]
    provider: Provider
    model: str
    max_tokens: int
    response_model: str | None = None
    response_id: str | None = None

    @property
    def total_tokens(self) -> int | None:
        """Input plus output tokens, when the server reported both."""
        if self.input_tokens is None or self.output_tokens is None:
            return None
        return self.input_tokens + self.output_tokens

    @property
    def retries(self) -> int:
        """How many attempts failed before the answered one."""
        return len(self.attempts) - 1


class LlmCallError(AutopackError):
    """A builder call that produced no usable reply, with every attempt it made.

    `kind` says why (see `FailureKind`). `answered` is True only for `malformed_body`: the
    server replied 2xx but the body was not in the expected format, as opposed to a transport
    or HTTP failure. The message, hint and attempt details never contain the API key.
    """

    exit_code = EXIT_FOUND_PROBLEMS

    def __init__(
        self,
        message: str,
        *,
        kind: FailureKind,
        attempts: tuple[LlmAttempt, ...],
        provider: Provider,
        model: str,
        status: int | None = None,
        hint: str | None = None,
        body_excerpt: str = "",
    ) -> None:
        super().__init__(message, hint)
        self.kind: FailureKind = kind
        self.attempts = attempts
        self.provider: Provider = provider
        self.model = model
        self.status = status
        self.body_excerpt = body_excerpt

    @property
    def answered(self) -> bool:
        """True when the server answered with a 2xx reply (whose body was malformed)."""
        return self.kind == "malformed_body"

    def __repr__(self) -> str:
        return (
            f"LlmCallError(kind={self.kind!r}, provider={self.provider!r}, model={self.model!r}, "
            f"status={self.status!r}, attempts={len(self.attempts)}, message={self.message!r})"
        )


@runtime_checkable
class LlmClient(Protocol):
    """What the executor needs from a builder LLM. Implementations must be thread-safe."""

    def complete(self, request: LlmRequest) -> LlmResult:
        """Send one request (retrying transient failures); raise `LlmCallError` if it fails."""
        ...
