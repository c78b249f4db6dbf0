"""Automatic prompt caching in OpenAI's shape, for the simulator.

OpenAI caches a request's prefix without being asked: at least 1,024 tokens, in 128-token
steps, only an exact match, entries dropped after some minutes unused; the reply reports the
reused part in ``usage.prompt_tokens_details.cached_tokens`` (counted inside
``prompt_tokens``) and prefills it faster. An entry is usable once the request that wrote it
has sent its first token: requests sent together with the same prefix all miss.

Here a request is its messages as one text (role and content, in order) and a token is four
characters of it, as the simulator counts prompts (``chainray.tokens``). Each cacheable prefix
length (1,024 tokens, then every 128 more) is one entry, keyed by a digest of that prefix.

    cache = PromptCache(min_tokens=1024)
    found = cache.lookup(messages, prompt_tokens)   # found.cached: tokens read from the cache
    ...                                             # at this request's first token:
    cache.write(found)                              # its prefixes serve later requests
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["PromptCache", "Lookup"]

BLOCK_TOKENS = 128  # OpenAI's cache hits grow in steps of this many tokens
CHARS_PER_TOKEN = 4  # the simulator's token (chainray.tokens counts the same)
TTL_S = 600.0  # OpenAI keeps an unused entry "5 to 10 minutes" (up to an hour off-peak)
CAPACITY = 100_000  # prefixes kept at most (each one digest): the oldest go first


@dataclass(frozen=True)
class Lookup:
    """What the cache held for one request, and the prefixes that request would write."""

    cached: int  # prompt tokens read from the cache
    keys: tuple[str, ...]  # digests of its cacheable prefixes, shortest first


class PromptCache:
    """The prefixes that earlier requests wrote, usable from their writer's first token."""

    def __init__(self, min_tokens: int = 1024, ttl_s: float = TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.min_tokens, self.ttl_s, self.clock = min_tokens, ttl_s, clock
        self.entries: OrderedDict[str, float] = OrderedDict()  # digest -> last used

    def _keys(self, messages: Sequence[Mapping[str, object]]) -> list[tuple[int, str]]:
        text = "".join(f"{m.get('role', '')}\x1f{m.get('content') or ''}\x1e"
                       for m in messages)
        keys, digest, done = [], hashlib.blake2b(digest_size=16), 0
        step = BLOCK_TOKENS * CHARS_PER_TOKEN
        for end in range(self.min_tokens * CHARS_PER_TOKEN, len(text) + 1, step):
            digest.update(text[done:end].encode())
            done = end
            keys.append((end // CHARS_PER_TOKEN, digest.copy().hexdigest()))
        return keys

    def lookup(self, messages: Sequence[Mapping[str, object]], prompt_tokens: int) -> Lookup:
        """The longest prefix of ``messages`` still in the cache (0 tokens when none)."""
        now, cached = self.clock(), 0
        keys = self._keys(messages)
        for tokens, key in keys:  # each digest covers its whole prefix: the longest live wins
            used = self.entries.get(key)
            if used is not None and now - used <= self.ttl_s:
                cached = tokens
                self.entries[key] = now
                self.entries.move_to_end(key)
        return Lookup(min(cached, prompt_tokens), tuple(key for _, key in keys))

    def write(self, found: Lookup) -> None:
        """The request of ``found`` sent its first token: its prefixes are usable now."""
        now = self.clock()
        for key in found.keys:
            self.entries[key] = now
            self.entries.move_to_end(key)
        while len(self.entries) > CAPACITY:
            self.entries.popitem(last=False)
