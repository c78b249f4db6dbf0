"""The one seam to an LLM endpoint: the ``openai`` client, a permit per attempt, tenacity retries.

The same code serves the real API and the simulator; only ``base_url`` and the key differ. The
client's own retries are off (``max_retries=0``) so every attempt passes the RateLimiter, and
openai's exceptions, which do not survive pickling across Ray, become ``EndpointError`` here.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass
from typing import Protocol

import openai
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from chainray.errors import EndpointError
from chainray.exec.permits import Permit
from chainray.exec.retry import retry_policy

__all__ = ["Endpoint", "LLMRequest", "LLMReply", "Limiter", "make_client", "call_llm",
           "to_endpoint_error", "redact", "STEP_HEADER"]

STEP_HEADER = "x-chainray-step"  # names the step in server logs (the simulator's /stats)
_NO_RETRY_429 = {"insufficient_quota", "credit_balance_exhausted",
                 "organization_spend_limit_exceeded", "project_spend_limit_exceeded",
                 "organization_usage_limit_exceeded"}
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
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 0
    rate_limited: int = 0
    queued_s: float = 0.0


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


def _retry_after(response) -> float | None:
    if response is None:
        return None
    headers = response.headers
    if (value := headers.get("retry-after-ms")) is not None:
        try:
            return float(value) / 1000
        except ValueError:
            pass
    if (value := headers.get("retry-after")) is not None:
        try:
            return float(value)
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time()) if when else None
    return None


def redact(text: str, secret: str) -> str:
    """Remove a secret (and its long prefixes, as some servers echo part of a key)."""
    if len(secret) < 8:
        return text
    for size in (len(secret), 12):
        text = text.replace(secret[:size], "[redacted]")
    return text


def to_endpoint_error(exc: Exception, secret: str = "") -> EndpointError:
    """Convert an openai exception into a picklable ``EndpointError`` (no key, no request)."""
    if isinstance(exc, openai.APITimeoutError):
        return EndpointError("the request timed out", None, "timeout", None, None, True)
    if isinstance(exc, openai.APIConnectionError):
        return EndpointError(f"could not reach the endpoint: {exc.__cause__ or exc}", None,
                             "connection_error", None, None, True)
    if isinstance(exc, openai.APIStatusError):
        status, code, kind = exc.status_code, exc.code, exc.type
        retry_after = _retry_after(exc.response)
        should = exc.response.headers.get("x-should-retry")
        retryable = (status in (408, 409, 429) or status >= 500) and should != "false"
        if status == 429 and (code in _NO_RETRY_429 or kind == "insufficient_quota"):
            retryable = False
        message = redact(str(getattr(exc, "message", exc)), secret)
        return EndpointError(message, status, code, kind, retry_after, retryable)
    return EndpointError(redact(f"{type(exc).__name__}: {exc}", secret))


async def call_llm(client: openai.AsyncOpenAI, limiter: Limiter, request: LLMRequest,
                   endpoint: Endpoint, reply: LLMReply | None = None) -> LLMReply:
    """Send one chat completion, retrying as the policy says; every attempt takes a permit.

    ``reply`` collects attempts and 429s even when the call finally fails.
    """
    reply = reply if reply is not None else LLMReply()
    extra = {STEP_HEADER: request.tag} if request.tag else None
    kwargs = {"model": request.model, "messages": list(request.messages),
              "max_tokens": request.max_tokens, "extra_headers": extra}
    if request.temperature is not None:
        kwargs["temperature"] = request.temperature
    policy = retry_policy(endpoint.max_attempts, endpoint.max_retry_s, endpoint.backoff_s)
    async for attempt in policy:
        with attempt:
            granted = await limiter.acquire(request.estimated_tokens, request.priority)
            permit, reply.queued_s = granted.id, reply.queued_s + granted.waited_s
            reply.attempts += 1
            try:
                raw = await client.chat.completions.with_raw_response.create(**kwargs)
                completion = raw.parse()
            except openai.OpenAIError as exc:
                error = to_endpoint_error(exc, endpoint.api_key.get_secret_value())
                reply.rate_limited += error.status == 429
                if error.status == 429 and error.retryable:
                    await limiter.penalize(permit, error.retry_after)
                else:
                    await limiter.release(permit, None, None)
                raise error from None
            except BaseException:
                await limiter.release(permit, None, None)
                raise
            usage = completion.usage
            reply.prompt_tokens = usage.prompt_tokens if usage else 0
            reply.completion_tokens = usage.completion_tokens if usage else 0
            headers = {k: raw.headers[k] for k in _RATE_HEADERS if k in raw.headers}
            await limiter.release(permit, reply.prompt_tokens + reply.completion_tokens,
                                  headers)
            reply.text = completion.choices[0].message.content or ""
    return reply

