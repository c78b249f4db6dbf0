"""The one seam to an LLM endpoint: one ``Call`` object per LLM call, in layers.

The same code serves the real API and the simulator; only ``base_url`` and the key differ. The
client's own retries are off (``max_retries=0``) so every attempt passes the RateLimiter. A
``Call`` holds what the call needs and what it has done so far (as tenacity's
``RetryCallState`` holds a retried call); its methods are layers, outermost first, each doing
one thing and handing on to the next (as httpx's ``send`` -> ``_send_handling_auth`` ->
``_send_handling_redirects`` -> ``_send_single_request``):

    run          the response cache: a hit answers without a request
    _answer      structured output: a reply that breaks the schema is sent back once
    _adapting    what the model accepts: a rejected parameter is renamed or dropped, once each
    _retrying    the retry policy (tenacity), one time budget for every attempt
    _attempt     one attempt: a straggler gets one duplicate (hedging), the answer is kept
    _request     one request under a spend reservation and a rate-limit permit
    _send        the HTTP request, its body or stream read without trust

Each attempt holds one ``PermitScope`` (handed back on every path), has one deadline
(``timeout_s`` bounds the whole request, a slow-drip body included), and converts every foreign
error in one place (``map_exceptions``).

    reply = await Call.of(services, request).run()     # or EndpointError; call.reply says
                                                        # what a failed call sent
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from chainray import telemetry
from chainray.call.adaptations import (
    Adaptation,
    adapt,
    describe,
    known_adaptations,
    learn_adaptation,
)
from chainray.call.attempt_log import AttemptTimer, answer_attributes, attempt_span
from chainray.call.completion import Completion, read_completion
from chainray.call.departure import departure
from chainray.call.endpoint import (
    STEP_HEADER,
    AdaptationStore,
    CallServices,
    Endpoint,
    LLMReply,
    LLMRequest,
    NoStore,
)
from chainray.call.error_table import map_exceptions, parse_retry_after, redact, to_endpoint_error
from chainray.call.retry import retry_policy
from chainray.call.streaming import (
    announcing,
    close_response,
    collect_stream,
    completion_from_stream,
)
from chainray.call.structured import correction_message, schema_problem
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

__all__ = ["Call", "to_endpoint_error", "parse_retry_after", "redact", "STEP_HEADER"]

_RATE_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-limit-tokens",
                 "x-ratelimit-remaining-requests", "x-ratelimit-remaining-tokens")
# Streaming is dropped for an endpoint whose streams carry no usage: counts must be exact.
_NO_STREAM_USAGE = Adaptation(param="stream", action="drop")


@dataclass
class Call:
    """One LLM call: what it is sent with, and (``reply``) what it has done so far.

    ``run`` sends the request, retrying as the policy says; every attempt takes a permit. With
    ``guards``: a cached reply is returned without a request, each request is admitted under
    the spend cap, and a straggler is hedged. Raises ``EndpointError`` only; ``reply`` tells
    the attempts and 429s of a call that failed as well.
    """

    client: openai.AsyncOpenAI
    limiter: Limiter
    endpoint: Endpoint
    request: LLMRequest
    guards: CallGuards = field(default_factory=CallGuards)
    store: AdaptationStore = field(default_factory=NoStore)
    reply: LLMReply = field(default_factory=LLMReply)
    # The request as chainray asks it (a schema correction adds to its messages) and as it is
    # sent (adapted to what the model accepts).
    asked: dict[str, Any] = field(default_factory=dict, init=False)
    sent: dict[str, Any] = field(default_factory=dict, init=False)
    rejected: set[str] = field(default_factory=set, init=False)  # parameters adapted after a 400
    left_s: float = field(default=0.0, init=False)  # of the retry budget, as this attempt began
    on_first_token: Callable[[], object] | None = None  # told at a stream's first token

    @classmethod
    def of(cls, services: CallServices, request: LLMRequest,
           reply: LLMReply | None = None) -> Call:
        """A call of ``request.model`` under that model's RateLimiter (``reply``: one that
        earlier calls of the same step, to other models, have filled)."""
        return cls(services.client, services.limiters[request.model], services.endpoint,
                   request, services.guards, services.store, reply or LLMReply(),
                   on_first_token=services.on_first_token)

    async def run(self) -> LLMReply:
        """The cache layer: a hit answers at once; an answer that passed is kept."""
        self.asked = self.request.as_kwargs()
        cache = self.guards.cache
        if cache is None:
            await self._answer()
            return self.reply
        key = ResponseCache.key(self.endpoint.identity or self.endpoint.base_url, self.asked)
        if (hit := await cache.get(key)) is not None:
            self.reply.from_cache(hit)
            telemetry.event("chainray.cache_hit", {"gen_ai.request.model": self.request.model})
        else:
            await self._answer()
            reply = self.reply
            await cache.put(key, CachedReply(
                text=reply.text, prompt_tokens=reply.prompt_tokens,
                completion_tokens=reply.completion_tokens, model=self.request.model,
                finish_reason="length" if reply.truncated else "stop"))
        return self.reply

    async def _answer(self) -> None:
        """Structured output: a reply that does not follow the step's schema is sent back once
        with the problem; a second such reply fails the call."""
        schema = self.request.response_schema
        await self._adapting()
        if schema is None or (problem := schema_problem(self.reply.text, schema)) is None:
            return
        self.asked["messages"] = [*self.asked["messages"],
                                  {"role": "assistant", "content": self.reply.text},
                                  correction_message(problem)]
        await self._adapting()
        if (problem := schema_problem(self.reply.text, schema)) is not None:
            raise EndpointError(f"the reply did not follow the step's schema twice: {problem}",
                                status=200, code="schema_mismatch")

    async def _adapting(self) -> None:
        """What the model accepts: a parameter it rejects (400 unsupported_parameter or
        unsupported_value) is renamed or dropped and the request sent again, once per
        parameter; an endpoint whose streams carry no usage is sent to without streaming."""
        request = self.request
        while True:  # bounded: each turn adapts one more of the request's parameters
            self.sent = await self._adapted()
            try:
                await self._retrying()
                break
            except EndpointError as error:
                learned = learn_adaptation(error.status, error.code, error.param,
                                           error.message, self.sent)
                if learned is None or learned.param in self.rejected:
                    raise
                self.rejected.add(learned.param)
                await self.store.learn(request.adaptation_key, learned,
                                       describe(request.model, learned,
                                                self.sent.get(learned.param)))
        if self.reply.stream_without_usage and "stream" in self.sent:
            await self.store.learn(request.adaptation_key, _NO_STREAM_USAGE,
                                   f"{request.model}: the endpoint's streams carry no usage; "
                                   "sending without streaming")

    async def _adapted(self) -> dict[str, Any]:
        """The request as this model accepts it; a family's known needs are noted once."""
        request, store = self.request, self.store
        learned = await store.known(request.adaptation_key)
        for param, adaptation in known_adaptations(request.model).items():
            if param in self.asked and param not in learned:
                await store.learn(request.adaptation_key, adaptation,
                                  describe(request.model, adaptation, self.asked[param]))
        adapted = adapt(self.asked, {**known_adaptations(request.model), **learned})
        if "stream" not in adapted:
            adapted.pop("stream_options", None)
        return adapted

    async def _retrying(self) -> None:
        """The retry policy: attempts until one answers, within the endpoint's attempts and
        seconds (one budget for them all)."""
        endpoint = self.endpoint
        ends = time.monotonic() + endpoint.max_retry_s
        async for attempt in retry_policy(endpoint.max_attempts, endpoint.max_retry_s,
                                          endpoint.backoff_s):
            with attempt:
                self.left_s = max(0.001, ends - time.monotonic())
                if attempt.retry_state.attempt_number > 1 and self.reply.attempt_log:
                    telemetry.past_span("chainray.retry_backoff",
                                        self.reply.attempt_log[-1].finished_at, time.time(),
                                        {"chainray.attempt": attempt.retry_state.attempt_number})
                await self._attempt()

    async def _attempt(self) -> None:
        """One attempt: its answer goes into the reply; a straggler is hedged."""
        charge = Charge()
        latencies, q = self.guards.latencies, self.guards.hedge_after
        if latencies is None or q is None:
            completion, _ = await self._request(charge, False, Progress())
            self.reply.answered(completion)
            return
        request = self.request

        async def limits() -> StragglerLimits:
            await latencies.fresh()
            return latencies.limits(request.model, request.tag, request.max_tokens, q)

        (completion, _), progress = await hedged(partial(self._request, charge), limits,
                                                 charge, bool(self.sent.get("stream")))
        # From the first request's departure: a hedged straggler took that long for its step,
        # so the slow tail stays in the view and the quantiles do not drift into the normal.
        started = progress.started.is_set()
        latencies.add(request.model, request.tag, request.max_tokens,
                      time.monotonic() - charge.sent_at,
                      progress.first_at - charge.sent_at if started else None,
                      progress.per_char_s(), progress.chars if started else None)
        self.reply.answered(completion)
        for key, other in charge.answers:  # a loser that answered before it could be cut
            if key != id(progress):
                self.reply.also_answered(other)

    async def _request(self, charge: Charge, duplicate: bool,
                       progress: Progress) -> tuple[Completion, float]:
        """One HTTP request under a spend reservation and a permit: (completion, seconds)."""
        worst = worst_case_tokens(self.sent)
        reservation = await self._reserve(worst)
        spent, cached = (0, 0), 0  # an HTTP error status costs nothing
        lost = False  # a hedge's loser, cancelled: charged once the race is settled
        traced = attempt_span(self.request, self.sent, self.endpoint, duplicate)
        try:
            async with AttemptTimer(self.reply.attempt_log, *traced) as timer, PermitScope(
                    self.limiter, self.request.estimated_tokens, self.request.priority,
                    timeout_s=self.left_s, max_penalty_s=self.left_s) as permit:
                timer.sent()
                self.reply.sent(permit.waited_s, duplicate)
                charge.leave()
                sent_at = time.monotonic()
                try:
                    with map_exceptions(self.endpoint.api_key.get_secret_value()), \
                            departure() as left:
                        raw, completion = await asyncio.wait_for(self._send(progress),
                                                                 self.endpoint.timeout_s)
                except EndpointError as error:
                    self.reply.failed(error)
                    if not left.left or error.code == "connect_failed":
                        self._withdraw(timer, duplicate)
                    elif error.status is None:
                        spent = worst  # cut off mid-reply: the server may have counted it all
                    raise
                except asyncio.CancelledError:
                    if left.left:
                        spent, lost = worst, charge.lost(progress)  # from outside: the worst
                    else:
                        self._withdraw(timer, duplicate)
                    raise
                spent = (completion.prompt_tokens, completion.completion_tokens)
                cached = completion.cached_tokens
                charge.answers.append((id(progress), completion))
                if telemetry.enabled():
                    timer.span.set(answer_attributes(completion))
                permit.settle(sum(spent), {k: raw.headers[k] for k in _RATE_HEADERS
                                           if k in raw.headers})
            return completion, time.monotonic() - sent_at
        finally:
            if lost:
                spent = await self._charge_loser(charge, progress)
            if reservation is not None and self.guards.budget is not None:
                await _hand_back(self.guards.budget.settle(reservation, self.request.model,
                                                           *spent, cached_tokens=cached))

    def _withdraw(self, timer: AttemptTimer, duplicate: bool) -> None:
        """A request that never reached the server: no call, nothing charged, not_sent."""
        self.reply.withdrawn(duplicate)
        timer.left = False

    async def _reserve(self, worst: tuple[int, int]) -> int | None:
        """Admission under the spend cap: a reservation id, or ``spend_cap`` when refused."""
        if self.guards.budget is None:
            return None
        reservation = await self.guards.budget.reserve(self.request.model, *worst)
        telemetry.event("chainray.spend_reservation", {
            "gen_ai.request.model": self.request.model, "chainray.prompt_tokens": worst[0],
            "chainray.completion_tokens": worst[1], "chainray.admitted": reservation is not None})
        if reservation is None:
            raise spend_cap_error(self.request.model)
        return reservation

    async def _charge_loser(self, charge: Charge, progress: Progress) -> tuple[int, int]:
        """Count a hedge's cancelled loser once the winner's usage is known (``loser_charge``);
        bounded: the winner has its own deadline, and the race ends with it."""
        try:
            await asyncio.wait_for(charge.settled.wait(), self.left_s)
        except asyncio.TimeoutError:
            pass  # charged without the winner's usage
        spent = loser_charge(charge, progress, self.request.messages)
        # The server reports no usage for a request it was left by: estimated.
        self.reply.charged(*spent, estimated=True)
        return spent

    async def _send(self, progress: Progress) -> tuple[Any, Completion]:
        """One HTTP request; a stream is read to its end (its usage chunk comes last)."""
        sent_at = time.perf_counter()
        raw = await self.client.chat.completions.with_raw_response.create(**self.sent)
        messages = self.request.messages
        if not self.sent.get("stream"):
            return raw, read_completion(raw.content, messages)
        if "text/event-stream" not in raw.headers.get("content-type", ""):
            # A server that ignores ``stream`` answers with one body: read it as such.
            return raw, read_completion(await raw.http_response.aread(), messages)
        progress.streamed = True
        try:
            on_text = progress.on_text if self.on_first_token is None else \
                announcing(progress.on_text, self.on_first_token)
            stream = await collect_stream(raw.parse(), sent_at, on_text=on_text)
        finally:  # a stream left unread (a hedge's loser) is closed now, not when collected:
            await close_response(raw)  # the server sees the client leave, stops generating
        self.reply.streamed(stream)
        return raw, completion_from_stream(stream, messages)
