"""A fixture server (not the simulator) that answers every request quickly except the ones it
is told to hold: the ``k``-th request it receives (counting from 1) takes ``slow_s`` before it
answers (``slow``), or streams its chunks ``slow_s`` apart (``slow_pace``, a slow decoder). For
hedging tests: it says which requests it answered and which the client gave up on.

    server = StragglerServer(slow={11}, slow_s=5.0)
    with server.running() as base_url:
        ...
    server.log    # [{"n", "tag", "start", "end", "status", "chunks", "left", "messages"}];
                  # 499: the client had left when the answer was ready; a request with
                  # ``stream`` is answered as a stream (``chunks`` content chunks sent)
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

from aiohttp import web
from plain_server import PlainServer

__all__ = ["StragglerServer", "PROMPT_TOKENS", "COMPLETION_TOKENS"]

PROMPT_TOKENS, COMPLETION_TOKENS = 13, 17  # every answer's usage


@dataclass
class StragglerServer(PlainServer):
    slow: set[int] = field(default_factory=set)  # which requests (1-based) are slow
    slow_s: float = 5.0
    received: int = 0
    chunk_s: float = 0.1  # a streamed answer: COMPLETION_TOKENS chunks this far apart
    slow_pace: set[int] = field(default_factory=set)  # streamed with chunks slow_s apart
    chunk_chars: int = 0  # characters added to each chunk's word

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.received += 1
        entry = {"n": self.received, "tag": request.headers.get("x-chainray-step", ""),
                 "start": time.time(), "end": None, "status": 499, "chunks": 0,
                 "left": None}
        self.log.append(entry)
        body = await request.json()
        entry["messages"] = body["messages"]
        if body.get("stream"):
            return await self._stream(request, entry, body)
        await asyncio.sleep(self.slow_s if entry["n"] in self.slow else self.latency_s)
        if _gone(request):
            return web.Response(status=499)  # nobody to answer: the client went away
        entry.update(end=time.time(), status=200)
        return web.json_response({
            "id": f"chatcmpl-{entry['n']}", "object": "chat.completion",
            "created": int(entry["start"]), "model": body.get("model", "m"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": f"answer {entry['n']}"}}],
            "usage": _usage()})

    async def _stream(self, request: web.Request, entry: dict,
                      body: dict) -> web.StreamResponse:
        """Unlike the simulator, the headers and an empty role chunk go out at once; a slow
        request is held before its first content token, and notices a client that leaves
        within 10 ms (``left``)."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chunk = {"id": f"chatcmpl-{entry['n']}", "object": "chat.completion.chunk",
                 "created": int(entry["start"]), "model": body.get("model", "m")}

        async def send(delta: dict | None, **extra) -> None:
            choices = [] if delta is None else [{"index": 0, "delta": delta,
                                                 "finish_reason": extra.pop("finish", None)}]
            await response.write(f"data: {json.dumps({**chunk, 'choices': choices, **extra})}"
                                 "\n\n".encode())

        await send({"role": "assistant", "content": ""})
        wait_until = time.monotonic() + (self.slow_s if entry["n"] in self.slow
                                         else self.latency_s)
        while time.monotonic() < wait_until:
            if _gone(request):
                entry["left"] = time.time()
                return response
            await asyncio.sleep(0.01)
        for i in range(COMPLETION_TOKENS):
            if _gone(request):
                entry["left"] = time.time()
                return response
            await send({"content": f"w{i} " + "x" * self.chunk_chars})
            entry["chunks"] += 1
            await asyncio.sleep(self.slow_s if entry["n"] in self.slow_pace else self.chunk_s)
        await send({}, finish="stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            await send(None, usage=_usage())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        entry.update(end=time.time(), status=200)
        return response


def _gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


def _usage() -> dict:
    return {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS}
