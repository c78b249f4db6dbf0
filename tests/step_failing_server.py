"""A fixture server that fails the steps it is told to (by the x-chainray-step header), and
remembers which steps it was sent: for on_error isolate and resume tests."""

from __future__ import annotations

from aiohttp import web
from fixture_server import FixtureServer, _completion, _error

__all__ = ["StepFailingServer"]


class StepFailingServer(FixtureServer):
    def __init__(self, failing: set[str]) -> None:
        super().__init__()
        self.failing = set(failing)  # step ids (the last part of the step tag)
        self.sent: list[str] = []

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        step = request.headers.get("x-chainray-step", "").rsplit(":", 1)[-1]
        with self.lock:
            self.requests += 1
            self.sent.append(step)
        await request.read()
        if step in self.failing:
            return _error(400, f"this server refuses step {step}", "refused",
                          "invalid_request_error")
        return web.json_response(_completion(f"answer of {step}"))
