"""The one seam to an LLM endpoint: the ``openai`` client, a permit per attempt, tenacity retries.

The same code serves the real API and the simulator; only ``base_url`` and the key differ. The
client's own retries are off (``max_retries=0``) so every attempt passes the RateLimiter. Each
attempt holds one ``PermitScope`` (handed back on every path), has one deadline (``timeout_s``
bounds the whole request, a slow-drip body included), and converts every foreign error in one
place (``map_exceptions``); the body is read by ``read_completion``, which trusts nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from chainray.call.adaptations import (
    Adaptation,
    adapt,
    describe,
    known_adaptations,
    learn_adaptation,
)
from chainray.call.attempt_log import AttemptTimer
from chainray.call.completion import read_completion
from chainray.call.endpoint import (
    AdaptationStore,
    Endpoint,
    LLMReply,
    LLMRequest,
    NoStore,
)
from chainray.call.error_table import (
    map_exceptions,
    parse_retry_after,
    redact,
    to_endpoint_error,
)
from chainray.call.retry import retry_policy
from chainray.call.streaming import collect_stream, completion_from_stream
from chainray.call.structured import correction_message, response_format, schema_problem
from chainray.errors import EndpointError
from chainray.guards.cache import CachedReply, ResponseCache
from chainray.guards.call_guards import (
    CallGuards,
    StragglerLimits,
    spend_cap_error,
    worst_case_tokens,
)
from chainray.guards.hedge import Charge, Progress, hedged, loser_charge
from chainray.limit.permit_scope import Limiter, PermitScope, _hand_back

if TYPE_CHECKING:  # openai costs ~0.5 s to import: only where a client is made
    import openai

__all__ = ["call_llm", "to_endpoint_error", "parse_retry_after", "redact", "STEP_HEADER"]

log = logging.getLogger(__name__)
_CLOSE_S = 5.0  # closing a stream's connection takes no round trip; bounded all the same
STEP_HEADER = "x-chainray-step"  # names the step in server logs (the simulator's /stats)
_RATE_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-limit-tokens",
                 "x-ratelimit-remaining-requests", "x-ratelimit-remaining-tokens")


async def _reserve(guards: CallGuards | None, model: str,
                   worst: tuple[int, int]) -> int | None:
    """Admission under the spend cap: a reservation id, or ``spend_cap`` when refused."""
    if guards is None or guards.budget is None:
        return None
    reservation = await guards.budget.reserve(model, *worst)
    if reservation is None:
        raise spend_cap_error(model)
    return reservation


async def _request(client: openai.AsyncOpenAI, limiter: Limiter, request: LLMRequest,
                   endpoint: Endpoint, reply: LLMReply, kwargs: dict, left_s: float,
                   guards: CallGuards | None, charge: Charge, progress: Progress,
                   duplicate: bool = False):
    """One HTTP request under a spend reservation and a permit: (completion, seconds)."""
    secret = endpoint.api_key.get_secret_value()
    worst = worst_case_tokens(kwargs)
    reservation = await _reserve(guards, request.model, worst)
    spent = (0, 0)  # an HTTP error status costs nothing
    lost = False  # a hedge's loser, cancelled: charged once the race is settled
    try:
        async with AttemptTimer(reply.attempt_log) as timer, PermitScope(
                limiter, request.estimated_tokens, request.priority, timeout_s=left_s,
                max_penalty_s=left_s) as permit:
            timer.sent()
            reply.queued_s += permit.waited_s
            reply.attempts += 1
            reply.hedged = reply.hedged or duplicate
            charge.leave()
            sent_at = time.monotonic()
            try:
                with map_exceptions(secret):
                    raw, completion = await asyncio.wait_for(
                        _send(client, kwargs, request, reply, progress), endpoint.timeout_s)
            except EndpointError as error:
                reply.attempts -= error.code == "connect_failed"  # nothing reached the server
                reply.rate_limited += error.status == 429
                if error.status is None and error.code != "connect_failed":
                    spent = worst  # cut off mid-reply: the server may have counted it all
                raise
            except asyncio.CancelledError:
                spent = worst  # cancelled from outside: assume the worst
                lost = charge.lost(progress)
                raise
            spent = (completion.prompt_tokens, completion.completion_tokens)
            permit.settle(sum(spent), {k: raw.headers[k] for k in _RATE_HEADERS
                                       if k in raw.headers})
        return completion, time.monotonic() - sent_at
    finally:
        if lost:
            spent = await _charge_loser(charge, progress, request, reply, left_s)
        if reservation is not None and guards is not None and guards.budget is not None:
            await _hand_back(guards.budget.settle(reservation, request.model, *spent))


async def _charge_loser(charge: Charge, progress: Progress, request: LLMRequest,
                        reply: LLMReply, wait_s: float) -> tuple[int, int]:
    """Count a hedge's cancelled loser once the winner's usage is known (``loser_charge``);
    bounded: the winner has its own deadline, and the race ends with it."""
    try:
        await asyncio.wait_for(charge.settled.wait(), wait_s)
    except asyncio.TimeoutError:
        pass  # charged without the winner's usage
    spent = loser_charge(charge, progress, request.messages)
    reply.prompt_tokens += spent[0]
    reply.completion_tokens += spent[1]
    reply.usage_estimated = True  # the server reports no usage for a request it was left by
    return spent


def _straggler_limits(guards: CallGuards | None, request: LLMRequest
                      ) -> Callable[[], Awaitable[StragglerLimits]] | None:
    """When a request of this step is a straggler (None: hedging is off)."""
    if guards is None or guards.latencies is None or guards.hedge_after is None:
        return None
    latencies, q = guards.latencies, guards.hedge_after

    async def limits() -> StragglerLimits:
        await latencies.fresh()
        return latencies.limits(request.model, request.tag, request.max_tokens, q)

    return limits


async def _attempt(client: openai.AsyncOpenAI, limiter: Limiter, request: LLMRequest,
                   endpoint: Endpoint, reply: LLMReply, kwargs: dict, left_s: float,
                   guards: CallGuards | None = None) -> None:
    charge = Charge()

    async def send(duplicate: bool, progress: Progress):
        return await _request(client, limiter, request, endpoint, reply, kwargs, left_s,
                              guards, charge, progress, duplicate)

    limits = _straggler_limits(guards, request)
    latencies = guards.latencies if guards is not None else None
    if limits is None or latencies is None:
        completion, _ = await send(False, Progress())
    else:
        (completion, _), progress = await hedged(send, limits, charge, bool(kwargs.get("stream")))
        # From the first request's departure: a hedged straggler took that long for its step,
        # so the slow tail stays in the view and the quantiles do not drift into the normal.
        ttft = progress.first_at - charge.sent_at if progress.started.is_set() else None
        latencies.add(request.model, request.tag, request.max_tokens,
                      time.monotonic() - charge.sent_at, ttft, progress.per_char_s(),
                      progress.chars if progress.started.is_set() else None)
    reply.text, reply.truncated = completion.text, completion.truncated
    # Added, not set: a schema correction or an adapted retry is a second paid request.
    reply.prompt_tokens += completion.prompt_tokens
    reply.completion_tokens += completion.completion_tokens
    reply.usage_estimated = reply.usage_estimated or completion.usage_estimated


async def _send(client: openai.AsyncOpenAI, kwargs: dict, request: LLMRequest,
                reply: LLMReply, progress: Progress):
    """One HTTP request; a stream is read to its end (its usage chunk comes last)."""
    sent_at = time.perf_counter()
    raw = await client.chat.completions.with_raw_response.create(**kwargs)
    if not kwargs.get("stream"):
        return raw, read_completion(raw.content, request.messages)
    if "text/event-stream" not in raw.headers.get("content-type", ""):
        # A server that ignores ``stream`` answers with one body: read it as such.
        return raw, read_completion(await raw.http_response.aread(), request.messages)
    progress.streamed = True
    try:
        streamed = await collect_stream(raw.parse(), sent_at, on_text=progress.on_text)
    finally:  # a stream left unread (a hedge's loser) is closed now, not when collected:
        await _close(raw)  # the server sees the client leave and stops generating
    reply.ttft_s, reply.decode_s = streamed.ttft_s, streamed.decode_s
    reply.stream_without_usage = not streamed.has_usage
    return raw, completion_from_stream(streamed, request.messages)


async def _close(raw: Any) -> None:
    """Close a response's connection; best effort (what was read stands either way)."""
    try:
        await asyncio.wait_for(raw.http_response.aclose(), _CLOSE_S)
    except Exception:  # noqa: BLE001 - closing must not replace the reason we stopped reading
        log.debug("could not close a stream", exc_info=True)


