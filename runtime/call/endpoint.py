"""What the call path is given and what it fills: the endpoint (and its ``openai`` client), one
request, its reply, and the two services a call leans on (the rate limiter's permits and the
store of what each model accepts)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from chainray.call.adaptations import Adaptation
from chainray.results import Attempt

if TYPE_CHECKING:  # openai costs ~0.5 s to import: only where a client is made
    import openai

__all__ = ["Endpoint", "LLMRequest", "LLMReply", "AdaptationStore", "NoStore",
           "make_client"]


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


@dataclass
class LLMReply:
    """What a call did; filled as it goes, so a failed call still tells what it sent."""

    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 0  # HTTP requests sent, failures included
    rate_limited: int = 0
    queued_s: float = 0.0
    usage_estimated: bool = False
    truncated: bool = False
    ttft_s: float | None = None
    decode_s: float | None = None
    stream_without_usage: bool = False
    cached: bool = False  # answered from the response cache: nothing was sent
    hedged: bool = False  # a duplicate request was sent for a straggler
    notes: list[str] = field(default_factory=list)
    attempt_log: list[Attempt] = field(default_factory=list)  # each request's times


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


def make_client(endpoint: Endpoint) -> openai.AsyncOpenAI:
    import openai

    key, timeout = endpoint.api_key.get_secret_value(), openai.Timeout(endpoint.timeout_s,
                                                                        connect=5.0)
    if endpoint.api_version:  # Azure: the model named in a request is the deployment
        return openai.AsyncAzureOpenAI(azure_endpoint=endpoint.base_url, api_key=key,
                                       api_version=endpoint.api_version, max_retries=0,
                                       timeout=timeout)
    return openai.AsyncOpenAI(base_url=endpoint.base_url, api_key=key, max_retries=0,
                              timeout=timeout)
