"""What the simulated server can take: OpenAI's rate limits and a self-hosted engine's decode
slots.

**Rate limits** as OpenAI enforces them: continuously refilling buckets charged at admission
(prompt estimate + max_tokens), with the headers OpenAI sends on every answer. Two
enforcements: ``minute`` buckets hold ``burst_s`` of refill (60 s: a minute's budget at once);
``second`` buckets hold one second of it (OpenAI: "60,000 requests/minute may be enforced as
1,000 requests/second"), and a request larger than one second's tokens is admitted into a
full bucket, leaving debt, so that it is slow but possible.

**Decode slots**: throughput shared the way a self-hosted engine shares it (vLLM, Ollama,
llama.cpp, TGI): ``slots`` requests decode at full speed; with ``k > slots`` decoding at once,
each decodes at ``slots / k`` of it (one batch, one GPU). ``slots=None``: every request at full
speed, as a hosted API behaves. Processor sharing on a virtual clock: the clock advances at
``share()`` per wall second, the same for every request decoding, so a token due ``d``
full-speed seconds after a request's first token is sent once the clock has advanced ``d``
since that token. A request joining or leaving changes the share, and wakes the waiting
requests to recompute when their next token is due. Measured time drives the clock, so a late
wake-up costs no throughput.

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
from dataclasses import dataclass, field

from chainray.durations import format_duration
from chainray.sim.config import SimConfig

__all__ = ["Bucket", "LimitBuckets", "Admission", "DecodeSlots", "Decoded", "due_times"]


@dataclass
class Bucket:
    limit_per_min: int
    burst_s: float
    level: float = field(init=False)
    updated: float = field(init=False)
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self.level, self.updated = self.capacity, self.clock()

    @property
    def rate(self) -> float:
        return self.limit_per_min / 60.0

    @property
    def capacity(self) -> float:
        return self.rate * self.burst_s

    def refill(self) -> None:
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        return max(0.0, (amount - self.level) / self.rate)

    def reset_s(self) -> float:
        return (self.capacity - self.level) / self.rate


@dataclass
class Admission:
    admitted: bool
    dimension: str | None = None  # "requests" or "tokens" when refused
    retry_after_s: float = 0.0
    too_large: bool = False


class LimitBuckets:
    """A requests bucket and a tokens bucket for one key."""

    def __init__(self, rpm: int, tpm: int, burst_s: float,
                 clock: Callable[[], float] = time.monotonic, debt: bool = False) -> None:
        self.requests = Bucket(rpm, burst_s, clock=clock)
        self.tokens = Bucket(tpm, burst_s, clock=clock)
        self.debt = debt  # may a request larger than the bucket go into a full one?

    @classmethod
    def for_config(cls, config: SimConfig) -> LimitBuckets:
        if config.enforce == "second":
            return cls(config.rpm, config.tpm, 1.0, debt=True)
        return cls(config.rpm, config.tpm, config.burst_s)

    def admit(self, charge_tokens: int) -> Admission:
        self.requests.refill()
        self.tokens.refill()
        largest = self.tokens.limit_per_min if self.debt else self.tokens.capacity
        if charge_tokens > largest:
            return Admission(False, "tokens", 0.0, too_large=True)
        if self.requests.level < 1:
            return Admission(False, "requests", self.requests.wait_for(1))
        need = min(charge_tokens, self.tokens.capacity) if self.debt else charge_tokens
        if self.tokens.level < need:
            return Admission(False, "tokens", self.tokens.wait_for(need))
        self.requests.level -= 1
        self.tokens.level -= charge_tokens
        return Admission(True)

    def refund(self, tokens: int) -> None:
        self.tokens.refill()
        self.tokens.level = min(self.tokens.capacity, self.tokens.level + tokens)

    def headers(self) -> dict[str, str]:
        self.requests.refill()
        self.tokens.refill()
        out = {}
        for name, bucket in (("requests", self.requests), ("tokens", self.tokens)):
            out[f"x-ratelimit-limit-{name}"] = str(bucket.limit_per_min)
            out[f"x-ratelimit-remaining-{name}"] = str(max(0, int(bucket.level)))
            out[f"x-ratelimit-reset-{name}"] = format_duration(bucket.reset_s())
        return out


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
