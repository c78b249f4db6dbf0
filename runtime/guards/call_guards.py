"""What guards a call besides the rate limit: the spend cap, the response cache, hedging.

Each is optional and reached through a small protocol, so the call path is tested with local
objects and runs on Ray with actor handles behind the same faces
(``chainray.actors.spend``, ``chainray.actors.cache``).
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from chainray.errors import EndpointError
from chainray.guards.cache import CachedReply
from chainray.guards.spend import worst_case_prompt_tokens
from chainray.results import RunResult

__all__ = ["Budget", "ReplyCache", "CallGuards", "Latencies", "StragglerLimits", "Sample",
           "spend_cap_error", "worst_case_tokens", "stopped_by_cap", "SPEND_CAP"]


class Budget(Protocol):
    """The spend cap as the call path sees it: reserve the worst case, settle the real cost."""

    async def reserve(self, model: str, prompt_tokens: int, completion_tokens: int
                      ) -> int | None: ...
    async def settle(self, reservation: int, model: str, prompt_tokens: int,
                     completion_tokens: int, cached_tokens: int = 0) -> None: ...


class ReplyCache(Protocol):
    async def get(self, key: str) -> CachedReply | None: ...
    async def put(self, key: str, reply: CachedReply) -> None: ...


def worst_case_tokens(kwargs: Mapping[str, Any]) -> tuple[int, int]:
    """(prompt, completion) upper bounds of one request as it is sent."""
    completion = kwargs.get("max_completion_tokens") or kwargs.get("max_tokens") or 0
    return worst_case_prompt_tokens(kwargs.get("messages") or ()), int(completion)


SPEND_CAP = "the spend cap (--max-cost) admits no further call"


def spend_cap_error(model: str) -> EndpointError:
    return EndpointError(f"{SPEND_CAP} to {model}; nothing was sent", code="spend_cap")


def stopped_by_cap(result: RunResult) -> bool:
    """Whether the spend cap refused one of the run's steps (a resume runs it again)."""
    return any(step.error_code == "spend_cap" for step in result.steps)


# model, step tag, max_tokens asked, seconds, then (None: not measured) seconds to the first
# content token, decode seconds per character and characters of a streamed reply
Sample = tuple[str, str | None, int, float, float | None, float | None, int | None]


@dataclass(frozen=True)
class StragglerLimits:
    """When a request of one step is a straggler; None where too few requests are known.

    ``duration_s``: no whole answer after this long; ``per_char_s``: once streaming, its answer
    arrives slower than this many seconds per character. ``reply_chars``, ``median_per_char_s``
    and ``median_first_token_s``: the step's median reply length, pace and time to first token,
    to tell which of two streams ends sooner."""

    duration_s: float | None = None
    per_char_s: float | None = None
    reply_chars: float | None = None
    median_per_char_s: float | None = None
    median_first_token_s: float | None = None


class Latencies:
    """Durations of this invocation's finished requests, to tell when one is a straggler.

    A request is compared with its peers of the same model: first the requests of the same
    step (in a batch, the other runs' copies of a step ask for as much, so they take about as
    long); until that view holds ``min_samples``, all of the model's requests (whole durations
    in seconds per requested ``max_tokens``, so that a 300-token and a 1500-token step share
    one scale). Each view keeps the latest ``window`` samples: memory stays bounded in a long
    batch and the quantiles follow the endpoint as it changes; it limits nothing that is sent.

        latencies.add("gpt-4o-mini", "hardware", 400, 5.1, 0.4, 0.002, 2100)
        latencies.threshold("gpt-4o-mini", "hardware", 400, 0.95)  # seconds; None: too few
    """

    def __init__(self, min_samples: int = 10, window: int = 2000) -> None:
        self.min_samples, self.window = min_samples, window
        self.by_key: dict[str, list[float]] = {}  # sorted
        self.arrivals: dict[str, deque[float]] = {}  # the same samples, oldest first

    def add(self, model: str, tag: str | None, max_tokens: int, seconds: float,
            first_token_s: float | None = None, per_char_s: float | None = None,
            chars: int | None = None) -> None:
        self._put(f"{model}|{tag}", seconds)
        self._put(model, seconds / max(1, max_tokens))
        for kind, value in (("ttft", first_token_s), ("char", per_char_s), ("len", chars)):
            if value is not None:
                self._put(f"{kind}|{model}|{tag}", value)
                self._put(f"{kind}|{model}", value)

    def _put(self, key: str, value: float) -> None:
        known, arrivals = self.by_key.setdefault(key, []), self.arrivals.setdefault(key, deque())
        bisect.insort(known, value)
        arrivals.append(value)
        if len(arrivals) > self.window:  # the oldest sample leaves the view
            del known[bisect.bisect_left(known, arrivals.popleft())]

    async def fresh(self) -> None:
        """Bring the view up to date (a view shared between processes asks for news)."""

    def merge(self, samples: Sequence[Sample]) -> None:
        for sample in samples:
            Latencies.add(self, *sample)

    def quantile(self, key: str, q: float) -> float | None:
        known: Sequence[float] = self.by_key.get(key, ())
        if len(known) < self.min_samples:
            return None
        # The smallest duration that at least ``q`` of the known ones do not exceed.
        return known[max(0, math.ceil(q * len(known)) - 1)]

    def threshold(self, model: str, tag: str | None, max_tokens: int,
                  q: float) -> float | None:
        """Seconds after which a request of this step is a straggler (None: not known yet)."""
        if (seconds := self.quantile(f"{model}|{tag}", q)) is not None:
            return seconds
        per_token = self.quantile(model, q)
        return None if per_token is None else per_token * max(1, max_tokens)

    def limits(self, model: str, tag: str | None, max_tokens: int, q: float) -> StragglerLimits:
        """Each rule's limit for a request of this step (the step's own view first)."""
        def step_or_model(kind: str, q: float = q) -> float | None:
            value = self.quantile(f"{kind}|{model}|{tag}", q)
            return value if value is not None else self.quantile(f"{kind}|{model}", q)

        return StragglerLimits(
            self.threshold(model, tag, max_tokens, q), step_or_model("char"),
            self.quantile(f"len|{model}|{tag}", 0.5), step_or_model("char", 0.5),
            step_or_model("ttft", 0.5))


@dataclass
class CallGuards:
    """The optional guards of one invocation's calls (None: not in use)."""

    budget: Budget | None = None
    cache: ReplyCache | None = None
    hedge_after: float | None = None  # quantile of finished requests' durations
    latencies: Latencies | None = None