def _request_kwargs(request: LLMRequest) -> dict[str, Any]:
    extra = {STEP_HEADER: request.tag} if request.tag else None
    kwargs: dict[str, Any] = {**request.params, "model": request.model,
                              "messages": list(request.messages),
                              "max_tokens": request.max_tokens, "extra_headers": extra}
    if request.temperature is not None:
        kwargs["temperature"] = request.temperature
    if request.response_schema is not None:
        kwargs["response_format"] = response_format(request.response_schema, request.tag or
                                                    "reply")
    if request.stream:
        kwargs.update(stream=True, stream_options={"include_usage": True})
    return kwargs


# Streaming is dropped for an endpoint whose streams carry no usage: counts must be exact.
_NO_STREAM_USAGE = Adaptation(param="stream", action="drop")


async def _adapted(kwargs: dict[str, Any], request: LLMRequest,
                   store: AdaptationStore) -> dict[str, Any]:
    """The request as this model accepts it; a family's known needs are noted once."""
    learned = await store.known(request.adaptation_key)
    for param, adaptation in known_adaptations(request.model).items():
        if param in kwargs and param not in learned:
            await store.learn(request.adaptation_key, adaptation,
                              describe(request.model, adaptation, kwargs[param]))
    adapted = adapt(kwargs, {**known_adaptations(request.model), **learned})
    if "stream" not in adapted:
        adapted.pop("stream_options", None)
    return adapted


