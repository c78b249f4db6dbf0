"""A fixture server with a latency profile, for planning-accuracy tests and benchmarks.

Not the simulator: it shares no code with ``chainray.sim`` (so the simulator is not the judge
of plans learned from it) and sends no rate-limit headers. It answers OpenAI chat completions,
streamed or not, the way a self-hosted engine does:

- the first token comes ``ttft_s`` (+ ``prefill_s_per_token`` per prompt token) after the
  request arrives;
- a reply is as long as the "model" wants, whatever ``max_tokens`` says: ``reply_tokens``,
  plus ``hash(prompt) % (reply_spread + 1)`` (the same prompt always gets the same length), or
  ``step_reply_tokens[step]`` for a step named by the ``x-chainray-step`` header's last part;
  ``finish_reason`` stays ``stop`` (set ``honour_max_tokens`` for a server that truncates);
- ``slots`` requests decode at ``tokens_per_s`` each; with ``k > slots`` decoding at once each
  decodes at ``tokens_per_s * slots / k`` (vLLM, Ollama, llama.cpp, TGI share one batch);
  ``slots=None``: every request at full speed.

It counts every request and token it served: ``server.counts()`` in the same process, or
``GET {root}/counts`` (root = the base URL without ``/v1``) from another; ``server.log`` holds
one entry per request (tag, stream, start, first_token, end, prompt/completion tokens, status,
peak number decoding at once).

    server = ProfileServer(ttft_s=0.2, tokens_per_s=50, reply_tokens=120, slots=4)
    with server.running() as base_url:        # http://127.0.0.1:<port>/v1, loopback only
        ...
    server.counts()   # {"requests": 7, "streamed": 3, "prompt_tokens": ..., ...}

Import it from tests (``from profile_server import ProfileServer``) or from the repository root
(``from tests.profile_server import ProfileServer``, as ``benchmarks/`` does); it imports
nothing else from ``tests/``. ``python tests/profile_server.py --slots 4`` serves it in its own
process and prints the base URL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from aiohttp import web

__all__ = ["ProfileServer"]

TICK_S = 0.01  # a decoding request wakes at most this often (or once a token, if slower)
START_STOP_TIMEOUT_S = 10.0


@dataclass
class ProfileServer:
    ttft_s: float = 0.2
    tokens_per_s: float = 50.0
    reply_tokens: int = 100
    reply_spread: int = 0
    step_reply_tokens: dict[str, int] = field(default_factory=dict)
    slots: int | None = None
    prefill_s_per_token: float = 0.0
    honour_max_tokens: bool = False
    log: list[dict] = field(default_factory=list)
    decoding: int = 0  # requests decoding right now

    def __post_init__(self) -> None:
        if self.tokens_per_s <= 0 or self.reply_tokens < 1 or (self.slots or 1) < 1:
            raise ValueError("tokens_per_s > 0, reply_tokens >= 1 and slots >= 1 (or None)")
        self._lock = threading.Lock()  # log and counts are read from other threads

    # -- what it served ---------------------------------------------------------------------
    def counts(self) -> dict:
        """Every request and token served so far (a request the client left counts the
        tokens it was sent)."""
        with self._lock:
            entries = list(self.log)
        by_step: dict[str, int] = {}
        for entry in entries:
            step = entry["tag"].rsplit(":", 1)[-1]
            by_step[step] = by_step.get(step, 0) + 1
        return {"requests": len(entries),
                "streamed": sum(e["stream"] for e in entries),
                "finished": sum(e["status"] == 200 for e in entries),
                "prompt_tokens": sum(e["prompt_tokens"] for e in entries),
                "completion_tokens": sum(e["completion_tokens"] for e in entries),
                "peak_decoding": max((e["peak_decoding"] for e in entries), default=0),
                "by_step": by_step}

    def reset(self) -> None:
        with self._lock:
            self.log.clear()

    def reply_length(self, prompt: str, step: str) -> int:
        """The tokens the "model" wants to write for this prompt (max_tokens aside)."""
        if step in self.step_reply_tokens:
            return self.step_reply_tokens[step]
        digest = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:4], "big")
        return self.reply_tokens + digest % (self.reply_spread + 1)

    def rate(self) -> float:
        """Tokens per second each decoding request gets right now."""
        if self.slots is None or self.decoding <= self.slots:
            return self.tokens_per_s
        return self.tokens_per_s * self.slots / self.decoding

    # -- serving ----------------------------------------------------------------------------
    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        tag = request.headers.get("x-chainray-step", "")
        prompt = " ".join(str(m.get("content", "")) for m in body.get("messages", []))
        want = self.reply_length(prompt, tag.rsplit(":", 1)[-1])
        limit = int(body.get("max_tokens") or body.get("max_completion_tokens") or 0)
        cut = self.honour_max_tokens and 0 < limit < want
        entry = {"tag": tag, "stream": bool(body.get("stream")), "start": time.time(),
                 "first_token": None, "end": None, "prompt_tokens": max(1, len(prompt) // 4),
                 "completion_tokens": 0, "max_tokens": limit or None, "status": 499,
                 "peak_decoding": 0}
        with self._lock:
            self.log.append(entry)
        reply = _Reply(entry, body.get("model", "profile"), limit if cut else want,
                       "length" if cut else "stop")
        await asyncio.sleep(self.ttft_s + self.prefill_s_per_token * entry["prompt_tokens"])
        if entry["stream"]:
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return await self._stream(request, reply, include_usage)
        await self._decode(request, reply, None)
        if _gone(request):
            return web.Response(status=499)
        entry.update(end=time.time(), status=200)
        return web.json_response(reply.completion())

    async def _stream(self, request: web.Request, reply: _Reply,
                      include_usage: bool) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(reply.chunk({"role": "assistant", "content": ""}))
        if not await self._decode(request, reply, response):
            return response
        await response.write(reply.chunk({}, finish=reply.finish))
        if include_usage:
            await response.write(reply.chunk(None, usage=reply.usage()))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        reply.entry.update(end=time.time(), status=200)
        return response

    async def _decode(self, request: web.Request, reply: _Reply,
                      response: web.StreamResponse | None) -> bool:
        """Write the reply's tokens at this request's share of the throughput; False when the
        client left. Progress accrues from measured time, so sleep overshoot costs nothing."""
        entry, done, progress = reply.entry, 0, 0.0
        self.decoding += 1
        try:
            last = time.monotonic()
            while done < reply.tokens:
                entry["peak_decoding"] = max(entry["peak_decoding"], self.decoding)
                await asyncio.sleep(max(TICK_S, 1.0 / self.rate()))
                now = time.monotonic()
                progress += (now - last) * self.rate()
                last = now
                due = min(reply.tokens, int(progress)) - done
                if _gone(request):
                    return False
                for _ in range(due):
                    if response is not None:
                        await response.write(reply.chunk({"content": f"w{done} "}))
                    done += 1
                    entry["completion_tokens"] = done
                    entry["first_token"] = entry["first_token"] or time.time()
            return True
        except (ConnectionError, RuntimeError):
            return False  # the client went away mid-write
        finally:
            self.decoding -= 1

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes([web.post("/v1/chat/completions", self.chat),
                        web.get("/counts", self._counts)])
        return app

    async def _counts(self, request: web.Request) -> web.Response:
        return web.json_response(self.counts())

    @contextlib.contextmanager
    def running(self, port: int = 0) -> Iterator[str]:
        """Serve on a loopback port (free when 0) in a thread; yields the base URL. Start and
        stop each wait at most ``START_STOP_TIMEOUT_S``."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True,
                                  name="profile-server")
        thread.start()
        runner = web.AppRunner(self.app(), access_log=None)

        async def start() -> int:
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", port)
            await site.start()
            return site._server.sockets[0].getsockname()[1]

        try:
            bound = asyncio.run_coroutine_threadsafe(start(), loop).result(
                timeout=START_STOP_TIMEOUT_S)
            yield f"http://127.0.0.1:{bound}/v1"
        finally:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(
                    timeout=START_STOP_TIMEOUT_S)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=START_STOP_TIMEOUT_S)
            if not thread.is_alive():
                loop.close()


