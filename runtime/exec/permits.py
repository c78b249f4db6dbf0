"""Call permits under requests/min, tokens/min and a concurrency cap: the RateLimiter's logic.

Two continuously refilling buckets (requests, tokens) that hold about one second of the
target rate, so requests are paced rather than sent in minute-sized bursts (OpenAI enforces
limits over short windows). A request reserves its estimated tokens (prompt + max_tokens) up
front; one larger than the bucket waits for a full bucket and leaves debt that the next
request repays, so it is never starved.
After the call, ``release`` refunds what was not used and lowers the bucket if the server's
``x-ratelimit-remaining-*`` headers say it holds less than we think. An unexpected 429 holds
every caller until its Retry-After has passed and lowers the target rate for a while.

Waiting callers are granted in order of priority (the longest remaining path of steps to
their run's end first), FIFO among equals. Leases expire, so a caller that died cannot keep
a concurrency slot.

    book = PermitBook(Limits(rpm=500, tpm=200_000, max_concurrency=32))
    permit = await book.acquire(tokens=650, priority=3)
    ...                                    # send the request
    book.release(permit.id, used_tokens=512, headers=response.headers)
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from chainray.errors import PermitRefused

__all__ = ["Limits", "Permit", "PermitBook"]


class Limits(BaseModel):
    """A RateLimiter's budget. ``target_share`` keeps headroom below the provider's limit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rpm: int = Field(gt=0)
    tpm: int = Field(gt=0)
    max_concurrency: int = Field(64, gt=0)
    target_share: float = Field(0.95, gt=0, le=1)
    burst_s: float = Field(1.0, gt=0)
    lease_ttl_s: float = Field(300.0, gt=0)
    priority: bool = True


@dataclass(frozen=True)
class Permit:
    id: str
    waited_s: float


@dataclass
class _Lease:
    tokens: int
    expires: float


@dataclass(order=True)
class _Waiter:
    sort_key: tuple[float, int]
    tokens: int = field(compare=False)
    since: float = field(compare=False)
    future: asyncio.Future = field(compare=False)


