"""Each HTTP attempt's times, kept for the timeline: queued for a permit, in flight, and (the gap
to the next attempt) retry backoff.

    async with AttemptTimer(reply.attempt_log) as timer, PermitScope(...) as permit:
        timer.sent()                       # the permit is granted: the request goes out
        ...                                # an error leaving the block is the attempt's outcome
"""

from __future__ import annotations

import asyncio
import time

from chainray.errors import EndpointError
from chainray.results import Attempt, AttemptOutcome

__all__ = ["AttemptTimer", "outcome_of"]


def outcome_of(exc: BaseException | None) -> tuple[AttemptOutcome, str | None]:
    """What an attempt that ended with ``exc`` (None: answered) comes to, and its code."""
    if exc is None:
        return "ok", None
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled", None
    if isinstance(exc, EndpointError):
        if exc.status == 429:
            return "rate_limited", exc.code or "429"
        return "error", exc.code or (str(exc.status) if exc.status else None)
    return "error", type(exc).__name__


class AttemptTimer:
    """Appends one ``Attempt`` to ``log`` when the block ends, however it ends."""

    def __init__(self, log: list[Attempt]) -> None:
        self.log = log
        self.queued_at = time.time()
        self.sent_at: float | None = None

    def sent(self) -> None:
        self.sent_at = time.time()

    async def __aenter__(self) -> AttemptTimer:
        self.queued_at = time.time()
        return self

    async def __aexit__(self, kind, exc, tb) -> None:
        finished = time.time()
        outcome, code = outcome_of(exc)
        self.log.append(Attempt(queued_at=self.queued_at, sent_at=self.sent_at or finished,
                                finished_at=finished, outcome=outcome, code=code))
