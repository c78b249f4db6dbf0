"""The RateLimiter actor: one named permit book per endpoint and model, shared cluster-wide.

Every step, run and driver connected to the cluster gets the same actor by name
(``get_if_exists``). Against a shared endpoint it is detached, so that it outlives the driver
that created it; one made for a local run's embedded simulator is not (it ends with the run).
It restarts if it dies (its book starts again; permits held by the dead instance simply
vanish, so none leak). The logic lives in ``chainray.limit.permit_book.PermitBook``; this file puts
it on Ray and exports metrics for the dashboard.

Why it cannot stall: a Ray async actor runs at most ``max_concurrency`` calls at once per
concurrency group, and a waiting ``acquire`` holds one. So ``acquire`` has its own large group
and ``release``/``penalize``/``configure``/``stats`` have theirs: however many callers wait,
the calls that free capacity always get in. Ray gives each group its own event loop thread,
so the book lives on one more loop of its own and every method hands its work to that loop.

What the dashboard shows: the actor by its name, its ``repr`` (limits, calls in flight,
callers waiting), and no task per call (``enable_task_events=False``: a run's task table
lists its steps, not the thousands of permit calls behind them). The gauges are set on the
book's loop after each change and every second, so they read zero once a run has ended.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import threading
import time
from collections.abc import Coroutine, Mapping
from typing import Any

import ray
from ray.util.metrics import Counter, Gauge

from chainray.errors import PermitRefused
from chainray.limit.permit_book import Limits, Permit, PermitBook

__all__ = ["RateLimiter", "RemoteLimiter", "limiter_name", "get_rate_limiter",
           "LIMITER_NAMESPACE", "WAITERS_PER_ACTOR"]

LIMITER_NAMESPACE = "chainray"
WAITERS_PER_ACTOR = 100_000  # acquire calls in the actor at once; more queue in Ray, no stall
REPORT_EVERY_S = 1.0  # gauges follow the book at least this often (Ray exports every 10 s)


def limiter_name(base_url: str, model: str) -> str:
    """A stable actor name for an endpoint and model; the URL is hashed, never shown."""
    digest = hashlib.sha256(f"{base_url.rstrip('/')}|{model}".encode()).hexdigest()[:12]
    return f"chainray-limiter-{model}-{digest}"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1, enable_task_events=False,
            max_concurrency=WAITERS_PER_ACTOR, concurrency_groups={"control": 8})
class RateLimiter:
    """Hands out call permits: ``acquire`` before every HTTP attempt, ``release`` after."""

    def __init__(self, name: str, limits: Limits) -> None:
        self.name = name
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="permit-book", daemon=True).start()
        self.book = PermitBook(limits)
        tags = {"limiter": name}
        self.granted = Counter("chainray_permits_granted", "permits granted",
                               tag_keys=("limiter",))
        self.throttled = Counter("chainray_rate_limited", "429s reported by callers",
                                 tag_keys=("limiter",))
        self.tokens = Counter("chainray_tokens_used", "tokens used by finished calls",
                              tag_keys=("limiter",))
        self.waiting = Gauge("chainray_waiting_callers", "callers waiting for a permit",
                             tag_keys=("limiter",))
        self.in_flight = Gauge("chainray_calls_in_flight", "permits held",
                               tag_keys=("limiter",))
        for metric in (self.granted, self.throttled, self.tokens, self.waiting, self.in_flight):
            metric.set_default_tags(tags)
        self.reported: dict[str, int] = {}  # what the gauges read (Ray exports every 10 s)
        self.loop.call_soon_threadsafe(self._report_every, REPORT_EVERY_S)

    def __repr__(self) -> str:
        return (f"RateLimiter({self.name}: {self.book.describe()}; "
                f"{len(self.book.leases)} calls in flight, {self._waiting()} callers waiting)")

    async def _on_book(self, coro: Coroutine) -> Any:
        """Run ``coro`` on the book's loop; cancelling the caller cancels it there too."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    async def _call(self, method, *args) -> Any:
        async def call():
            return method(*args)

        return await self._on_book(call())

    def _post(self, method, *args) -> None:
        """Hand a call that cannot fail to the book's loop and return at once; the gauges are
        set there, after it (set here, they would show the book before the call)."""
        def apply() -> None:
            method(*args)
            self._report()

        self.loop.call_soon_threadsafe(apply)

    def _waiting(self) -> int:
        return sum(not waiter.future.done() for waiter in self.book.waiters)

    def _report(self) -> None:
        """Set the gauges from the book (on the book's loop)."""
        self.reported = {"waiting_callers": self._waiting(),
                         "calls_in_flight": len(self.book.leases)}
        self.waiting.set(self.reported["waiting_callers"])
        self.in_flight.set(self.reported["calls_in_flight"])

    def _report_every(self, period_s: float) -> None:
        """Also on a timer: leases expire and callers start waiting between releases."""
        self._report()
        self.loop.call_later(period_s, self._report_every, period_s)

    async def acquire(self, tokens: int, priority: float = 0.0,
                      timeout_s: float | None = None) -> Permit:
        permit = await self._on_book(self.book.acquire(tokens, priority, timeout_s))
        self.granted.inc()
        self.loop.call_soon_threadsafe(self._report)
        return permit

    @ray.method(concurrency_group="control")
    async def release(self, permit_id: str, used_tokens: int | None = None,
                      headers: Mapping[str, str] | None = None) -> None:
        self._post(self.book.release, permit_id, used_tokens, headers)
        if used_tokens:
            self.tokens.inc(used_tokens)

    @ray.method(concurrency_group="control")
    async def release_many(self, returns: list[tuple]) -> None:
        """Several ``release`` argument tuples in one call (see ``RemoteLimiter``)."""
        def release_all() -> None:
            for permit_id, used_tokens, headers in returns:
                self.book.release(permit_id, used_tokens, headers)
            self._report()

        self.loop.call_soon_threadsafe(release_all)
        used = sum(used_tokens or 0 for _, used_tokens, _ in returns)
        if used:
            self.tokens.inc(used)

    @ray.method(concurrency_group="control")
    async def penalize(self, permit_id: str, retry_after_s: float | None,
                       headers: Mapping[str, str] | None = None) -> None:
        self._post(self.book.penalize, permit_id, retry_after_s, headers)
        self.throttled.inc()

    @ray.method(concurrency_group="control")
    async def configure(self, limits: Limits) -> str | None:
        """Take the limits that outrank ours; returns the change (None if nothing changed)."""
        return await self._call(self.book.configure, limits)

    @ray.method(concurrency_group="control")
    async def stats(self) -> dict:
        return {"name": self.name, **await self._call(self.book.stats),
                "gauges": dict(self.reported)}


