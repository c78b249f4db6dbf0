"""Each HTTP attempt's times, kept for the timeline: queued for a permit, in flight, and (the gap
to the next attempt) retry backoff. Traced, the same times are spans: the permit wait, then
the attempt's own span (``name``, kind CLIENT) from its departure to its end.

    async with AttemptTimer(reply.attempt_log, "chat gpt-4o", attrs) as timer, \
            PermitScope(...) as permit:
        timer.sent()                       # the permit is granted: the request goes out
        timer.span.set(...)                # what the answer said
        ...                                # an error leaving the block is the attempt's outcome
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from chainray import telemetry
from chainray.errors import EndpointError
from chainray.results import Attempt, AttemptOutcome
from chainray.telemetry import genai

if TYPE_CHECKING:
    from chainray.call.completion import Completion
    from chainray.call.endpoint import Endpoint, LLMRequest

__all__ = ["AttemptTimer", "outcome_of", "attempt_span", "answer_attributes"]


def outcome_of(exc: BaseException | None) -> tuple[AttemptOutcome, str | None]:
    """What an attempt that ended with ``exc`` (None: answered) comes to, and its code."""
    if exc is None:
        return "ok", None
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled", None
    if isinstance(exc, EndpointError):
        if exc.status == 429:
            return "rate_limited", exc.code or "429"
        return "error", exc.code or (str(exc.status) if exc.status else None)
    return "error", type(exc).__name__


class AttemptTimer:
    """Appends one ``Attempt`` to ``log`` when the block ends, however it ends."""

    def __init__(self, log: list[Attempt], name: str = "chat",
                 attributes: dict | None = None) -> None:
        self.log = log
        self.queued_at = time.time()
        self.sent_at: float | None = None
        self.name, self.attributes = name, attributes or {}
        self.span = telemetry.NO_SPAN  # the attempt's span, from its departure
        self.left = True  # False: it never reached the server (code "not_sent")

    def sent(self) -> None:
        self.sent_at = time.time()
        self._permit_wait()
        self.span = telemetry.span(self.name, self.attributes, client=True)

    def _permit_wait(self, outcome: str | None = None) -> None:
        telemetry.past_span("chainray.permit_wait", self.queued_at,
                            self.sent_at or time.time(),
                            {"chainray.attempt": len(self.log) + 1,
                             "chainray.permit.outcome": outcome})

    async def __aenter__(self) -> AttemptTimer:
        self.queued_at = time.time()
        return self

    async def __aexit__(self, kind, exc, tb) -> None:
        finished = time.time()
        outcome, code = outcome_of(exc)
        if not self.left and code != "connect_failed":
            code = "not_sent"  # whatever stopped it (a cancel, a timeout waiting for a
            # connection), the server never saw it
        if self.sent_at is None:  # no permit: nothing was sent
            self._permit_wait(code or outcome)
        if outcome != "ok":
            self.span.fail(code or outcome)
        self.span.set({"chainray.attempt": len(self.log) + 1, "chainray.attempt.outcome": outcome})
        self.span.end(finished)
        self.log.append(Attempt(queued_at=self.queued_at, sent_at=self.sent_at or finished,
                                finished_at=finished, outcome=outcome, code=code))


def attempt_span(request: LLMRequest, sent: dict[str, Any], endpoint: Endpoint,
                 duplicate: bool) -> tuple[str, dict[str, Any]]:
    """An attempt span's name and attributes (GenAI conventions), built only when traced;
    the prompt only when the user asked for message content."""
    if not telemetry.enabled():
        return "chat", {}
    attributes = genai.request_attributes(
        request.model, sent.get("max_completion_tokens") or sent.get("max_tokens"),
        sent.get("temperature"), endpoint.base_url, azure=endpoint.api_version is not None)
    attributes.update({"chainray.step": request.tag, "chainray.duplicate": duplicate})
    if telemetry.capture_content():
        attributes["gen_ai.input.messages"] = genai.input_messages(sent.get("messages") or ())
    return f"chat {request.model}", attributes


def answer_attributes(completion: Completion) -> dict[str, Any]:
    """What an attempt span says about its answer (the reply only when asked for)."""
    attributes = genai.response_attributes(
        completion.model, completion.response_id, completion.finish_reason,
        completion.prompt_tokens, completion.completion_tokens, completion.cached_tokens)
    attributes["chainray.usage_estimated"] = completion.usage_estimated
    if telemetry.capture_content():
        attributes["gen_ai.output.messages"] = genai.output_messages(
            completion.text, completion.finish_reason)
    return attributes
