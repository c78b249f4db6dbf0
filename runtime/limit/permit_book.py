"""Call permits under requests/min, tokens/min and a concurrency cap: the RateLimiter's logic.

Each *stated* dimension (``chainray.limit.limits``) is a refilling bucket at ``target_share``
of its limit; an unstated one is not paced (only the concurrency cap, by slow start). Waiting
callers are granted by priority, then first come; leases expire. The algorithm in full: the
manual's "Limits and budget" page, "How a permit is granted".

    book = PermitBook(Limits(rpm=500, rpm_from="flag", max_concurrency=32))
    permit = await book.acquire(tokens=650, priority=3, timeout_s=120)
    ...                                    # send the request
    book.release(permit.id, used_tokens=512, headers=response.headers)
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from chainray.errors import PermitRefused
from chainray.limit.limits import DIMENSIONS, Limits, outranks

__all__ = ["Limits", "Permit", "PermitBook", "PermitTimeout", "SLOW_START"]

SLOW_START = 16  # calls in flight at first when a dimension is unpaced (wider than most chains)


class PermitTimeout(PermitRefused, TimeoutError):
    """No permit within the caller's timeout (its remaining retry budget)."""


@dataclass(frozen=True)
class Permit:
    id: str
    waited_s: float
    granted_at: float = 0.0  # wall clock when granted: lets callers measure delivery latency


@dataclass
class _Lease:
    tokens: int
    seq: int                    # grant order
    granted_before: int         # permits granted before this one
    reserved_before: int        # tokens reserved before this one
    expires: float
    budget_end: float | None    # when the holder's retry budget runs out


@dataclass(order=True)
class _Waiter:
    sort_key: tuple[float, int]
    tokens: int = field(compare=False)
    since: float = field(compare=False)
    budget_end: float | None = field(compare=False)
    future: asyncio.Future = field(compare=False)


def _number(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) and number >= 0 else None


