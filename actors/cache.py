"""The response cache on the driver's node: every step runner, on any node, reads and writes
it through this actor, so the cache needs no shared filesystem."""

from __future__ import annotations

import ray

from chainray.guards.cache import CachedReply, ResponseCache

__all__ = ["CacheKeeper", "RemoteCache"]

# Threaded (max_concurrency > 1): entries are written atomically, so readers never block
# behind a writer's disk I/O.
CacheKeeper = ray.remote(num_cpus=0, max_concurrency=8)(ResponseCache)


class RemoteCache:
    """The actor as the call path sees it (``chainray.guards.call_guards.ReplyCache``)."""

    def __init__(self, handle: ray.actor.ActorHandle) -> None:
        self.handle = handle

    async def get(self, key: str) -> CachedReply | None:
        return await self.handle.get.remote(key)

    async def put(self, key: str, reply: CachedReply) -> None:
        await self.handle.put.remote(key, reply)
