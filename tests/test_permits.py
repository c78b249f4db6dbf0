"""The RateLimiter's logic without Ray: pacing, limits and their sources, concurrency,
priority, leases, Retry-After bounds. In the event loop's time, which looptime makes virtual:
a wait is exact and instant, and a busy machine cannot stretch it."""

from __future__ import annotations

import asyncio

import pytest

from chainray.errors import ChainrayError, PermitRefused
from chainray.limit.permit_book import SLOW_START, Limits, PermitBook, PermitTimeout

pytestmark = pytest.mark.looptime


def now() -> float:
    """The event loop's clock: virtual here (looptime), so waits are exact and instant."""
    return asyncio.get_running_loop().time()


def flags(**values) -> Limits:
    """Limits as a user's flags give them."""
    return Limits(**values, **{f"{k}_from": "flag" for k in ("rpm", "tpm") if k in values})


async def test_requests_are_paced_after_a_one_second_burst():
    book = PermitBook(flags(rpm=600, tpm=10**6, target_share=1.0), clock=now)  # 10/s, starts full
    started = now()
    for _ in range(10):
        book.release((await book.acquire(10)).id, 10)
    assert now() - started < 0.1  # a chain that fits the budget does not wait
    for _ in range(5):
        book.release((await book.acquire(10)).id, 10)
    assert 0.4 < now() - started < 0.8  # then 10/s


async def test_no_limit_is_invented():
    book = PermitBook(Limits(max_concurrency=1000), clock=now)
    started = now()
    for _ in range(1000):
        book.release((await book.acquire(100_000)).id, 100_000)
    assert now() - started < 0.5
    assert book.limits.rpm is None and book.limits.tpm is None
    assert "rpm not paced" in book.stats()["described"]


async def test_rpm_alone_is_never_bound_by_a_made_up_tpm():
    book = PermitBook(flags(rpm=720), clock=now)  # 12 a second of burst, no tpm
    started = now()
    for _ in range(12):
        book.release((await book.acquire(50_000)).id, 50_000)
    assert now() - started < 0.1
    assert book.limits.describe().startswith("rpm 720 from --rpm; tpm not paced")


async def test_limits_are_learned_up_and_down_but_never_override_a_flag():
    book = PermitBook(flags(rpm=600), clock=now)
    for limit, expected in (("3000", 3000), ("9000", 9000), ("1500", 1500)):
        permit = await book.acquire(10)
        book.release(permit.id, 10, {"x-ratelimit-limit-tokens": limit,
                                     "x-ratelimit-limit-requests": "300",
                                     "x-ratelimit-remaining-tokens": limit})
        assert book.limits.tpm == expected and book.limits.tpm_from == "server"
    assert book.limits.rpm == 600 and book.limits.rpm_from == "flag"
    assert "tpm 1,500 learned from the server" in book.limits.describe()
    assert book.stats()["limits"]["rpm"] == 300      # a lower stated limit is still obeyed
    assert "rpm 600 from --rpm" in book.describe() and "states rpm 300" in book.describe()


async def test_headers_lower_the_level_and_subtract_what_was_granted_since():
    book = PermitBook(flags(tpm=6000, target_share=1.0), clock=now)  # 100 tokens/s, 1 s bucket
    first = await book.acquire(10)
    await book.acquire(30)                                 # granted after `first`
    book.release(first.id, 10, {"x-ratelimit-remaining-tokens": "40"})
    assert book.level["tokens"] <= 10.5                    # 40 left minus 30 granted since
    book.release("unknown", 1, {"x-ratelimit-remaining-tokens": "garbage"})  # ignored


async def test_a_large_request_waits_only_for_the_budget_the_server_shows():
    book = PermitBook(flags(tpm=6000), clock=now)                     # 100 tokens/s: 1 s holds 100
    permit = await book.acquire(50)
    book.release(permit.id, 50, {"x-ratelimit-remaining-tokens": "5900",  # a minute bucket
                                 "x-ratelimit-limit-tokens": "6000"})
    started = now()
    await book.acquire(2000)
    assert now() - started < 0.05
    assert book.window["tokens"] > 50


async def test_a_request_larger_than_the_bucket_leaves_debt_for_the_next():
    book = PermitBook(flags(rpm=10**5, tpm=600, target_share=1.0), clock=now)  # 10 tokens/s
    await book.acquire(15)                     # the full bucket (10) and 5 of debt
    started = now()
    await book.acquire(5)                      # waits for 10 tokens: 1 s
    assert 0.9 < now() - started < 1.2


async def test_release_refunds_unused_tokens():
    book = PermitBook(flags(rpm=10**5, tpm=600, target_share=1.0), clock=now)
    permit = await book.acquire(10)            # the whole bucket
    book.release(permit.id, used_tokens=2)     # 8 tokens come back
    started = now()
    await book.acquire(8)
    assert now() - started < 0.05


async def test_concurrency_cap_and_fifo():
    book = PermitBook(Limits(max_concurrency=2), clock=now)
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


async def test_ten_thousand_waiters_all_complete():
    book = PermitBook(Limits(max_concurrency=64), clock=now)

    async def step():
        permit = await book.acquire(100, timeout_s=60)
        await asyncio.sleep(0)
        book.release(permit.id, 50)

    await asyncio.wait_for(asyncio.gather(*(step() for _ in range(10_000))), 60)
    assert book.stats()["granted"] == 10_000 and book.stats()["in_flight"] == 0


