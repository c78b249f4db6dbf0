"""A limiter that stops admitting: once its ``stopped`` event is set (a Ctrl-C, a dead driver),
no new permit is handed out, so no new request is sent, while requests already sent finish.

Every HTTP attempt (first tries, retries, hedges) passes a permit, so this is the one gate.
A caller waiting for a permit when the stop comes is refused at once; the permit it was
waiting for is handed back unused if it is granted later.
"""

from __future__ import annotations

import asyncio
import inspect
import logging

from chainray.errors import Interrupted
from chainray.limit.permit_book import Permit
from chainray.limit.permit_scope import Limiter

__all__ = ["StoppableLimiter"]

log = logging.getLogger("chainray.permits")


class StoppableLimiter:
    """``limiter`` behind a gate that closes when ``stopped`` is set."""

    def __init__(self, limiter: Limiter, stopped: asyncio.Event) -> None:
        self.limiter, self.stopped = limiter, stopped

    async def acquire(self, tokens: int, priority: float,
                      timeout_s: float | None = None) -> Permit:
        if self.stopped.is_set():
            raise Interrupted()
        acquire = asyncio.ensure_future(self.limiter.acquire(tokens, priority, timeout_s))
        stop = asyncio.ensure_future(self.stopped.wait())
        try:
            await asyncio.wait({acquire, stop}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            acquire.cancel()
            raise
        finally:
            stop.cancel()
        if acquire.done() and not self.stopped.is_set():
            return acquire.result()
        acquire.add_done_callback(self._hand_back_unused)
        raise Interrupted()

    def _hand_back_unused(self, acquire: asyncio.Future) -> None:
        if acquire.cancelled() or acquire.exception() is not None:
            return
        returned = self.limiter.release(acquire.result().id, None, None)
        if inspect.isawaitable(returned):
            asyncio.ensure_future(returned).add_done_callback(_log_failure)

    def release(self, permit_id: str, used_tokens: int | None, headers: dict | None):
        return self.limiter.release(permit_id, used_tokens, headers)

    def penalize(self, permit_id: str, retry_after_s: float | None):
        return self.limiter.penalize(permit_id, retry_after_s)


def _log_failure(done: asyncio.Future) -> None:
    if not done.cancelled() and done.exception() is not None:
        log.debug("could not hand back a permit after a stop", exc_info=done.exception())
