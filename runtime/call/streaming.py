"""Read a streamed chat completion: the text, the usage the server reports in its last chunk
(``stream_options.include_usage``), and when the first token arrived.

Time to first token and decode speed are what ``plan --calibrate`` fits; a stream is read to
the end, and a server that sends no usage in the stream is noted so that later calls to it are
sent without streaming (usage must stay exact).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chainray.call.completion import Completion, cached_of
from chainray.errors import EndpointError
from chainray.tokens import estimate_prompt_tokens, estimate_text_tokens

__all__ = ["StreamedReply", "collect_stream", "completion_from_stream", "close_response",
           "announcing"]

log = logging.getLogger(__name__)
_CLOSE_S = 5.0  # closing a stream's connection takes no round trip; bounded all the same


@dataclass
class StreamedReply:
    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: object = None  # as the usage chunk said (prompt_tokens_details)
    ttft_s: float | None = None
    decode_s: float | None = None
    refusal: str | None = None
    tool_calls: bool = False
    model: str | None = None  # as the chunks named them
    response_id: str | None = None
    parts: list[str] = field(default_factory=list, repr=False)

    @property
    def has_usage(self) -> bool:
        return self.prompt_tokens is not None and self.completion_tokens is not None


async def collect_stream(chunks: AsyncIterable[Any], sent_at: float,
                         clock: Callable[[], float] = time.perf_counter,
                         on_text: Callable[[str], None] | None = None) -> StreamedReply:
    """Consume ``chunks`` (openai ``ChatCompletionChunk`` objects) sent at ``sent_at``;
    ``on_text`` hears each piece of content as it arrives (a hedge watches a stream so)."""
    reply = StreamedReply()
    first = last = None
    async for chunk in chunks:
        if reply.model is None and isinstance(getattr(chunk, "model", None), str):
            reply.model, reply.response_id = chunk.model, getattr(chunk, "id", None)
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            reply.prompt_tokens = usage.prompt_tokens
            reply.completion_tokens = usage.completion_tokens
            details = getattr(usage, "prompt_tokens_details", None)
            reply.cached_tokens = getattr(details, "cached_tokens", None)
        for choice in getattr(chunk, "choices", None) or ():
            delta = choice.delta
            if delta is not None:
                if delta.content:
                    now = clock()
                    first = now if first is None else first
                    last = now
                    reply.parts.append(delta.content)
                    if on_text is not None:
                        on_text(delta.content)
                if getattr(delta, "refusal", None):
                    reply.refusal = (reply.refusal or "") + delta.refusal
                if getattr(delta, "tool_calls", None):
                    reply.tool_calls = True
            if choice.finish_reason:
                reply.finish_reason = choice.finish_reason
    reply.text = "".join(reply.parts)
    if first is not None:
        reply.ttft_s = first - sent_at
        reply.decode_s = (last or first) - first
    return reply


def completion_from_stream(reply: StreamedReply,
                           messages: Sequence[Mapping[str, object]]) -> Completion:
    """A read stream as the ``Completion`` the call path works with (same rules as a body:
    usage estimated when the stream carried none, no text at all is an error)."""
    text = reply.text or reply.refusal or ""
    if not text and not reply.tool_calls:
        raise EndpointError("the reply has no content, refusal or tool call", status=200,
                            code="empty_content")
    estimated = not reply.has_usage
    prompt = reply.prompt_tokens if reply.prompt_tokens is not None else \
        estimate_prompt_tokens(messages)
    completion = reply.completion_tokens if reply.completion_tokens is not None else \
        (estimate_text_tokens(text) if text else 0)
    cached = 0 if estimated else cached_of(prompt, reply.cached_tokens)
    return Completion(text, prompt, completion, estimated, reply.finish_reason == "length",
                      cached, reply.model, reply.response_id, reply.finish_reason)


async def close_response(raw: Any) -> None:
    """Close a response's connection; best effort (what was read stands either way)."""
    try:
        await asyncio.wait_for(raw.http_response.aclose(), _CLOSE_S)
    except Exception:  # noqa: BLE001 - closing must not replace the reason we stopped reading
        log.debug("could not close a stream", exc_info=True)


def announcing(on_text: Callable[[str], None], on_first: Callable[[], object]
               ) -> Callable[[str], None]:
    """``on_text``, with ``on_first`` told once, at the first piece of text (a prefix
    warm-up's leader tells the steps waiting for it). Telling is best effort: what waits for
    it has its own bound."""
    told = False

    def hear(text: str) -> None:
        nonlocal told
        if not told:
            told = True
            try:
                on_first()
            except Exception:  # noqa: BLE001 - a lost announcement only delays the others
                log.debug("could not announce the first token", exc_info=True)
        on_text(text)

    return hear
