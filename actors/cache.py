"""The response cache on the driver's node: every step runner, on any node, reads and writes
it through this actor, so the cache needs no shared filesystem."""

from __future__ import annotations

import ray

from chainray.guards.cache import CachedReply, ResponseCache

__all__ = ["CacheKeeper", "RemoteCache"]


class CountingCache(ResponseCache):
    """The response cache, counting what it served (its repr in the dashboard)."""

    def __init__(self, directory) -> None:
        super().__init__(directory)
        self.hits = self.misses = self.writes = 0

    def __repr__(self) -> str:
        return (f"CacheKeeper({self.directory}: {self.hits} hits, {self.misses} misses, "
                f"{self.writes} writes)")

    def get(self, key: str) -> CachedReply | None:
        reply = super().get(key)
        self.hits, self.misses = self.hits + (reply is not None), self.misses + (reply is None)
        return reply

    def put(self, key: str, reply: CachedReply) -> None:
        super().put(key, reply)
        self.writes += 1


# Threaded (max_concurrency > 1): entries are written atomically, so readers never block
# behind a writer's disk I/O. Its calls are bookkeeping, not tasks to show in the dashboard.
CacheKeeper = ray.remote(num_cpus=0, max_concurrency=8, enable_task_events=False)(CountingCache)


class RemoteCache:
    """The actor as the call path sees it (``chainray.guards.call_guards.ReplyCache``)."""

    def __init__(self, handle: ray.actor.ActorHandle) -> None:
        self.handle = handle

    async def get(self, key: str) -> CachedReply | None:
        return await self.handle.get.remote(key)

    async def put(self, key: str, reply: CachedReply) -> None:
        await self.handle.put.remote(key, reply)