async def call_llm(client: openai.AsyncOpenAI, limiter: Limiter, request: LLMRequest,
                   endpoint: Endpoint, reply: LLMReply | None = None,
                   store: AdaptationStore | None = None,
                   guards: CallGuards | None = None) -> LLMReply:
    """Send one chat completion, retrying as the policy says; every attempt takes a permit.

    A parameter the model rejects (400 unsupported_parameter/unsupported_value) is renamed or
    dropped and the call sent again, once per parameter; a reply that does not follow the
    step's schema is sent back once with the problem. ``reply`` collects attempts and 429s
    even when the call finally fails. With ``guards``: a cached reply is returned without a
    request, each request is admitted under the spend cap, and a straggler is hedged.
    Raises ``EndpointError`` only.
    """
    reply = reply if reply is not None else LLMReply()
    store = store if store is not None else NoStore()
    kwargs = _request_kwargs(request)
    cache = guards.cache if guards is not None else None
    key = (ResponseCache.key(endpoint.identity or endpoint.base_url, kwargs)
           if cache is not None else None)
    if cache is not None and key is not None and (hit := await cache.get(key)) is not None:
        reply.text, reply.truncated, reply.cached = hit.text, hit.finish_reason == "length", True
        return reply
    rejected: set[str] = set()
    corrected = False
    while True:
        adapted = await _adapted(kwargs, request, store)
        try:
            await _with_retries(client, limiter, request, endpoint, reply, adapted, guards)
        except EndpointError as error:
            learned = learn_adaptation(error.status, error.code, None, error.message, adapted)
            if learned is None or learned.param in rejected:
                raise
            rejected.add(learned.param)
            await store.learn(request.adaptation_key, learned,
                              describe(request.model, learned, adapted.get(learned.param)))
            continue
        if reply.stream_without_usage and "stream" in adapted:
            await store.learn(request.adaptation_key, _NO_STREAM_USAGE,
                              f"{request.model}: the endpoint's streams carry no usage; "
                              "sending without streaming")
        problem = (schema_problem(reply.text, request.response_schema)
                   if request.response_schema is not None else None)
        if problem is None:
            if cache is not None and key is not None:
                await cache.put(key, CachedReply(
                    text=reply.text, prompt_tokens=reply.prompt_tokens,
                    completion_tokens=reply.completion_tokens, model=request.model,
                    finish_reason="length" if reply.truncated else "stop"))
            return reply
        if corrected:
            raise EndpointError(f"the reply did not follow the step's schema twice: {problem}",
                                200, "schema_mismatch", None, None, False)
        corrected = True
        kwargs["messages"] = [*kwargs["messages"], {"role": "assistant", "content": reply.text},
                              correction_message(problem)]


async def _with_retries(client: openai.AsyncOpenAI, limiter: Limiter, request: LLMRequest,
                        endpoint: Endpoint, reply: LLMReply, kwargs: dict,
                        guards: CallGuards | None = None) -> None:
    started = time.monotonic()
    policy = retry_policy(endpoint.max_attempts, endpoint.max_retry_s, endpoint.backoff_s)
    async for attempt in policy:
        with attempt:
            left_s = max(0.001, endpoint.max_retry_s - (time.monotonic() - started))
            await _attempt(client, limiter, request, endpoint, reply, kwargs, left_s, guards)