async def test_longest_remaining_path_first_then_fifo():
    book = PermitBook(Limits(max_concurrency=1), clock=now)
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
    book = PermitBook(Limits(max_concurrency=1, priority=False), clock=now)
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
    book = PermitBook(Limits(max_concurrency=1, lease_ttl_s=0.1), clock=now)
    await book.acquire(1)                      # its holder "dies" and never releases
    started = now()
    await book.acquire(1)
    assert 0.08 < now() - started < 0.3 and book.stats()["expired_leases"] == 1


async def test_penalty_holds_every_caller_until_retry_after():
    book = PermitBook(flags(rpm=10**5, tpm=10**7), clock=now)
    permit = await book.acquire(1, timeout_s=30)
    book.penalize(permit.id, retry_after_s=0.3)
    started = now()
    await asyncio.gather(book.acquire(1), book.acquire(1))
    assert now() - started >= 0.29
    assert book.stats()["share"] < 0.95


async def test_a_wait_longer_than_the_retry_budget_holds_nobody():
    book = PermitBook(flags(rpm=10**5, tpm=10**7), clock=now)
    permit = await book.acquire(1, timeout_s=120)   # the caller has 120 s of budget left
    book.penalize(permit.id, retry_after_s=3600)    # its step fails; no one else is held
    started = now()
    await book.acquire(1, timeout_s=120)            # a later driver, healthy endpoint
    assert now() - started < 0.05 and book.stats()["holds_refused"] == 1


async def test_a_penalty_never_holds_past_the_cap():
    book = PermitBook(Limits(max_hold_s=0.2), clock=now)
    permit = await book.acquire(1)                  # no budget given: the cap applies
    book.penalize(permit.id, retry_after_s=3600)
    started = now()
    await book.acquire(1)
    assert 0.15 < now() - started < 0.5


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -5.0])
async def test_a_nonsense_retry_after_falls_back_to_a_short_hold(value):
    book = PermitBook(Limits(), clock=now)
    permit = await book.acquire(1)
    book.penalize(permit.id, retry_after_s=value)
    assert book.stats()["held_s"] <= 1.0


async def test_acquire_fails_at_once_when_a_hold_outlasts_its_timeout():
    book = PermitBook(Limits(), clock=now)
    book.penalize((await book.acquire(1)).id, retry_after_s=30)
    started = now()
    with pytest.raises(PermitTimeout, match="retry budget is 2 s") as caught:
        await book.acquire(1, timeout_s=2)
    assert now() - started < 0.05
    assert isinstance(caught.value, ChainrayError) and isinstance(caught.value, TimeoutError)


async def test_a_429_without_limits_halves_concurrency_and_answers_restore_it():
    book = PermitBook(Limits(max_concurrency=8), clock=now)
    permits = [await book.acquire(1) for _ in range(8)]
    book.penalize(permits[0].id, retry_after_s=0)
    assert book.stats()["concurrency"] == 4
    for permit in permits[1:]:
        book.release(permit.id, 1)
    assert book.stats()["concurrency"] > 4


async def test_explicit_limits_reconfigure_and_learned_ones_do_not():
    book = PermitBook(flags(rpm=500, tpm=200_000), clock=now)
    change = book.configure(flags(rpm=30))
    assert change and book.limits.rpm == 30 and book.limits.tpm == 200_000
    assert "rpm 30 from --rpm" in change and "was: rpm 500" in change
    assert book.configure(Limits(rpm=1000, rpm_from="server")) is None
    assert book.configure(Limits(rpm=1000, rpm_from="simulator")) is None
    assert book.limits.rpm == 30
    assert book.level["requests"] <= 1.0       # 30/min: a 1 s bucket holds one request


async def test_request_larger_than_the_limit_is_refused():
    book = PermitBook(flags(rpm=100, tpm=1000), clock=now)
    with pytest.raises(PermitRefused, match="1001"):
        await book.acquire(1001)


async def test_timed_out_waiter_leaves_no_permit_behind():
    book = PermitBook(Limits(max_concurrency=1), clock=now)
    held = await book.acquire(1)
    with pytest.raises(PermitTimeout, match="retry budget"):
        await book.acquire(1, timeout_s=0.05)
    book.release(held.id, 1)
    assert book.stats()["in_flight"] == 0
    await asyncio.wait_for(book.acquire(1), 0.5)


async def test_a_tighter_flag_keeps_its_own_pace_against_a_minute_bucket():
    book = PermitBook(flags(rpm=120), clock=now)                  # the server allows 6000 a minute
    permit = await book.acquire(1)
    book.release(permit.id, 1, {"x-ratelimit-limit-requests": "6000",
                                "x-ratelimit-remaining-requests": "5990"})
    assert book.window["requests"] == 1.0
    assert book._capacity("requests") == pytest.approx(0.95 * 2.0)  # 1 s at the paced rate


async def test_without_limits_calls_in_flight_slow_start_to_the_cap():
    book = PermitBook(Limits(max_concurrency=100), clock=now)
    permits = [await book.acquire(1) for _ in range(SLOW_START)]
    assert book.stats()["concurrency"] == SLOW_START
    for permit in permits:
        book.release(permit.id, 1)                # each answer lets one more in
    assert book.stats()["concurrency"] == 2 * SLOW_START
    paced = PermitBook(flags(rpm=10, tpm=10), clock=now)
    assert paced.stats()["concurrency"] == 64  # paced: no ramp
