"""Hedged stragglers: a request slower than most of its model's gets one duplicate.

The timer starts when the first request leaves (after its permit), so a request queued behind
the rate limit is not a straggler; the duplicate takes its own permit and spend reservation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["Charge", "hedged"]


class Charge:
    """What a request is settled at when it ends without a reply of its own."""

    def __init__(self) -> None:
        self.loser: tuple[int, int] | None = None  # a hedge's cancelled duplicate
        self.sent = asyncio.Event()  # set when the first request leaves (hedge timer start)
        self.sent_at = 0.0  # time.monotonic() then

    def leave(self) -> None:
        """A request leaves; the first one starts the hedge timer."""
        if not self.sent.is_set():
            self.sent_at = time.monotonic()
            self.sent.set()


async def hedged(send: Callable[[bool], Awaitable[Any]],
                 threshold: Callable[[], Awaitable[float | None]], charge: Charge) -> Any:
    """Send; if no answer ``threshold()`` seconds after the request left, send one duplicate
    and take whichever answers first; the other is cancelled and, if it was sent, charged as
    much as the winner (the server counts a request it started; the usage of a cancelled one
    is not known). ``send(duplicate)`` makes one request. ``threshold`` is asked once the
    request is on its way, so that what it looks up never delays the request; None: no hedge.
    """
    first = asyncio.ensure_future(send(False))
    tasks = {first}
    try:
        sent = asyncio.ensure_future(charge.sent.wait())
        # Bounded: the first request's permit wait and request have deadlines of their own.
        await asyncio.wait({first, sent}, return_when=asyncio.FIRST_COMPLETED)
        sent.cancel()
        limit = asyncio.ensure_future(threshold())
        tasks.add(limit)  # bounded by the look-up's own timeout; cancelled in finally
        await asyncio.wait({first, limit}, return_when=asyncio.FIRST_COMPLETED)
        if first.done() or limit.exception() is not None or limit.result() is None:
            return await first
        left = limit.result() - (time.monotonic() - charge.sent_at)
        done, _ = await asyncio.wait({first}, timeout=max(0.0, left))
        if done:
            return first.result()
        tasks.add(asyncio.ensure_future(send(True)))
        pending, error = tasks - {limit}, None
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.exception() is None:
                    completion, seconds = task.result()
                    # The other is cancelled (finally); if it was sent, it is charged this.
                    charge.loser = (completion.prompt_tokens, completion.completion_tokens)
                    return completion, seconds
                error = error or task.exception()
        raise error  # type: ignore[misc]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
