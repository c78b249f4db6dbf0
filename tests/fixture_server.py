"""A hostile OpenAI-compatible server for tests: named misbehaviours, and a count of what it saw.

Not the simulator: it shares no code with ``chainray.sim`` and answers the way a broken or
unfriendly endpoint does. ``behave(name, times)`` makes the next ``times`` requests misbehave
(every request when ``times`` is None), then it answers normally. ``requests`` counts every
chat completion request that reached it, finished or not.

    with FixtureServer() as server:
        server.behave("bad_json", times=1)
        ...  # point chainray at server.base_url
        assert server.requests == 2
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from email.utils import formatdate

from aiohttp import web

__all__ = ["FixtureServer", "MISBEHAVIOURS", "MARKUP_TEXT"]

# Text that Rich would render (or crash on) and escapes a terminal would obey.
MARKUP_TEXT = ("[/INST] [bold red]red[/] [link=http://127.0.0.1/x]link[/link] "
               "\x1b[2J\x1b]8;;http://127.0.0.1/evil\x1b\\osc\x1b]8;;\x1b\\ \x07bell \u202eabc")
DRIP_BYTES = 40  # a drip ends by itself after this many seconds


def _completion(content: str | None = "fixture answer", finish: str = "stop",
                usage: bool = True, **message) -> dict:
    body = {"id": "chatcmpl-fixture", "object": "chat.completion", "created": int(time.time()),
            "model": "fixture", "choices": [{"index": 0, "finish_reason": finish,
                                             "message": {"role": "assistant",
                                                         "content": content, **message}}]}
    if usage:
        body["usage"] = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    return body


def _error(status: int, message: str, code: str | None, kind: str,
           headers: dict | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "code": code,
                                        "param": None}}, status=status, headers=headers)


def _rate_limited(retry_after: str) -> web.Response:
    return _error(429, "Rate limit reached for requests", "rate_limit_exceeded", "requests",
                  {"retry-after": retry_after})


async def _drip(request: web.Request) -> web.StreamResponse:
    body = json.dumps(_completion()).encode()
    response = web.StreamResponse(headers={"content-type": "application/json",
                                           "content-length": str(len(body))})
    await response.prepare(request)
    try:
        for byte in body[:DRIP_BYTES]:
            await response.write(bytes([byte]))
            await asyncio.sleep(1.0)
    except (ConnectionError, RuntimeError):
        pass  # the client gave up, as it should
    request.transport and request.transport.close()
    return response


async def _reset(request: web.Request) -> web.StreamResponse:
    body = json.dumps(_completion()).encode()
    response = web.StreamResponse(headers={"content-type": "application/json",
                                           "content-length": str(len(body))})
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    await asyncio.sleep(0.05)
    if request.transport is not None:
        request.transport.abort()  # a reset in the middle of the body
    return response


async def _missing_model(request: web.Request) -> web.Response:
    body = await request.json()
    if str(body.get("model", "")).startswith("gone"):
        return _error(404, f"The model `{body['model']}` does not exist or you do not have "
                      "access to it.", "model_not_found", "invalid_request_error")
    return web.json_response(_completion())


async def _corrects_itself(request: web.Request) -> web.Response:
    """Plain text first; valid JSON once told its reply was rejected (as a model would)."""
    body = await request.json()
    told = "rejected" in str(body["messages"][-1].get("content", ""))
    return web.json_response(_completion('{"intent": "bug"}' if told else "It is a bug."))


def _fixed(response):
    async def handler(request: web.Request):
        return response() if callable(response) else response
    return handler


MISBEHAVIOURS = {
    "ok": _fixed(lambda: web.json_response(_completion())),
    "bad_json": _fixed(lambda: web.Response(text='{"choices": [{"message": ',
                                            content_type="application/json")),
    "html": _fixed(lambda: web.Response(text="<html><body>502 Bad Gateway</body></html>",
                                        content_type="text/html")),
    "empty_choices": _fixed(lambda: web.json_response({**_completion(), "choices": []})),
    "missing_usage": _fixed(lambda: web.json_response(_completion(usage=False))),
    "length": _fixed(lambda: web.json_response(_completion("cut sho", finish="length"))),
    "null_content": _fixed(lambda: web.json_response(_completion(None))),
    "refusal": _fixed(lambda: web.json_response(_completion(None, refusal="I can't help."))),
    "retry_after_garbage": _fixed(lambda: _rate_limited("soon-ish")),
    "retry_after_negative": _fixed(lambda: _rate_limited("-5")),
    "retry_after_nan": _fixed(lambda: _rate_limited("NaN")),
    "retry_after_http_date": _fixed(lambda: _rate_limited(formatdate(time.time() + 1,
                                                                     usegmt=True))),
    "retry_after_3600": _fixed(lambda: _rate_limited("3600")),
    "insufficient_quota": _fixed(lambda: _error(
        429, "You exceeded your current quota", "insufficient_quota", "insufficient_quota")),
    "context_length_exceeded": _fixed(lambda: _error(
        400, "This model's maximum context length is 128000 tokens",
        "context_length_exceeded", "invalid_request_error")),
    "missing_model": _missing_model,
    "corrects_itself": _corrects_itself,
    "unauthorized": _fixed(lambda: _error(401, "Incorrect API key provided.",
                                          "invalid_api_key", "invalid_request_error")),
    "drip": _drip,
    "reset": _reset,
    "markup": _fixed(lambda: web.json_response(_completion(MARKUP_TEXT))),
    "error_markup": _fixed(lambda: _error(400, "bad request " + MARKUP_TEXT, None,
                                          "invalid_request_error")),
}


class FixtureServer:
    """The hostile server on a free loopback port, in a thread of its own."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host, self.port = host, 0
        self.requests = 0
        self.models: list[str] = []  # the model each request named, in order
        self.mode, self.times = "ok", None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: web.AppRunner | None = None
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def behave(self, mode: str, times: int | None = None) -> None:
        """Misbehave as ``mode`` for the next ``times`` requests (None: all); count from 0."""
        if mode not in MISBEHAVIOURS:
            raise KeyError(f"no misbehaviour {mode!r}; known: {', '.join(MISBEHAVIOURS)}")
        with self.lock:
            self.mode, self.times, self.requests = mode, times, 0
            self.models = []

    def _next_mode(self) -> str:
        with self.lock:
            self.requests += 1
            if self.times is not None:
                if self.times <= 0:
                    return "ok"
                self.times -= 1
            return self.mode

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        mode = self._next_mode()
        body = await request.read()
        try:
            self.models.append(str(json.loads(body).get("model")))
        except (ValueError, AttributeError):
            self.models.append("")
        return await MISBEHAVIOURS[mode](request)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self.runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    def start(self) -> FixtureServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=10)
        return self

    def stop(self) -> None:
        if self.runner is not None:
            future = asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop)
            try:
                future.result(timeout=10)
            except Exception:
                pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    def __enter__(self) -> FixtureServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
