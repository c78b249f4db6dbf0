"""The spend cap of one invocation, held in one actor that every step of every run asks.

One actor is the one place where "spent plus in flight" is known, however many nodes send
calls. Admission is by reservation (``chainray.guards.spend.SpendBook``); a call whose worst case
would fit once calls in flight settle waits for them (bounded), and the first call that can
never fit stops admission for good: running calls finish, nothing new starts.
"""

from __future__ import annotations

import asyncio
import random
import time

import ray

from chainray.guards.spend import SpendBook
from chainray.plan.cost import load_prices

__all__ = ["SpendLedger", "Spend", "RemoteBudget", "WAIT"]

WAIT = -1  # no room now, but calls in flight may free some: ask again shortly


class SpendLedger:
    """The actor's logic, plain (``Spend`` is this class on Ray)."""

    def __init__(self, cap_usd: float, prices: str | None = None) -> None:
        self.book = SpendBook(cap_usd)
        self.prices = load_prices(prices)
        self.stopped = False

    def __repr__(self) -> str:
        state = self.book.state()
        return (f"Spend(cap ${state['cap_usd']}, spent ${state['spent_usd']}, in flight "
                f"${state['in_flight_usd']}{', stopped' if self.stopped else ''})")

    def reserve(self, model: str, prompt_tokens: int, completion_tokens: int) -> int | None:
        """A reservation id, ``WAIT``, or None: the cap has stopped admission."""
        worst = self.prices.cost(model, prompt_tokens, completion_tokens)
        if self.stopped:
            self.book.refused += 1
            return None
        reservation = self.book.reserve(worst)
        if reservation is not None:
            return reservation
        if self.book.reserved and self.book.spent_usd + worst <= self.book.cap_usd:
            self.book.refused -= 1  # not refused yet: it fits once calls in flight settle
            return WAIT
        self.stopped = True
        return None

    def settle(self, reservation: int, model: str, prompt_tokens: int,
               completion_tokens: int, cached_tokens: int = 0) -> None:
        """The real cost: ``cached_tokens`` of the prompt at the model's cached-input price."""
        self.book.settle(reservation, self.prices.cost(model, prompt_tokens, completion_tokens,
                                                       cached_tokens))

    def state(self) -> dict:
        return {**self.book.state(), "stopped": self.stopped}


# Serial: one book, no races. Its calls are bookkeeping, not tasks to show in the dashboard.
Spend = ray.remote(num_cpus=0, max_concurrency=1, enable_task_events=False)(SpendLedger)


class RemoteBudget:
    """The actor as the call path sees it (``chainray.guards.call_guards.Budget``)."""

    def __init__(self, handle: ray.actor.ActorHandle, max_wait_s: float = 300.0) -> None:
        self.handle, self.max_wait_s = handle, max_wait_s

    async def reserve(self, model: str, prompt_tokens: int, completion_tokens: int
                      ) -> int | None:
        deadline = time.monotonic() + self.max_wait_s
        while True:
            answer = await self.handle.reserve.remote(model, prompt_tokens, completion_tokens)
            if answer != WAIT:
                return answer
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(random.uniform(0.05, 0.2))  # spread the askers

    async def settle(self, reservation: int, model: str, prompt_tokens: int,
                     completion_tokens: int, cached_tokens: int = 0) -> None:
        await self.handle.settle.remote(reservation, model, prompt_tokens, completion_tokens,
                                        cached_tokens)
