"""A worker whose raylet is gone stops sending. A driver that started its own Ray takes that
Ray's raylet with it when it dies (even by kill -9), and the raylet's workers are then orphaned:
their parent process changes. Such a worker must not start new requests for a run nobody
will read; requests in flight still finish."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

__all__ = ["watch_parent"]

CHECK_S = 0.2  # how soon an orphaned worker stops sending


def watch_parent(on_orphaned: Callable[[], None]) -> asyncio.Task:
    """Call ``on_orphaned`` once this process's parent (its raylet) is gone. Call it from a
    running event loop (an async actor's method); the task ends when it has fired."""
    parent = os.getppid()

    async def watch() -> None:
        while os.getppid() == parent:
            await asyncio.sleep(CHECK_S)
        on_orphaned()

    return asyncio.ensure_future(watch())