class PermitBook:
    """The permit logic, free of Ray: one event loop, no locks."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits, self.clock = limits, clock
        self.share = limits.target_share
        # Start half full: a new (or restarted) limiter does not know what the server's
        # buckets hold, and a full first burst is the likeliest moment for a 429.
        self.level = {d: max(1.0, self._capacity(d) / 2) for d in ("requests", "tokens")}
        self.updated = clock()
        self.not_before = 0.0
        self.leases: dict[str, _Lease] = {}
        self.waiters: list[_Waiter] = []
        self.counter = itertools.count()
        self.timer: asyncio.TimerHandle | None = None
        self.granted = self.penalties = self.expired = 0
        self.tokens_reserved = self.tokens_used = 0

    # -- buckets ----------------------------------------------------------------------------
    def _limit(self, dimension: str) -> int:
        return self.limits.rpm if dimension == "requests" else self.limits.tpm

    def _rate(self, dimension: str) -> float:
        return self.share * self._limit(dimension) / 60.0

    def _capacity(self, dimension: str) -> float:
        return max(1.0, self._rate(dimension) * self.limits.burst_s)

    def _refill(self) -> float:
        now = self.clock()
        elapsed, self.updated = now - self.updated, now
        if self.share < self.limits.target_share:  # after a 429, recover 0.5 % a second
            self.share = min(self.limits.target_share, self.share + 0.005 * elapsed)
        for dimension in self.level:
            self.level[dimension] = min(self._capacity(dimension),
                                        self.level[dimension] + elapsed * self._rate(dimension))
        return now

    def _wait_needed(self, tokens: int, now: float) -> float:
        """Wait until a whole request and its tokens fit the buckets; a request larger than
        the token bucket waits for a full bucket and leaves debt that the next one repays."""
        wait = self.not_before - now
        for dimension, need in (("requests", 1.0), ("tokens", float(tokens))):
            need = min(need, self._capacity(dimension))
            if self.level[dimension] < need:
                wait = max(wait, (need - self.level[dimension]) / self._rate(dimension))
        return max(0.0, wait)

    # -- the API ----------------------------------------------------------------------------
    async def acquire(self, tokens: int, priority: float = 0.0,
                      timeout_s: float | None = None) -> Permit:
        """Wait for a permit for one request of about ``tokens`` tokens."""
        if tokens > self.limits.tpm:
            raise PermitRefused(f"a request of about {tokens} tokens can never fit the limit "
                                f"of {self.limits.tpm} tokens/min; lower max_tokens or the "
                                "prompt")
        priority = priority if self.limits.priority else 0.0
        waiter = _Waiter((-priority, next(self.counter)), tokens, self.clock(),
                         asyncio.get_running_loop().create_future())
        heapq.heappush(self.waiters, waiter)
        self._pump()
        try:
            return await asyncio.wait_for(asyncio.shield(waiter.future), timeout_s)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            if waiter.future.done() and not waiter.future.cancelled():
                self.release(waiter.future.result().id)  # granted as we gave up: hand back
            waiter.future.cancel()
            raise

    def release(self, permit_id: str, used_tokens: int | None = None,
                headers: Mapping[str, str] | None = None) -> None:
        """Return a permit; refund unused tokens and learn from rate-limit headers."""
        lease = self.leases.pop(permit_id, None)
        self._refill()
        if lease is not None and used_tokens is not None:
            self.tokens_used += used_tokens
            self.level["tokens"] += max(0, lease.tokens - used_tokens)
            self.level["tokens"] = min(self.level["tokens"], self._capacity("tokens"))
        if headers:
            self._learn(headers)
        self._pump()

    def penalize(self, permit_id: str, retry_after_s: float | None) -> None:
        """An unexpected 429: hold every caller until Retry-After passes, slow down a while."""
        self.leases.pop(permit_id, None)
        now = self._refill()
        self.penalties += 1
        self.not_before = max(self.not_before, now + (retry_after_s or 1.0))
        self.share = max(0.5 * self.limits.target_share, self.share * 0.95)
        self._pump()

    def stats(self) -> dict:
        self._refill()
        return {"granted": self.granted, "waiting": sum(not w.future.done()
                                                        for w in self.waiters),
                "in_flight": len(self.leases), "penalties": self.penalties,
                "expired_leases": self.expired, "share": round(self.share, 4),
                "tokens_reserved": self.tokens_reserved, "tokens_used": self.tokens_used,
                "limits": self.limits.model_dump()}

    # -- internals --------------------------------------------------------------------------
    def _learn(self, headers: Mapping[str, str]) -> None:
        """Lower (never raise) local capacity from the server's view of the budget."""
        for dimension in ("requests", "tokens"):
            try:
                limit = int(headers.get(f"x-ratelimit-limit-{dimension}", 0))
                remaining = int(headers.get(f"x-ratelimit-remaining-{dimension}", -1))
            except ValueError:
                continue
            if 0 < limit < self._limit(dimension):
                key = "rpm" if dimension == "requests" else "tpm"
                self.limits = self.limits.model_copy(update={key: limit})
            if remaining >= 0:
                # The server counted every request it had admitted when it answered, ours
                # and later ones alike, so its remaining budget caps ours as it stands.
                self.level[dimension] = min(self.level[dimension], float(remaining))

    def _reap(self, now: float) -> None:
        for permit_id in [i for i, lease in self.leases.items() if lease.expires <= now]:
            del self.leases[permit_id]
            self.expired += 1

    def _pump(self) -> None:
        """Grant permits to waiters, best first, while capacity allows; else set a timer."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        now = self._refill()
        self._reap(now)
        while self.waiters:
            waiter = self.waiters[0]
            if waiter.future.done():
                heapq.heappop(self.waiters)
                continue
            if len(self.leases) >= self.limits.max_concurrency:
                soonest = min(lease.expires for lease in self.leases.values())
                self._wake_in(soonest - now)
                return
            wait = self._wait_needed(waiter.tokens, now)
            if wait > 0:
                self._wake_in(wait)
                return
            heapq.heappop(self.waiters)
            self._grant(waiter, now)

    def _grant(self, waiter: _Waiter, now: float) -> None:
        self.level["requests"] -= 1
        self.level["tokens"] -= waiter.tokens
        permit = Permit(uuid.uuid4().hex, now - waiter.since)
        self.leases[permit.id] = _Lease(waiter.tokens, now + self.limits.lease_ttl_s)
        self.granted += 1
        self.tokens_reserved += waiter.tokens
        waiter.future.set_result(permit)

    def _wake_in(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(max(delay, 0.001), self._pump)
