"""Whether a request left: its first bytes went to the connection (the server may have seen it).

A request counts in ``api_calls`` once it has a permit; one that never reached the server (a
hedge's loser cancelled while it waited for a connection, a connection refused) is taken out
again. httpcore's ``trace`` extension, which the client's request hook attaches to every
request, says when the request starts to be written: from then on it counts (bytes handed to
the socket may arrive although a cancellation stops the write before its end is reported).
The request's task reads it through a context variable, so concurrent calls on one client
each learn their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

__all__ = ["Departure", "departure", "attach_trace"]

_WRITING = ("http11.send_request_headers.started", "http2.send_request_headers.started")


@dataclass
class Departure:
    """What the HTTP layer said of one request: whether it is traced at all (the client's
    request hook ran: a client without it says nothing) and whether it began to write it."""

    traced: bool = False
    written: bool = False

    @property
    def left(self) -> bool:
        """May the server have seen it? Unknown (no trace) counts as yes."""
        return self.written or not self.traced


_current: ContextVar[Departure | None] = ContextVar("chainray_departure", default=None)


@contextmanager
def departure() -> Iterator[Departure]:
    """The departure of the request sent inside the block (and tasks it starts)."""
    state = Departure()
    token = _current.set(state)
    try:
        yield state
    finally:
        _current.reset(token)


async def _trace(event: str, info: dict[str, Any]) -> None:
    if (state := _current.get()) is not None:
        state.written = state.written or event in _WRITING


async def attach_trace(request: Any) -> None:
    """An httpx request hook: every request reports its departure from here on."""
    if (state := _current.get()) is not None:
        state.traced = True
    request.extensions["trace"] = _trace
