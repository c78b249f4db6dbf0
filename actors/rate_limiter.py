"""The RateLimiter actor: one named permit book per endpoint and model, shared cluster-wide.

Every step, run and driver connected to the cluster gets the same actor by name
(``get_if_exists``); it is detached so that it outlives the driver that created it, and it
restarts if it dies (its book starts again; permits held by the dead instance simply vanish,
so none leak). The logic lives in ``chainray.exec.permits.PermitBook``; this file only puts
it on Ray and exports metrics for the dashboard.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import ray
from ray.util.metrics import Counter, Gauge

from chainray.exec.permits import Limits, Permit, PermitBook

__all__ = ["RateLimiter", "RemoteLimiter", "limiter_name", "get_rate_limiter",
           "LIMITER_NAMESPACE"]

LIMITER_NAMESPACE = "chainray"


def limiter_name(base_url: str, model: str) -> str:
    """A stable actor name for an endpoint and model; the URL is hashed, never shown."""
    digest = hashlib.sha256(f"{base_url.rstrip('/')}|{model}".encode()).hexdigest()[:12]
    return f"chainray-limiter-{model}-{digest}"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class RateLimiter:
    """Hands out call permits: ``acquire`` before every HTTP attempt, ``release`` after."""

    def __init__(self, name: str, limits: Limits) -> None:
        self.name = name
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

    def _report(self) -> None:
        self.waiting.set(sum(not w.future.done() for w in self.book.waiters))
        self.in_flight.set(len(self.book.leases))

    async def acquire(self, tokens: int, priority: float = 0.0,
                      timeout_s: float | None = None) -> Permit:
        self._report()
        permit = await self.book.acquire(tokens, priority, timeout_s)
        self.granted.inc()
        self._report()
        return permit

    async def release(self, permit_id: str, used_tokens: int | None = None,
                      headers: Mapping[str, str] | None = None) -> None:
        self.book.release(permit_id, used_tokens, headers)
        if used_tokens:
            self.tokens.inc(used_tokens)
        self._report()

    async def penalize(self, permit_id: str, retry_after_s: float | None) -> None:
        self.book.penalize(permit_id, retry_after_s)
        self.throttled.inc()
        self._report()

    async def stats(self) -> dict:
        return {"name": self.name, **self.book.stats()}


def get_rate_limiter(name: str, limits: Limits,
                     namespace: str = LIMITER_NAMESPACE) -> ray.actor.ActorHandle:
    """The named limiter, created with ``limits`` if it does not exist yet."""
    return RateLimiter.options(name=name, namespace=namespace, get_if_exists=True,
                               lifetime="detached").remote(name, limits)


class RemoteLimiter:
    """The RateLimiter actor seen through the ``chainray.exec.llm.Limiter`` interface."""

    def __init__(self, handle: ray.actor.ActorHandle) -> None:
        self.handle = handle

    async def acquire(self, tokens: int, priority: float,
                      timeout_s: float | None = None) -> Permit:
        return await self.handle.acquire.remote(tokens, priority, timeout_s)

    async def release(self, permit_id: str, used_tokens, headers) -> None:
        await self.handle.release.remote(permit_id, used_tokens, headers)

    async def penalize(self, permit_id: str, retry_after_s) -> None:
        await self.handle.penalize.remote(permit_id, retry_after_s)