@dataclass
class _Reply:
    entry: dict
    model: str
    tokens: int
    finish: str

    def usage(self) -> dict:
        prompt, completion = self.entry["prompt_tokens"], self.entry["completion_tokens"]
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion}

    def completion(self) -> dict:
        text = " ".join(f"w{i}" for i in range(self.tokens))
        return {"id": "chatcmpl-profile", "object": "chat.completion",
                "created": int(self.entry["start"]), "model": self.model,
                "choices": [{"index": 0, "finish_reason": self.finish,
                             "message": {"role": "assistant", "content": text}}],
                "usage": self.usage()}

    def chunk(self, delta: dict | None, finish: str | None = None, **extra) -> bytes:
        choices = [] if delta is None else [{"index": 0, "delta": delta,
                                             "finish_reason": finish}]
        body = {"id": "chatcmpl-profile", "object": "chat.completion.chunk",
                "created": int(self.entry["start"]), "model": self.model,
                "choices": choices, **extra}
        return f"data: {json.dumps(body)}\n\n".encode()


def _gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ttft", type=float, default=0.2, help="seconds to the first token")
    parser.add_argument("--tokens-per-s", type=float, default=50.0)
    parser.add_argument("--reply-tokens", type=int, default=100)
    parser.add_argument("--reply-spread", type=int, default=0)
    parser.add_argument("--slots", type=int, default=None)
    args = parser.parse_args()
    server = ProfileServer(ttft_s=args.ttft, tokens_per_s=args.tokens_per_s,
                           reply_tokens=args.reply_tokens, reply_spread=args.reply_spread,
                           slots=args.slots)
    with server.running(args.port) as base_url:
        print(base_url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
