"""A fixture server (not the simulator) that answers every request quickly except the ones it
is told to hold: the ``k``-th request it receives (counting from 1) takes ``slow_s``. For
hedging tests: it says which requests it answered and which the client gave up on.

    server = StragglerServer(slow={11}, slow_s=5.0)
    with server.running() as base_url:
        ...
    server.log    # [{"n", "tag", "start", "end", "status"}]; 499: the client had left when
                  # the answer was ready
"""

from __future__ import annotations

import asyncio
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

    async def chat(self, request: web.Request) -> web.Response:
        self.received += 1
        entry = {"n": self.received, "tag": request.headers.get("x-chainray-step", ""),
                 "start": time.time(), "end": None, "status": 499}
        self.log.append(entry)
        body = await request.json()
        await asyncio.sleep(self.slow_s if entry["n"] in self.slow else self.latency_s)
        if request.transport is None or request.transport.is_closing():
            return web.Response(status=499)  # nobody to answer: the client went away
        entry.update(end=time.time(), status=200)
        return web.json_response({
            "id": f"chatcmpl-{entry['n']}", "object": "chat.completion",
            "created": int(entry["start"]), "model": body.get("model", "m"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": f"answer {entry['n']}"}}],
            "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
                      "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS}})
