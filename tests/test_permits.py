"""The RateLimiter's logic without Ray: pacing, concurrency, priority, leases, penalties."""

from __future__ import annotations

import asyncio
import time

import pytest

from chainray.errors import PermitRefused
from chainray.exec.permits import Limits, PermitBook


async def test_requests_are_paced_not_burst():
    book = PermitBook(Limits(rpm=600, tpm=10**6, target_share=1.0))  # 10/s, starts with 5
    started = time.monotonic()
    for _ in range(15):
        permit = await book.acquire(10)
        book.release(permit.id, 10)
    assert 0.95 < time.monotonic() - started < 1.3  # 5 at once, then 10 more at 10/s


async def test_token_debt_delays_the_next_caller():
    book = PermitBook(Limits(rpm=10**5, tpm=600, target_share=1.0))  # 10 tokens/s
    await book.acquire(15)                    # bigger than the bucket: 5 tokens of debt
    started = time.monotonic()
    await book.acquire(5)                     # waits for 10 tokens: 1 s
    assert 0.9 < time.monotonic() - started < 1.2


async def test_release_refunds_unused_tokens():
    book = PermitBook(Limits(rpm=10**5, tpm=600, target_share=1.0))
    permit = await book.acquire(10)            # the whole bucket
    book.release(permit.id, used_tokens=2)     # 8 tokens come back
    started = time.monotonic()
    await book.acquire(8)
    assert time.monotonic() - started < 0.05


async def test_concurrency_cap_and_fifo():
    book = PermitBook(Limits(rpm=10**5, tpm=10**7, max_concurrency=2))
    first, second = await book.acquire(1), await book.acquire(1)
    order: list[str] = []

    async def wait(name: str):
        permit = await book.acquire(1)
        order.append(name)
        return permit

    waiters = [asyncio.create_task(wait(n)) for n in ("a", "b", "c")]
    await asyncio.sleep(0.05)
    assert order == [] and book.stats()["waiting"] == 3
    book.release(first.id, 1)
    book.release(second.id, 1)
    await asyncio.sleep(0.01)
    assert order == ["a", "b"]
    book.release((await waiters[0]).id, 1)
    await asyncio.gather(*waiters)
    assert order == ["a", "b", "c"]


async def test_longest_remaining_path_first_then_fifo():
    book = PermitBook(Limits(rpm=10**5, tpm=10**7, max_concurrency=1))
    held = await book.acquire(1)
    order: list[str] = []

    async def wait(name: str, priority: float):
        book.release((await book.acquire(1, priority)).id, 1)
        order.append(name)

    tasks = [asyncio.create_task(wait(n, p)) for n, p in
             (("low", 1), ("high", 4), ("mid", 2), ("high2", 4))]
    await asyncio.sleep(0.02)
    book.release(held.id, 1)
    await asyncio.gather(*tasks)
    assert order == ["high", "high2", "mid", "low"]


async def test_priority_off_is_fifo():
    book = PermitBook(Limits(rpm=10**5, tpm=10**7, max_concurrency=1, priority=False))
    held = await book.acquire(1)
    order: list[str] = []

    async def wait(name: str, priority: float):
        book.release((await book.acquire(1, priority)).id, 1)
        order.append(name)

    tasks = [asyncio.create_task(wait(n, p)) for n, p in (("low", 1), ("high", 4))]
    await asyncio.sleep(0.02)
    book.release(held.id, 1)
    await asyncio.gather(*tasks)
    assert order == ["low", "high"]


async def test_expired_lease_frees_its_slot():
    book = PermitBook(Limits(rpm=10**5, tpm=10**7, max_concurrency=1, lease_ttl_s=0.1))
    await book.acquire(1)                      # its holder "dies" and never releases
    started = time.monotonic()
    await book.acquire(1)
    assert 0.08 < time.monotonic() - started < 0.3 and book.stats()["expired_leases"] == 1


async def test_penalty_holds_every_caller_until_retry_after():
    book = PermitBook(Limits(rpm=10**5, tpm=10**7))
    permit = await book.acquire(1)
    book.penalize(permit.id, retry_after_s=0.3)
    started = time.monotonic()
    await asyncio.gather(book.acquire(1), book.acquire(1))
    assert time.monotonic() - started >= 0.29
    assert book.stats()["share"] < 0.95


async def test_headers_lower_capacity_but_never_raise_it():
    book = PermitBook(Limits(rpm=10**5, tpm=6000, target_share=1.0))
    permit = await book.acquire(10)
    book.release(permit.id, 10, {"x-ratelimit-remaining-tokens": "0",
                                 "x-ratelimit-limit-tokens": "3000"})
    assert book.limits.tpm == 3000 and book.level["tokens"] < 1
    book.release("unknown", 1, {"x-ratelimit-limit-tokens": "999999"})
    assert book.limits.tpm == 3000


async def test_request_larger_than_the_limit_is_refused():
    book = PermitBook(Limits(rpm=100, tpm=1000))
    with pytest.raises(PermitRefused, match="1001"):
        await book.acquire(1001)


async def test_timed_out_waiter_leaves_no_permit_behind():
    book = PermitBook(Limits(rpm=10**5, tpm=10**7, max_concurrency=1))
    held = await book.acquire(1)
    with pytest.raises(asyncio.TimeoutError):
        await book.acquire(1, timeout_s=0.05)
    book.release(held.id, 1)
    assert book.stats()["in_flight"] == 0
    await asyncio.wait_for(book.acquire(1), 0.5)
