"""One invocation-wide view of finished request durations, for hedging stragglers.

Every step runner keeps a local ``Latencies`` and trades what it saw for what the others saw
with one small actor, at most every ``period_s`` and in the background: a request never waits
on an actor call to learn its hedging threshold, and every runner decides from (nearly) all of
the invocation's finished requests, not from its own share of them.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import ray

from chainray.guards.call_guards import Latencies, Sample

__all__ = ["DurationLog", "Durations", "SharedLatencies"]

log = logging.getLogger(__name__)


class DurationLog:
    """The actor's logic, plain (``Durations`` is this class on Ray): a log of samples that
    each runner reads from its own cursor on.

    The log keeps the latest ``keep`` samples (memory, not a limit on calls: a runner trades
    every ``period_s``, so it never falls that far behind, and its own view keeps fewer per
    step anyway); a cursor from before the oldest kept sample reads from that sample on."""

    def __init__(self, keep: int = 20_000) -> None:
        self.keep = keep
        self.log: list[tuple[str, Sample]] = []
        self.dropped = 0  # samples that have left the front of the log

    def __repr__(self) -> str:
        return f"Durations({self.dropped + len(self.log)} samples, {len(self.log)} kept)"

    def exchange(self, source: str, cursor: int, new: list[Sample]
                 ) -> tuple[int, list[Sample]]:
        """Add ``source``'s new samples; return the others' samples logged since ``cursor``
        and the cursor to give next time."""
        start = max(0, cursor - self.dropped)
        others = [sample for who, sample in self.log[start:] if who != source]
        self.log.extend((source, sample) for sample in new)
        if len(self.log) >= 2 * self.keep:  # trimmed in halves: each sample moves once
            excess = len(self.log) - self.keep
            del self.log[:excess]
            self.dropped += excess
        return self.dropped + len(self.log), others


# Serial: one log. Its calls are bookkeeping, not tasks to show in the dashboard.
Durations = ray.remote(num_cpus=0, max_concurrency=1, enable_task_events=False)(DurationLog)


class SharedLatencies(Latencies):
    """A runner's ``Latencies`` kept in step with the invocation's ``Durations`` actor.

    Local samples count at once; others' arrive with the next exchange. A failed exchange
    only delays sharing (hedging then uses what this runner knows)."""

    def __init__(self, handle: ray.actor.ActorHandle, period_s: float = 0.1,
                 min_samples: int = 10, timeout_s: float = 30.0,
                 fresh_wait_s: float = 1.0) -> None:
        super().__init__(min_samples)
        self.handle, self.period_s, self.timeout_s = handle, period_s, timeout_s
        self.fresh_wait_s = fresh_wait_s
        self.source = uuid.uuid4().hex
        self.cursor = 0
        self.pending: list[Sample] = []
        self.exchanged_at = float("-inf")
        self.exchanging: asyncio.Future | None = None
        self.timer: asyncio.TimerHandle | None = None

    def add(self, model: str, tag: str | None, max_tokens: int, seconds: float,
            first_token_s: float | None = None, per_char_s: float | None = None,
            chars: int | None = None) -> None:
        super().add(model, tag, max_tokens, seconds, first_token_s, per_char_s, chars)
        self.pending.append((model, tag, max_tokens, seconds, first_token_s, per_char_s,
                             chars))
        self._exchange_soon()

    async def fresh(self) -> None:
        """Trade samples unless that was done within ``period_s``; waits for the exchange (a
        request asks once it is on its way, so this never delays a request)."""
        self._exchange_soon()
        if self.exchanging is not None and not self.exchanging.done():
            try:  # shielded: other requests may wait on the same exchange
                await asyncio.wait_for(asyncio.shield(self.exchanging), self.fresh_wait_s)
            except asyncio.TimeoutError:
                pass  # a slow actor: decide with what is known

    def _exchange_soon(self) -> None:
        if self.exchanging is not None and not self.exchanging.done():
            return  # it sends what is pending when it ends
        wait = self.exchanged_at + self.period_s - time.monotonic()
        if wait > 0:
            if self.pending and self.timer is None:  # samples reach the others within period_s
                self.timer = asyncio.get_running_loop().call_later(wait, self._on_timer)
            return
        self.exchanged_at = time.monotonic()
        self.exchanging = asyncio.ensure_future(self._exchange())

    def _on_timer(self) -> None:
        self.timer = None
        self._exchange_soon()

    async def _exchange(self) -> None:
        new, self.pending = self.pending, []
        try:
            self.cursor, others = await asyncio.wait_for(
                self.handle.exchange.remote(self.source, self.cursor, new), self.timeout_s)
        except (ray.exceptions.RayError, asyncio.TimeoutError) as exc:
            log.debug("durations exchange failed (hedging uses local ones): %s", exc)
            self.pending = new + self.pending
            return
        self.merge(others)
        if self.pending:
            asyncio.get_running_loop().call_soon(self._exchange_soon)
