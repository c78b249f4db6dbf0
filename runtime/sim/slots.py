"""Decode throughput shared the way a self-hosted engine shares it (vLLM, Ollama, llama.cpp,
TGI): ``slots`` requests decode at full speed; with ``k > slots`` decoding at once, each
decodes at ``slots / k`` of it (one batch, one GPU). ``slots=None``: every request at full
speed, as a hosted API behaves.

Processor sharing on a virtual clock: the clock advances at ``share()`` per wall second, the
same for every request decoding, so a token due ``d`` full-speed seconds after a request's
first token is sent once the clock has advanced ``d`` since that token. A request joining or
leaving changes the share, and wakes the waiting requests to recompute when their next token
is due. Measured time drives the clock, so a late wake-up costs no throughput.

    slots = DecodeSlots(2)
    await slots.decode(due, send)   # due[i]: full-speed seconds from token 0 to token i
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable, Sequence

__all__ = ["DecodeSlots", "Decoded", "due_times"]

_EPSILON_S = 1e-6

Send = Callable[[int, int], Awaitable[None]]  # tokens [sent, ready) are due: send them


def due_times(itl_s: Sequence[float]) -> list[float]:
    """When each token is due, in full-speed seconds after the first, from the pauses
    before each token after the first."""
    return list(itertools.accumulate(itl_s, initial=0.0))


class Decoded:
    """What one request's decode saw: wall seconds from its first token to its last, and the
    most requests decoding at once while it did."""

    __slots__ = ("seconds", "peak")

    def __init__(self) -> None:
        self.seconds = 0.0
        self.peak = 0


class DecodeSlots:
    def __init__(self, slots: int | None) -> None:
        if slots is not None and slots < 1:
            raise ValueError(f"slots must be at least 1 (or None), got {slots}")
        self.slots = slots
        self.decoding = 0
        self.peak = 0
        self._clock = 0.0  # virtual seconds at ``_at`` (wall, monotonic)
        self._at = time.monotonic()
        self._changed = asyncio.Event()
        self._active: set[Decoded] = set()

    def share(self) -> float:
        """Share of full decode speed each request gets right now."""
        if self.slots is None or self.decoding <= self.slots:
            return 1.0
        return self.slots / self.decoding

    def clock(self) -> float:
        return self._clock + (time.monotonic() - self._at) * self.share()

    def _change(self, decoded: Decoded, joins: bool) -> None:
        self._clock, self._at = self.clock(), time.monotonic()
        if joins:
            self._active.add(decoded)
        else:
            self._active.discard(decoded)
        self.decoding = len(self._active)
        self.peak = max(self.peak, self.decoding)
        for other in self._active:
            other.peak = max(other.peak, self.decoding)
        if self.slots is not None:  # the share may have changed: waiters recompute
            self._changed.set()
            self._changed = asyncio.Event()

    async def _until(self, clock: float, not_before: float) -> None:
        """Sleep until the virtual clock reaches ``clock`` and the wall ``not_before``."""
        while True:
            wall_left = not_before - time.monotonic()
            clock_left = clock - self.clock()
            if wall_left <= _EPSILON_S and clock_left <= _EPSILON_S:
                return
            wait = max(wall_left, clock_left / self.share(), _EPSILON_S)
            if self.slots is None:
                await asyncio.sleep(wait)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), wait)

    async def decode(self, due: Sequence[float], send: Send | None = None,
                     chunk_s: float = 0.0) -> Decoded:
        """Decode tokens due at ``due`` (full-speed seconds after the first, ``due[0] == 0``),
        calling ``send(sent, ready)`` with what is due, at most once per ``chunk_s``. Without
        ``send`` (a reply sent whole) it waits for the last token only."""
        seen = Decoded()
        if send is None:
            due = due[-1:]
        self._change(seen, joins=True)
        started = time.monotonic()
        try:
            start, sent, next_chunk = self.clock(), 0, 0.0
            while sent < len(due):
                await self._until(start + due[sent], next_chunk)
                ready = max(sent + 1, bisect.bisect_right(due, self.clock() - start))
                if send is not None:
                    await send(sent, ready)
                sent, next_chunk = ready, time.monotonic() + chunk_s
            return seen
        finally:
            seen.seconds = time.monotonic() - started
            self._change(seen, joins=False)
