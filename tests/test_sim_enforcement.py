"""The simulator's two enforcements: a minute bucket and a minute's limit enforced per second."""

from __future__ import annotations

from chainray.sim.capacity import LimitBuckets
from chainray.sim.config import SimConfig


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def buckets(clock: Clock, **settings) -> LimitBuckets:
    made = LimitBuckets.for_config(SimConfig(rpm=600, tpm=60_000, **settings))
    for bucket in (made.requests, made.tokens):
        bucket.clock, bucket.updated = clock, clock()
    return made


def test_a_minute_bucket_admits_a_minute_at_once():
    limits = buckets(Clock())
    assert sum(limits.admit(10).admitted for _ in range(700)) == 600


def test_per_second_enforcement_admits_one_second_then_paces():
    clock = Clock()
    limits = buckets(clock, enforce="second")         # 10 requests and 1,000 tokens a second
    assert sum(limits.admit(10).admitted for _ in range(50)) == 10
    refused = limits.admit(10)
    assert not refused.admitted and refused.dimension == "requests"
    assert 0 < refused.retry_after_s <= 0.1
    clock.now = 0.5
    assert sum(limits.admit(10).admitted for _ in range(50)) == 5
    assert limits.headers()["x-ratelimit-remaining-requests"] == "0"


def test_per_second_enforcement_admits_a_large_request_into_a_full_bucket():
    clock = Clock()
    limits = buckets(clock, enforce="second")
    assert limits.admit(2500).admitted                # 2.5 s of tokens: debt
    clock.now = 1.0
    assert not limits.admit(100).admitted             # the debt (1,500) is repaid first
    clock.now = 1.7
    assert limits.admit(100).admitted
    assert limits.admit(60_001).too_large             # more than a minute: never