class PermitBook:
    """The permit logic, free of Ray: one event loop, no locks."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits, self.clock = limits, clock
        # what the server states where a flag or the simulator outranks it: a lower one is
        # still obeyed (pacing above the server's limit only buys 429s)
        self.server_limit: dict[str, int | None] = dict.fromkeys(DIMENSIONS)
        self.share = limits.target_share
        self.window = dict.fromkeys(DIMENSIONS, limits.burst_s)
        self.level = {d: self._capacity(d) for d in DIMENSIONS}
        self.updated = clock()
        self.not_before = 0.0
        # With a dimension unpaced, in-flight calls start at SLOW_START and grow by one per
        # answer (doubling each round trip) until the first 429, then by one per round trip.
        self.slow_start = limits.rpm is None or limits.tpm is None
        self.concurrency = float(min(limits.max_concurrency, SLOW_START) if self.slow_start
                                 else limits.max_concurrency)
        self.leases: dict[str, _Lease] = {}
        self.waiters: list[_Waiter] = []
        self.counter = itertools.count()
        self.timer: asyncio.TimerHandle | None = None
        self.granted = self.penalties = self.expired = self.holds_refused = 0
        self.tokens_reserved = self.tokens_used = 0

    # -- buckets ----------------------------------------------------------------------------
    def _limit(self, dimension: str) -> int | None:
        stated, server = getattr(self.limits, DIMENSIONS[dimension]), self.server_limit[dimension]
        return min(stated, server) if stated and server else stated

    def _rate(self, dimension: str) -> float:
        return self.share * (self._limit(dimension) or 0) / 60.0

    def _capacity(self, dimension: str) -> float:
        # At the paced rate, not the full limit: a server that enforces per second starts
        # with the same one-second bucket, and only target_share's headroom absorbs the
        # jitter between our grants and its arrivals.
        return max(1.0, self._rate(dimension) * self.window[dimension])

    def _refill(self) -> float:
        now = self.clock()
        elapsed, self.updated = now - self.updated, now
        if self.share < self.limits.target_share:  # after a 429, recover 0.5 % a second
            self.share = min(self.limits.target_share, self.share + 0.005 * elapsed)
        for dimension in DIMENSIONS:
            self.level[dimension] = min(self._capacity(dimension),
                                        self.level[dimension] + elapsed * self._rate(dimension))
        return now

    def _wait_needed(self, tokens: int, now: float) -> float:
        wait = self.not_before - now
        for dimension, need in (("requests", 1.0), ("tokens", float(tokens))):
            if self._limit(dimension) is None:
                continue
            need = min(need, self._capacity(dimension))
            if self.level[dimension] < need:
                wait = max(wait, (need - self.level[dimension]) / self._rate(dimension))
        return max(0.0, wait)

    # -- the API ----------------------------------------------------------------------------
    async def acquire(self, tokens: int, priority: float = 0.0,
                      timeout_s: float | None = None) -> Permit:
        """Wait for a permit for one request of about ``tokens`` tokens, at most
        ``timeout_s`` (then ``PermitTimeout``)."""
        tpm = self._limit("tokens")
        if tpm is not None and tokens > tpm:
            raise PermitRefused(f"a request of about {tokens} tokens can never fit the limit "
                                f"of {tpm} tokens/min; lower max_tokens or the prompt")
        now = self._refill()
        if timeout_s is not None and self.not_before - now > timeout_s:
            raise PermitTimeout(f"the server asked to wait {self.not_before - now:.0f} s more "
                                f"(Retry-After); retry budget is {timeout_s:.0f} s")
        priority = priority if self.limits.priority else 0.0
        budget_end = now + timeout_s if timeout_s is not None else None
        waiter = _Waiter((-priority, next(self.counter)), tokens, now, budget_end,
                         asyncio.get_running_loop().create_future())
        heapq.heappush(self.waiters, waiter)
        self._pump()
        try:
            return await asyncio.wait_for(asyncio.shield(waiter.future), timeout_s)
        except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
            if waiter.future.done() and not waiter.future.cancelled():
                self.release(waiter.future.result().id)  # granted as we gave up: hand back
            waiter.future.cancel()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise PermitTimeout(f"no permit within {timeout_s:g} s (the step's retry "
                                f"budget); limits: {self.describe()}") from None

    def release(self, permit_id: str, used_tokens: int | None = None,
                headers: Mapping[str, str] | None = None) -> None:
        """Return a permit; refund unused tokens and learn from rate-limit headers."""
        lease = self.leases.pop(permit_id, None)
        self._refill()
        if lease is not None and used_tokens is not None:
            self.tokens_used += used_tokens
            self.level["tokens"] = min(self._capacity("tokens"), self.level["tokens"]
                                       + max(0, lease.tokens - used_tokens))
            step = 1.0 if self.slow_start else 1.0 / max(1.0, self.concurrency)
            self.concurrency = min(float(self.limits.max_concurrency), self.concurrency + step)
        if headers:
            self._learn(headers, lease)
        self._pump()

    def penalize(self, permit_id: str, retry_after_s: float | None,
                 headers: Mapping[str, str] | None = None) -> None:
        """An unexpected 429: slow down, and hold every caller for the Retry-After unless the
        penalized caller cannot wait that long itself (then its step fails, nobody waits)."""
        lease = self.leases.pop(permit_id, None)
        now = self._refill()
        self.penalties += 1
        if headers:
            self._learn(headers, lease)
        self.share = max(0.5 * self.limits.target_share, self.share * 0.9)
        self.slow_start = False
        if self.limits.rpm is None or self.limits.tpm is None:  # an unpaced dimension: AIMD
            self.concurrency = max(1.0, min(self.concurrency, len(self.leases) + 1.0) / 2)
        hold = _number(str(retry_after_s)) if retry_after_s is not None else None
        hold = 1.0 if hold is None else hold
        left = lease.budget_end - now if lease and lease.budget_end is not None else math.inf
        if hold > left:
            self.holds_refused += 1
        else:
            self.not_before = max(self.not_before, now + min(hold, self.limits.max_hold_s))
        self._pump()

    def configure(self, limits: Limits) -> str | None:
        """Take each limit of ``limits`` whose source outranks ours (the newest explicit value
        wins); return a line describing the change, or None when nothing changed."""
        merged = self.limits.merged(limits)
        if merged == self.limits:
            return None
        before, old, self.limits = self.limits.describe(), self.limits, merged
        self._refill()
        for dimension, name in DIMENSIONS.items():
            if getattr(old, name) != getattr(merged, name):  # a new pace: its own burst
                self.window[dimension] = merged.burst_s
            self.level[dimension] = min(self.level[dimension], self._capacity(dimension))
        self._pump()
        return f"{merged.describe()} (was: {before})"

    def stats(self) -> dict:
        self._refill()
        return {"granted": self.granted, "waiting": sum(not w.future.done()
                                                        for w in self.waiters),
                "in_flight": len(self.leases), "penalties": self.penalties,
                "holds_refused": self.holds_refused, "expired_leases": self.expired,
                "share": round(self.share, 4), "concurrency": int(self.concurrency),
                "held_s": round(max(0.0, self.not_before - self.updated), 3),
                "window_s": dict(self.window), "tokens_reserved": self.tokens_reserved,
                "tokens_used": self.tokens_used, "described": self.describe(),
                "limits": self.limits.model_copy(update={
                    name: self._limit(d) for d, name in DIMENSIONS.items()}).model_dump()}

    def describe(self) -> str:
        """The limits, where they came from, and any lower limit the server states."""
        lower = [f"the server states {name} {self.server_limit[d]:,}, which is obeyed"
                 for d, name in DIMENSIONS.items()
                 if self.server_limit[d] and self._limit(d) == self.server_limit[d]
                 and self.server_limit[d] != getattr(self.limits, name)]
        return "; ".join([self.limits.describe(), *lower])

    # -- internals --------------------------------------------------------------------------
    def _learn(self, headers: Mapping[str, str], lease: _Lease | None) -> None:
        """Take the server's limits (unless stated by a higher source) and its view of what is
        left, less what it may not have seen yet (``_unseen``)."""
        for dimension, name in DIMENSIONS.items():
            limit = _number(headers.get(f"x-ratelimit-limit-{dimension}"))
            remaining = _number(headers.get(f"x-ratelimit-remaining-{dimension}"))
            first = self._limit(dimension) is None
            if limit and outranks("server", getattr(self.limits, f"{name}_from")):
                if int(limit) != getattr(self.limits, name):
                    self.limits = self.limits.model_copy(update={name: int(limit),
                                                                 f"{name}_from": "server"})
            elif limit:
                self.server_limit[dimension] = int(limit)
            if remaining is None or self._limit(dimension) is None:
                continue
            per_s = self._limit(dimension) / 60.0
            if remaining > per_s * self.window[dimension] and self._servers_pace(dimension):
                self.window[dimension] = min(60.0, remaining / per_s)
            pending = self._unseen(dimension, lease)
            estimate = min(self._capacity(dimension), remaining - pending)
            if first or estimate < self.level[dimension]:
                self.level[dimension] = estimate
            elif self._servers_pace(dimension):  # the server holds more: use it, with headroom
                headroom = (1 - self.limits.target_share) * self._capacity(dimension)
                self.level[dimension] = max(self.level[dimension], estimate - headroom)

    def _unseen(self, dimension: str, lease: _Lease | None) -> float:
        """What the server may not have counted when it answered ``lease``: every permit
        granted since (answered or not: answers arrive out of order) and every earlier one
        still in flight (it may reach the server late). Errs high, so estimates err low."""
        tokens = dimension == "tokens"
        earlier = [x for x in self.leases.values() if lease is None or x.seq < lease.seq]
        pending = sum(x.tokens for x in earlier) if tokens else len(earlier)
        if lease is not None:
            pending += (self.tokens_reserved - lease.reserved_before - lease.tokens if tokens
                        else self.granted - lease.granted_before - 1)
        return float(pending)

    def _servers_pace(self, dimension: str) -> bool:
        """May we burst as the server's bucket allows? Not when a flag asks for less than
        the server's limit: then the user's pace (a 1 s burst) is what they asked for."""
        name = DIMENSIONS[dimension]
        if getattr(self.limits, f"{name}_from") != "flag":
            return True
        server = self.server_limit[dimension]
        return server is not None and server <= getattr(self.limits, name)

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
            if len(self.leases) >= int(self.concurrency):
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
        permit = Permit(uuid.uuid4().hex, now - waiter.since, time.time())
        self.leases[permit.id] = _Lease(waiter.tokens, next(self.counter), self.granted,
                                        self.tokens_reserved,
                                        now + self.limits.lease_ttl_s, waiter.budget_end)
        self.granted += 1
        self.tokens_reserved += waiter.tokens
        waiter.future.set_result(permit)

    def _wake_in(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(max(delay, 0.001), self._pump)
