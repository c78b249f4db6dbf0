"""The one seam to an LLM endpoint: the ``openai`` client, a permit per attempt, tenacity retries.

The same code serves the real API and the simulator; only ``base_url`` and the key differ. The
client's own retries are off (``max_retries=0``) so every attempt passes the RateLimiter. Each
attempt holds one ``PermitScope`` (handed back on every path), has one deadline (``timeout_s``
bounds the whole request, a slow-drip body included), and converts every foreign error in one
place (``map_exceptions``); the body is read by ``read_completion``, which trusts nothing.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol

import openai
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from chainray.errors import EndpointError
from chainray.exec.completion import read_completion
from chainray.exec.endpoint_errors import (
    map_exceptions,
    parse_retry_after,
    redact,
    to_endpoint_error,
)
from chainray.exec.permit_scope import PermitScope
from chainray.exec.permits import Permit
from chainray.exec.retry import retry_policy

__all__ = ["Endpoint", "LLMRequest", "LLMReply", "Limiter", "make_client", "call_llm",
           "to_endpoint_error", "parse_retry_after", "redact", "STEP_HEADER"]

STEP_HEADER = "x-chainray-step"  # names the step in server logs (the simulator's /stats)
_RATE_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-limit-tokens",
                 "x-ratelimit-remaining-requests", "x-ratelimit-remaining-tokens")


class Endpoint(BaseModel):
    """Where LLM calls go and how hard to try. The key never appears in repr or dumps."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str
    api_key: SecretStr = Field(repr=False, exclude=True)
    timeout_s: float = Field(60.0, gt=0)
    max_attempts: int = Field(6, gt=0)
    max_retry_s: float = Field(120.0, gt=0)
    backoff_s: float = Field(0.5, ge=0)


class LLMRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    messages: tuple[dict[str, str], ...]
    max_tokens: int
    temperature: float | None = None
    tag: str | None = None
    priority: float = 0.0
    estimated_tokens: int


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


class Limiter(Protocol):
    """The RateLimiter as the call path sees it (``chainray.actors.rate_limiter.RemoteLimiter``
    in production, a ``PermitBook`` in unit tests)."""

    async def acquire(self, tokens: int, priority: float,
                      timeout_s: float | None = None) -> Permit: ...
    async def release(self, permit_id: str, used_tokens: int | None,
                      headers: dict[str, str] | None) -> None: ...
    async def penalize(self, permit_id: str, retry_after_s: float | None) -> None: ...


def make_client(endpoint: Endpoint) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=endpoint.base_url,
                              api_key=endpoint.api_key.get_secret_value(), max_retries=0,
                              timeout=openai.Timeout(endpoint.timeout_s, connect=5.0))


def _beyond_budget(error: EndpointError, left_s: float) -> EndpointError:
    """A Retry-After longer than the retry budget has left ends the call now, honestly."""
    if error.retryable and error.retry_after is not None and error.retry_after > left_s:
        return EndpointError(f"{error.message} (the server asks to wait {error.retry_after:.0f}"
                             f"s, more than the {left_s:.0f}s left of the retry budget)",
                             error.status, error.code, error.type, error.retry_after, False)
    return error


async def _attempt(client: openai.AsyncOpenAI, limiter: Limiter, request: LLMRequest,
                   endpoint: Endpoint, reply: LLMReply, kwargs: dict, left_s: float) -> None:
    secret = endpoint.api_key.get_secret_value()
    async with PermitScope(limiter, request.estimated_tokens, request.priority,
                           timeout_s=left_s, max_penalty_s=left_s) as permit:
        reply.queued_s += permit.waited_s
        reply.attempts += 1
        try:
            with map_exceptions(secret):
                raw = await asyncio.wait_for(
                    client.chat.completions.with_raw_response.create(**kwargs),
                    endpoint.timeout_s)
                completion = read_completion(raw.content, request.messages)
        except EndpointError as error:
            reply.attempts -= error.code == "connect_failed"  # no request reached the server
            reply.rate_limited += error.status == 429
            raise _beyond_budget(error, left_s) from None
        permit.settle(completion.prompt_tokens + completion.completion_tokens,
                      {k: raw.headers[k] for k in _RATE_HEADERS if k in raw.headers})
    reply.text, reply.truncated = completion.text, completion.truncated
    reply.prompt_tokens, reply.completion_tokens = (completion.prompt_tokens,
                                                    completion.completion_tokens)
    reply.usage_estimated = completion.usage_estimated


async def call_llm(client: openai.AsyncOpenAI, limiter: Limiter, request: LLMRequest,
                   endpoint: Endpoint, reply: LLMReply | None = None) -> LLMReply:
    """Send one chat completion, retrying as the policy says; every attempt takes a permit.

    ``reply`` collects attempts and 429s even when the call finally fails. Raises
    ``EndpointError`` only.
    """
    reply = reply if reply is not None else LLMReply()
    extra = {STEP_HEADER: request.tag} if request.tag else None
    kwargs = {"model": request.model, "messages": list(request.messages),
              "max_tokens": request.max_tokens, "extra_headers": extra}
    if request.temperature is not None:
        kwargs["temperature"] = request.temperature
    started = time.monotonic()
    policy = retry_policy(endpoint.max_attempts, endpoint.max_retry_s, endpoint.backoff_s)
    async for attempt in policy:
        with attempt:
            left_s = max(0.001, endpoint.max_retry_s - (time.monotonic() - started))
            await _attempt(client, limiter, request, endpoint, reply, kwargs, left_s)
    return reply
