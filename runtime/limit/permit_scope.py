"""One permit as a resource: ``async with PermitScope(limiter, tokens) as permit:``.

The permit is handed back on every way out of the block: with the usage the caller settled
on success, penalized on a retryable 429 (the server's Retry-After holds every caller), and
released unused on any other error, cancellation included. A failing hand-back never hides
the error that ended the block; the lease expiry in the RateLimiter is the last resort.

    async with PermitScope(limiter, tokens=650, priority=3, timeout_s=30) as permit:
        reply = await send()
        permit.settle(used_tokens=reply.total, headers=reply.headers)
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Mapping
from typing import Protocol

from chainray.errors import EndpointError
from chainray.limit.permit_book import Permit

__all__ = ["Limiter", "PermitScope"]

class Limiter(Protocol):
    """The RateLimiter as the call path sees it (``chainray.actors.rate_limiter.RemoteLimiter``
    in production, a ``PermitBook`` in unit tests)."""

    async def acquire(self, tokens: int, priority: float,
                      timeout_s: float | None = None) -> Permit: ...
    async def release(self, permit_id: str, used_tokens: int | None,
                      headers: dict[str, str] | None) -> None: ...
    async def penalize(self, permit_id: str, retry_after_s: float | None) -> None: ...


log = logging.getLogger("chainray.permits")
HAND_BACK_S = 10.0  # bound on telling the RateLimiter; its lease expiry covers the rest


async def _hand_back(call: Awaitable[None] | None) -> None:
    # Shielded: a second cancellation while we hand back must not strand the permit.
    if not inspect.isawaitable(call):  # a local PermitBook hands back at once
        return
    try:
        await asyncio.wait_for(asyncio.shield(asyncio.ensure_future(call)), HAND_BACK_S)
    except Exception:
        log.debug("could not hand a permit back", exc_info=True)


class PermitScope:
    """Acquire on enter, hand back on exit (release, or penalize after a retryable 429).

    A 429 whose Retry-After is longer than ``max_penalty_s`` (what the caller's retry budget
    has left) holds nobody: the caller gives up rather than wait (the retry policy says so),
    and a later caller, perhaps of a healthier driver, must not wait for it either."""

    def __init__(self, limiter: Limiter, tokens: int, priority: float = 0.0,
                 timeout_s: float | None = None, max_penalty_s: float | None = None) -> None:
        self.limiter, self.tokens, self.priority = limiter, tokens, priority
        self.timeout_s, self.max_penalty_s = timeout_s, max_penalty_s
        self.id = ""
        self.waited_s = 0.0
        self.used_tokens: int | None = None
        self.headers: dict[str, str] | None = None

    def settle(self, used_tokens: int | None, headers: Mapping[str, str] | None) -> None:
        """What the call used, reported to the RateLimiter when the block ends normally."""
        self.used_tokens, self.headers = used_tokens, dict(headers or {})

    async def __aenter__(self) -> PermitScope:
        try:
            permit = await self.limiter.acquire(self.tokens, self.priority,
                                                timeout_s=self.timeout_s)
        except TimeoutError:
            raise EndpointError(f"no rate-limit permit within the {self.timeout_s or 0:.1f}s "
                                "left of the retry budget", code="permit_timeout") from None
        self.id, self.waited_s = permit.id, permit.waited_s
        return self

    async def __aexit__(self, kind, exc, tb) -> None:
        if isinstance(exc, EndpointError) and exc.status == 429 and exc.retryable and not (
                exc.retry_after is not None and self.max_penalty_s is not None
                and exc.retry_after > self.max_penalty_s):
            await _hand_back(self.limiter.penalize(self.id, exc.retry_after))
        elif exc is not None:
            await _hand_back(self.limiter.release(self.id, None, None))
        else:
            await _hand_back(self.limiter.release(self.id, self.used_tokens, self.headers))
