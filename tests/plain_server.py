"""A plain OpenAI-compatible chat server that is not our simulator: no rate-limit headers, a
fixed latency per step (named by the ``x-chainray-step`` header's last part), optional scripted
429s. Tests and ``benchmarks/vs_asyncio.py`` use it so that the simulator is not the judge.
With ``cached_tokens`` its usage reports that many prompt tokens as cached
(``prompt_tokens_details.cached_tokens``, as OpenAI does); with ``stream`` a request that asks
for a stream is answered as one (server-sent events, the usage chunk last).

    server = PlainServer(latency_s=0.2, step_latency_s={"hardware": 0.6})
    with server.running() as base_url:
        ...                                   # point a client at base_url (ends in /v1)
    server.log                                # [{"tag", "start", "end", "status"}, ...]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from aiohttp import web

__all__ = ["PlainServer", "serve_routes"]


@dataclass
class PlainServer:
    latency_s: float = 0.2
    step_latency_s: dict[str, float] = field(default_factory=dict)
    completion_tokens: int = 40
    rate_limit_first: int = 0          # answer this many requests 429 ...
    retry_after: str | None = None     # ... with this Retry-After header (None: none)
    cached_tokens: int = 0             # prompt tokens each answer reports as cached
    stream: bool = False               # answer a request for a stream as a stream
    log: list[dict] = field(default_factory=list)  # one entry per answered request
    start_times: list[float] = field(default_factory=list)  # one per request received

    @property
    def started(self) -> int:
        return len(self.start_times)

    async def chat(self, request: web.Request) -> web.Response:
        start, tag = time.time(), request.headers.get("x-chainray-step", "")
        self.start_times.append(start)
        body = await request.json()
        if self.rate_limit_first > 0:
            self.rate_limit_first -= 1
            self.log.append({"tag": tag, "start": start, "end": time.time(), "status": 429})
            headers = {"retry-after": self.retry_after} if self.retry_after else {}
            return web.json_response({"error": {"message": "slow down", "type": "requests",
                                                "param": None, "code": "rate_limit_exceeded"}},
                                     status=429, headers=headers)
        await asyncio.sleep(self.step_latency_s.get(tag.rsplit(":", 1)[-1], self.latency_s))
        prompt = " ".join(str(m.get("content", "")) for m in body["messages"])
        completion = min(self.completion_tokens, int(body.get("max_tokens") or 10**6))
        self.log.append({"tag": tag, "start": start, "end": time.time(), "status": 200})
        usage = {"prompt_tokens": len(prompt) // 4, "completion_tokens": completion,
                 "total_tokens": len(prompt) // 4 + completion}
        if self.cached_tokens:
            usage["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        if self.stream and body.get("stream"):
            return await self._stream(request, body, completion, usage)
        return web.json_response({
            "id": "chatcmpl-plain", "object": "chat.completion", "created": int(start),
            "model": body.get("model", "m"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "word " * completion}}],
            "usage": usage})

    async def _stream(self, request: web.Request, body: dict, completion: int,
                      usage: dict) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chunk = {"id": "chatcmpl-plain", "object": "chat.completion.chunk",
                 "created": int(time.time()), "model": body.get("model", "m")}
        deltas = [{"role": "assistant", "content": ""},
                  *({"content": "word "} for _ in range(completion))]
        for delta in deltas:
            choice = {"index": 0, "delta": delta, "finish_reason": None}
            await response.write(f"data: {json.dumps({**chunk, 'choices': [choice]})}\n\n"
                                 .encode())
        choice = {"index": 0, "delta": {}, "finish_reason": "stop"}
        await response.write(f"data: {json.dumps({**chunk, 'choices': [choice]})}\n\n".encode())
        if (body.get("stream_options") or {}).get("include_usage"):
            last = {**chunk, "choices": [], "usage": usage}
            await response.write(f"data: {json.dumps(last)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    @contextlib.contextmanager
    def running(self) -> Iterator[str]:
        """Serve on a free loopback port in a thread; yields the base URL."""
        with serve_routes([web.post("/v1/chat/completions", self.chat)]) as base_url:
            yield base_url


@contextlib.contextmanager
def serve_routes(routes: list) -> Iterator[str]:
    """Serve aiohttp ``routes`` on a free loopback port in a thread; yields the base URL (ends
    in /v1). The fixture servers' one way to listen."""
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
