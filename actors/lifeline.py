"""A worker whose raylet is gone exits at once. A driver that started its own Ray takes that
Ray's raylet with it when it dies (even by kill -9), and a node that dies takes its raylet too;
the raylet's workers are then orphaned (their parent process changes). Ray ends such workers
within a second or two, but until then a step runner keeps sending: retries, hedges and steps
queued for a permit. Exiting at once sends nothing more, and a live Coordinator sees the
runner die (a process death), so it sends the runner's steps again to a live runner.

A warm Coordinator (``chainray up``) outlives the drivers it serves: ``watch_driver`` stops a
run whose driver process is gone, so a killed driver's run sends nothing new there either."""

from __future__ import annotations

import asyncio
import logging
import os

__all__ = ["watch_parent", "watch_driver", "process_alive"]

CHECK_S = 0.2  # how soon an orphaned worker stops

log = logging.getLogger("chainray.lifeline")


def watch_parent() -> asyncio.Task:
    """End this process once its parent (its raylet) is gone. Call it from a running event
    loop (an async actor's method)."""
    parent = os.getppid()

    async def watch() -> None:
        while os.getppid() == parent:
            await asyncio.sleep(CHECK_S)
        log.warning("the raylet (pid %s) is gone: this worker exits and sends nothing more",
                    parent)
        os._exit(1)

    return asyncio.ensure_future(watch())


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` (on this node) exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True  # no /proc: existing is all we can tell


def watch_driver(pid: int, on_gone) -> asyncio.Task:
    """Await ``on_gone()`` once process ``pid`` (a driver on this node) is gone; cancel the
    task when the run ends first."""

    async def watch() -> None:
        while process_alive(pid):
            await asyncio.sleep(CHECK_S)
        log.warning("driver pid %s is gone: its run sends nothing more", pid)
        await on_gone()

    return asyncio.ensure_future(watch())
