"""The retry policy's budget: Retry-After is honoured when affordable, named when not."""

from __future__ import annotations

import time

import pytest

from chainray.call.retry import retry_policy
from chainray.errors import EndpointError


async def attempts_until_done(policy, errors: list[EndpointError]) -> int:
    count = 0
    async for attempt in policy:
        with attempt:
            count += 1
            if errors:
                raise errors.pop(0)
    return count


def too_many(retry_after: float | None) -> EndpointError:
    return EndpointError("Rate limit reached", status=429, code="rate_limit_exceeded",
                         type="requests", retry_after=retry_after, retryable=True)


async def test_a_retry_after_longer_than_the_budget_fails_at_once_naming_both():
    started = time.monotonic()
    with pytest.raises(EndpointError, match="the server asked to wait 3600 s; retry budget "
                                            "is 120 s") as caught:
        await attempts_until_done(retry_policy(max_delay_s=120), [too_many(3600)])
    assert time.monotonic() - started < 0.5 and not caught.value.retryable


async def test_an_affordable_retry_after_is_waited_then_retried():
    started = time.monotonic()
    assert await attempts_until_done(retry_policy(max_delay_s=5), [too_many(0.2)]) == 2
    assert 0.2 <= time.monotonic() - started < 1.0


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -3.0, None])
async def test_an_unusable_retry_after_falls_back_to_backoff(value):
    policy = retry_policy(max_delay_s=5, backoff_s=0.01, backoff_max_s=0.05)
    assert await attempts_until_done(policy, [too_many(value)]) == 2


async def test_attempts_run_out_with_the_last_error_unchanged():
    errors = [too_many(0.0) for _ in range(3)]
    with pytest.raises(EndpointError, match="^HTTP 429 \\(rate_limit_exceeded\\): Rate limit"):
        await attempts_until_done(retry_policy(max_attempts=3, backoff_s=0.01), errors)
