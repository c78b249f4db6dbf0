"""Server-side rate limits as OpenAI enforces them: continuously refilling buckets charged at
admission (prompt estimate + max_tokens), with the headers OpenAI sends on every answer.

Two enforcements: ``minute`` buckets hold ``burst_s`` of refill (60 s: a minute's budget at
once); ``second`` buckets hold one second of it (OpenAI: "60,000 requests/minute may be
enforced as 1,000 requests/second"), and a request larger than one second's tokens is
admitted into a full bucket, leaving debt, so that it is slow but possible."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from chainray.durations import format_duration
from chainray.sim.config import SimConfig

__all__ = ["Bucket", "LimitBuckets", "Admission"]


@dataclass
class Bucket:
    limit_per_min: int
    burst_s: float
    level: float = field(init=False)
    updated: float = field(init=False)
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self.level, self.updated = self.capacity, self.clock()

    @property
    def rate(self) -> float:
        return self.limit_per_min / 60.0

    @property
    def capacity(self) -> float:
        return self.rate * self.burst_s

    def refill(self) -> None:
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        return max(0.0, (amount - self.level) / self.rate)

    def reset_s(self) -> float:
        return (self.capacity - self.level) / self.rate


@dataclass
class Admission:
    admitted: bool
    dimension: str | None = None  # "requests" or "tokens" when refused
    retry_after_s: float = 0.0
    too_large: bool = False


class LimitBuckets:
    """A requests bucket and a tokens bucket for one key."""

    def __init__(self, rpm: int, tpm: int, burst_s: float,
                 clock: Callable[[], float] = time.monotonic, debt: bool = False) -> None:
        self.requests = Bucket(rpm, burst_s, clock=clock)
        self.tokens = Bucket(tpm, burst_s, clock=clock)
        self.debt = debt  # may a request larger than the bucket go into a full one?

    @classmethod
    def for_config(cls, config: SimConfig) -> LimitBuckets:
        if config.enforce == "second":
            return cls(config.rpm, config.tpm, 1.0, debt=True)
        return cls(config.rpm, config.tpm, config.burst_s)

    def admit(self, charge_tokens: int) -> Admission:
        self.requests.refill()
        self.tokens.refill()
        largest = self.tokens.limit_per_min if self.debt else self.tokens.capacity
        if charge_tokens > largest:
            return Admission(False, "tokens", 0.0, too_large=True)
        if self.requests.level < 1:
            return Admission(False, "requests", self.requests.wait_for(1))
        need = min(charge_tokens, self.tokens.capacity) if self.debt else charge_tokens
        if self.tokens.level < need:
            return Admission(False, "tokens", self.tokens.wait_for(need))
        self.requests.level -= 1
        self.tokens.level -= charge_tokens
        return Admission(True)

    def refund(self, tokens: int) -> None:
        self.tokens.refill()
        self.tokens.level = min(self.tokens.capacity, self.tokens.level + tokens)

    def headers(self) -> dict[str, str]:
        self.requests.refill()
        self.tokens.refill()
        out = {}
        for name, bucket in (("requests", self.requests), ("tokens", self.tokens)):
            out[f"x-ratelimit-limit-{name}"] = str(bucket.limit_per_min)
            out[f"x-ratelimit-remaining-{name}"] = str(max(0, int(bucket.level)))
            out[f"x-ratelimit-reset-{name}"] = format_duration(bucket.reset_s())
        return out