def get_rate_limiter(name: str, limits: Limits, namespace: str = LIMITER_NAMESPACE,
                     detached: bool = True) -> ray.actor.ActorHandle:
    """The named limiter, created with ``limits`` if it does not exist yet."""
    return RateLimiter.options(name=name, namespace=namespace, get_if_exists=True,
                               lifetime="detached" if detached else None).remote(name, limits)


class _Returns:
    """Permits returned in one process, sent to their limiter together every few ms: one
    actor call for many releases, so the limiter's calls per permit approach one. Each
    caller still waits for its batch to be acknowledged: a step's permits are back before
    the step's result is."""

    def __init__(self, handle: ray.actor.ActorHandle, every_s: float = 0.002) -> None:
        self.handle, self.every_s = handle, every_s
        self.pending: list[tuple] = []
        self.done: asyncio.Future | None = None

    def add(self, permit_id: str, used_tokens, headers) -> asyncio.Future:
        if self.done is None:
            loop = asyncio.get_running_loop()
            self.done = loop.create_future()
            loop.call_later(self.every_s, self.flush)
        self.pending.append((permit_id, used_tokens, headers))
        return self.done

    def flush(self) -> None:
        returns, done, self.pending, self.done = self.pending, self.done, [], None
        asyncio.ensure_future(self._send(returns, done))

    async def _send(self, returns: list[tuple], done: asyncio.Future) -> None:
        try:
            await self.handle.release_many.remote(returns)
        except Exception as exc:  # noqa: BLE001  (handed to every caller of this batch)
            done.set_exception(exc)
        else:
            done.set_result(None)


_returns: dict[str, _Returns] = {}


class RemoteLimiter:
    """The RateLimiter actor seen through the ``chainray.call.endpoint.Limiter`` interface."""

    def __init__(self, handle: ray.actor.ActorHandle) -> None:
        self.handle = handle
        key = handle._actor_id.hex()
        self.returns = _returns.get(key) or _returns.setdefault(key, _Returns(handle))

    async def acquire(self, tokens: int, priority: float,
                      timeout_s: float | None = None) -> Permit:
        """A permit whose ``waited_s`` is the caller's whole wait, round trip included."""
        started = time.monotonic()
        try:
            permit = await self.handle.acquire.remote(tokens, priority, timeout_s)
        except ray.exceptions.RayTaskError as exc:  # the book's own error, without Ray's frame
            if isinstance(exc.cause, PermitRefused):
                raise exc.cause from None
            raise
        return dataclasses.replace(permit, waited_s=time.monotonic() - started)

    async def release(self, permit_id: str, used_tokens, headers) -> None:
        """Sent with the other permits this process returns in the same few ms."""
        await asyncio.shield(self.returns.add(permit_id, used_tokens, headers))

    async def penalize(self, permit_id: str, retry_after_s,
                       headers: Mapping[str, str] | None = None) -> None:
        """Awaited, so that the hold is in place before this caller's next acquire."""
        await self.handle.penalize.remote(permit_id, retry_after_s, headers)
