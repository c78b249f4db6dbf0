"""What guards a call besides the rate limit: the spend cap, the response cache, hedging.

Each is optional and reached through a small protocol, so the call path is tested with local
objects and runs on Ray with actor handles behind the same faces
(``chainray.actors.spend``, ``chainray.actors.cache``).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from chainray.errors import EndpointError
from chainray.exec.cache import CachedReply
from chainray.exec.spend import worst_case_prompt_tokens
from chainray.results import RunResult

__all__ = ["Budget", "ReplyCache", "CallGuards", "Latencies", "spend_cap_error",
           "worst_case_tokens", "stopped_by_cap", "SPEND_CAP"]


class Budget(Protocol):
    """The spend cap as the call path sees it: reserve the worst case, settle the real cost."""

    async def reserve(self, model: str, prompt_tokens: int, completion_tokens: int
                      ) -> int | None: ...
    async def settle(self, reservation: int, model: str, prompt_tokens: int,
                     completion_tokens: int) -> None: ...


class ReplyCache(Protocol):
    async def get(self, key: str) -> CachedReply | None: ...
    async def put(self, key: str, reply: CachedReply) -> None: ...


def worst_case_tokens(kwargs: Mapping[str, Any]) -> tuple[int, int]:
    """(prompt, completion) upper bounds of one request as it is sent."""
    completion = kwargs.get("max_completion_tokens") or kwargs.get("max_tokens") or 0
    return worst_case_prompt_tokens(kwargs.get("messages") or ()), int(completion)


SPEND_CAP = "the spend cap (--max-cost) admits no further call"


def spend_cap_error(model: str) -> EndpointError:
    return EndpointError(f"{SPEND_CAP} to {model}; nothing was sent", None, "spend_cap", None,
                         None, False)


def stopped_by_cap(result: RunResult) -> bool:
    """Whether the spend cap refused one of the run's steps (a resume runs it again)."""
    return any(SPEND_CAP in (step.error or "") for step in result.steps)


class Latencies:
    """Durations of finished requests per model, to decide when one is a straggler.

        latencies.add("gpt-4o-mini", 1.2)
        latencies.quantile("gpt-4o-mini", 0.9)   # None until ``min_samples`` are known
    """

    def __init__(self, min_samples: int = 10) -> None:
        self.min_samples = min_samples
        self.by_model: dict[str, list[float]] = {}

    def add(self, model: str, seconds: float) -> None:
        bisect.insort(self.by_model.setdefault(model, []), seconds)

    def quantile(self, model: str, q: float) -> float | None:
        known: Sequence[float] = self.by_model.get(model, ())
        if len(known) < self.min_samples:
            return None
        return known[min(len(known) - 1, int(q * len(known)))]


@dataclass
class CallGuards:
    """The optional guards of one invocation's calls (None: not in use)."""

    budget: Budget | None = None
    cache: ReplyCache | None = None
    hedge_after: float | None = None  # quantile of finished requests' durations
    latencies: Latencies | None = None
