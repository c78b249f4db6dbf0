"""What the call path is given and what it fills: the endpoint (and its ``openai`` client), one
request, its reply, and the two services a call leans on (the rate limiter's permits and the
store of what each model accepts)."""

from __future__ import annotations

import socket
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from chainray.call.adaptations import Adaptation
from chainray.call.completion import Completion
from chainray.call.departure import attach_trace
from chainray.call.streaming import StreamedReply
from chainray.call.structured import response_format
from chainray.errors import EndpointError, InputError
from chainray.guards.cache import CachedReply
from chainray.guards.call_guards import CallGuards
from chainray.limit.permit_scope import Limiter
from chainray.results import Attempt

if TYPE_CHECKING:  # openai costs ~0.5 s to import: only where a client is made
    import openai

__all__ = ["Endpoint", "LLMRequest", "LLMReply", "AdaptationStore", "NoStore",
           "CallServices", "make_client", "check_reachable", "STEP_HEADER"]

STEP_HEADER = "x-chainray-step"  # names the step in server logs (the simulator's /stats)


class Endpoint(BaseModel):
    """Where LLM calls go and how hard to try. The key never appears in repr or dumps."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str
    api_key: SecretStr = Field(repr=False, exclude=True)
    timeout_s: float = Field(60.0, gt=0)
    max_attempts: int = Field(6, gt=0)
    max_retry_s: float = Field(120.0, gt=0)
    backoff_s: float = Field(0.5, ge=0)
    api_version: str | None = None  # set for Azure OpenAI (base_url is the resource endpoint)
    # What the response cache knows the endpoint by, when its address says nothing lasting
    # (the embedded simulator listens on a new port each time); None: base_url.
    identity: str | None = None


class LLMRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    messages: tuple[dict[str, str], ...]
    max_tokens: int
    temperature: float | None = None
    params: dict[str, Any] = {}
    response_schema: dict[str, Any] | None = None
    stream: bool = False
    tag: str | None = None
    priority: float = 0.0
    estimated_tokens: int
    adaptation_key: str = ""  # endpoint and model: where what the model accepts is learned

    def as_kwargs(self) -> dict[str, Any]:
        """The request as ``chat.completions.create`` takes it (before any adaptation)."""
        extra = {STEP_HEADER: self.tag} if self.tag else None
        kwargs: dict[str, Any] = {**self.params, "model": self.model,
                                  "messages": list(self.messages),
                                  "max_tokens": self.max_tokens, "extra_headers": extra}
        if self.temperature is not None:
            kwargs["temperature"] = self.temperature
        if self.response_schema is not None:
            kwargs["response_format"] = response_format(self.response_schema,
                                                        self.tag or "reply")
        if self.stream:
            kwargs.update(stream=True, stream_options={"include_usage": True})
        return kwargs


@dataclass
class LLMReply:
    """What a call did; filled as it goes, so a failed call still tells what it sent. Its
    methods are the only writers, one per event of the call."""

    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # of prompt_tokens, as the server reported them
    attempts: int = 0  # HTTP requests sent, failures included
    rate_limited: int = 0
    queued_s: float = 0.0
    usage_estimated: bool = False
    truncated: bool = False
    ttft_s: float | None = None
    decode_s: float | None = None
    stream_without_usage: bool = False
    cached: bool = False  # answered from the response cache: nothing was sent
    duplicates: int = 0  # requests sent for a straggler (hedges) that left
    notes: list[str] = field(default_factory=list)
    attempt_log: list[Attempt] = field(default_factory=list)  # each request's times

    def from_cache(self, hit: CachedReply) -> None:
        self.text, self.truncated, self.cached = hit.text, hit.finish_reason == "length", True

    def sent(self, waited_s: float, duplicate: bool) -> None:
        """A request got its permit after ``waited_s`` and leaves (``duplicate``: a hedge)."""
        self.attempts += 1
        self.queued_s += waited_s
        self.duplicates += duplicate

    def failed(self, error: EndpointError) -> None:
        self.rate_limited += error.status == 429

    def withdrawn(self, duplicate: bool) -> None:
        """A request that never reached the server (cancelled before it left, a connection
        refused): not a call the server saw."""
        self.attempts -= 1
        self.duplicates -= duplicate

    @property
    def hedged(self) -> bool:
        """A duplicate request was sent for a straggler."""
        return self.duplicates > 0

    def streamed(self, stream: StreamedReply) -> None:
        self.ttft_s, self.decode_s = stream.ttft_s, stream.decode_s
        self.stream_without_usage = not stream.has_usage

    def answered(self, completion: Completion) -> None:
        self.text, self.truncated = completion.text, completion.truncated
        # Added, not set: a schema correction or an adapted retry is a second paid request.
        self.charged(completion.prompt_tokens, completion.completion_tokens,
                     completion.usage_estimated)
        self.cached_tokens += completion.cached_tokens

    def also_answered(self, completion: Completion) -> None:
        """A second whole answer to the same request (a hedge's loser that finished too): the
        server bills it, the step keeps the winner's text."""
        self.charged(completion.prompt_tokens, completion.completion_tokens,
                     completion.usage_estimated)
        self.cached_tokens += completion.cached_tokens

    def charged(self, prompt_tokens: int, completion_tokens: int, estimated: bool) -> None:
        """Tokens a request cost (a hedge's cancelled loser's are always ``estimated``)."""
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.usage_estimated = self.usage_estimated or estimated


class AdaptationStore(Protocol):
    """What each endpoint's models accept (``chainray.actors.adaptations``)."""

    async def known(self, key: str) -> dict[str, Adaptation]: ...
    async def learn(self, key: str, adaptation: Adaptation, note: str) -> None: ...


class NoStore:
    """Adaptations kept for one call only (unit tests, and callers with no actor)."""

    def __init__(self) -> None:
        self.learned: dict[str, dict[str, Adaptation]] = {}

    async def known(self, key: str) -> dict[str, Adaptation]:
        return self.learned.setdefault(key, {})

    async def learn(self, key: str, adaptation: Adaptation, note: str) -> None:
        self.learned.setdefault(key, {})[adaptation.param] = adaptation


@dataclass(frozen=True)
class CallServices:
    """What every call of a step runner shares: the endpoint and its client, each model's
    RateLimiter, what each model accepts, and the optional guards."""

    client: openai.AsyncOpenAI
    endpoint: Endpoint
    limiters: Mapping[str, Limiter]
    store: AdaptationStore = field(default_factory=NoStore)
    guards: CallGuards = field(default_factory=CallGuards)
    # Told once when a streamed reply's first token arrives (a prefix warm-up's leader).
    on_first_token: Callable[[], object] | None = None


def make_client(endpoint: Endpoint) -> openai.AsyncOpenAI:
    import openai

    key, timeout = endpoint.api_key.get_secret_value(), openai.Timeout(endpoint.timeout_s,
                                                                        connect=5.0)
    # openai's own defaults (limits, redirects), and each request tells when it left
    common = dict(api_key=key, max_retries=0, timeout=timeout, http_client=(
        openai.DefaultAsyncHttpxClient(event_hooks={"request": [attach_trace]})))
    if endpoint.api_version:  # Azure: the model named in a request is the deployment
        return openai.AsyncAzureOpenAI(azure_endpoint=endpoint.base_url,
                                       api_version=endpoint.api_version, **common)
    return openai.AsyncOpenAI(base_url=endpoint.base_url, **common)


def check_reachable(base_url: str, timeout_s: float = 5.0) -> None:
    """Fail before anything runs when nothing listens at ``base_url`` (no request is sent)."""
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"--base-url {base_url!r}: expected http(s)://host[:port]/v1")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout_s).close()
    except OSError as exc:
        raise InputError(f"cannot reach the endpoint {parts.scheme}://{parts.hostname}:{port} "
                         f"({exc.strerror or exc}); check --base-url or OPENAI_BASE_URL"
                         ) from None
