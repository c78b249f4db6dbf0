"""An OpenAI-compatible chat server with automatic prefix caching of its own making (not the
simulator's), and a bill: what it charged for input, cached input and output tokens.

Its tokens are its own: a request is its messages as ``role: text`` lines, one token per
``chars_per_token`` characters (the simulator and chainray count differently). It caches the
way OpenAI documents: a prefix of at least ``min_tokens`` tokens, in ``block`` steps, only an
exact one, and an entry becomes usable when the request that wrote it sends its first token
(before that, requests with the same prefix miss, as Anthropic documents for its cache).
Cached tokens prefill ``cached_speedup`` times faster. With ``stream`` a request that asks for
a stream is answered as one (server-sent events, the usage chunk last).

    server = CacheServer(ttft_s=0.3, tokens_per_s=200)
    with server.running() as base_url:
        ...
    server.bill.cost(prices)          # USD at input, cached-input and output prices
    server.requests                   # [{"tag", "start", "first", "end", "prompt", "cached"}]
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field

from aiohttp import web

from tests.plain_server import PlainServer

__all__ = ["CacheServer", "Bill"]


@dataclass
class Bill:
    """What the server charged, in its own tokens."""

    input_tokens: int = 0  # every prompt token, cached ones included (as OpenAI counts)
    cached_tokens: int = 0
    output_tokens: int = 0

    def cost(self, input_usd: float, cached_usd: float, output_usd: float) -> float:
        """USD at these prices per million tokens."""
        return ((self.input_tokens - self.cached_tokens) * input_usd
                + self.cached_tokens * cached_usd + self.output_tokens * output_usd) / 1e6


@dataclass
class CacheServer(PlainServer):
    ttft_s: float = 0.3                # time to first token of an uncached prompt ...
    prefill_s_per_token: float = 0.0001  # ... plus this per uncached prompt token
    cached_speedup: float = 10.0       # a cached token prefills this many times faster
    tokens_per_s: float = 200.0        # decoding
    chars_per_token: int = 4
    min_tokens: int = 1024
    block: int = 128
    fail_tags: set[str] = field(default_factory=set)  # steps answered 400 (not retried)
    # The first stream pauses after its first token until this many requests in all have
    # arrived (at most 10 s): a test sees who was released by the first token, not the end.
    hold_first_stream: int = 0
    stream: bool = True
    bill: Bill = field(default_factory=Bill)
    requests: list[dict] = field(default_factory=list)
    usable: set[str] = field(default_factory=set)  # digests of prefixes whose writer answers

    def reset(self) -> None:
        """A cold cache and an empty bill (between runs of a benchmark)."""
        self.usable.clear()
        self.bill = Bill()
        self.requests.clear()
        self.log.clear()
        self.start_times.clear()

    def _tokens(self, body: dict) -> list[str]:
        text = "".join(f"{m.get('role')}: {m.get('content') or ''}\n" for m in body["messages"])
        step = self.chars_per_token
        return [text[i:i + step] for i in range(0, len(text), step)]

    def _prefixes(self, tokens: list[str]) -> list[tuple[int, str]]:
        """(length, digest) of every cacheable prefix of ``tokens``, shortest first."""
        found, digest, done = [], hashlib.sha256(), 0
        for length in range(self.min_tokens, len(tokens) + 1, self.block):
            digest.update("".join(tokens[done:length]).encode())
            done = length
            found.append((length, digest.copy().hexdigest()))
        return found

    async def chat(self, request: web.Request) -> web.StreamResponse:
        start, tag = time.time(), request.headers.get("x-chainray-step", "").rsplit(":", 1)[-1]
        self.start_times.append(start)
        body = await request.json()
        if tag in self.fail_tags:
            return web.json_response({"error": {"message": "refused", "type": "invalid",
                                                "param": None, "code": "refused"}}, status=400)
        tokens = self._tokens(body)
        prefixes = self._prefixes(tokens)
        cached = max((n for n, d in prefixes if d in self.usable), default=0)
        completion = min(self.completion_tokens, int(body.get("max_tokens") or 10**6))
        entry = {"tag": tag, "start": start, "prompt": len(tokens), "cached": cached,
                 "completion": completion}
        self.requests.append(entry)
        self.bill.input_tokens += len(tokens)
        self.bill.cached_tokens += cached
        self.bill.output_tokens += completion
        await asyncio.sleep(self.ttft_s + self.prefill_s_per_token * (
            len(tokens) - cached + cached / self.cached_speedup))
        entry["first"] = time.time()
        self.usable.update(d for _, d in prefixes)  # the writer's first token: now usable
        usage = {"prompt_tokens": len(tokens), "completion_tokens": completion,
                 "total_tokens": len(tokens) + completion,
                 "prompt_tokens_details": {"cached_tokens": cached}}
        decode_s = max(0, completion - 1) / self.tokens_per_s
        if self.stream and body.get("stream"):
            response = await self._streamed(request, body, completion, usage, decode_s,
                                            entry)
        else:
            await asyncio.sleep(decode_s)
            response = web.json_response({
                "id": "chatcmpl-cache", "object": "chat.completion", "created": int(start),
                "model": body.get("model", "m"),
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "word " * completion}}],
                "usage": usage})
        entry["end"] = time.time()
        self.log.append({"tag": tag, "start": start, "end": entry["end"], "status": 200})
        return response

    async def _hold(self, entry: dict) -> None:
        if self.hold_first_stream and entry is self.requests[0]:
            for _ in range(1000):  # 10 s at most
                if len(self.start_times) >= self.hold_first_stream:
                    entry["held_until_others"] = True
                    return
                await asyncio.sleep(0.01)

    async def _streamed(self, request: web.Request, body: dict, completion: int, usage: dict,
                        decode_s: float, entry: dict) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chunk = {"id": "chatcmpl-cache", "object": "chat.completion.chunk",
                 "created": int(time.time()), "model": body.get("model", "m")}

        async def send(**fields) -> None:
            await response.write(f"data: {json.dumps({**chunk, **fields})}\n\n".encode())

        await send(choices=[{"index": 0, "delta": {"role": "assistant", "content": "word "},
                             "finish_reason": None}])
        await self._hold(entry)
        pieces = max(1, min(completion - 1, 20))  # a few chunks carry the rest of the decode
        for i in range(pieces):
            await asyncio.sleep(decode_s / pieces)
            words = (completion - 1) // pieces + (i < (completion - 1) % pieces)
            await send(choices=[{"index": 0, "delta": {"content": "word " * words},
                                 "finish_reason": None}])
        await send(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}])
        if (body.get("stream_options") or {}).get("include_usage"):
            await send(choices=[], usage=usage)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
