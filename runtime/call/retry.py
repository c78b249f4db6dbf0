"""The one retry policy for LLM calls, built from tenacity's parts.

Random exponential backoff (AWS "full jitter"), Retry-After honoured as a minimum, bounded in
attempts and in time; only errors that a retry can cure are retried (never 400/401/403/404, a
request too large, or insufficient_quota). A Retry-After longer than what is left of the retry
budget is not waited out: the call fails at once with an error naming both.

    async for attempt in retry_policy(max_attempts=6, max_delay_s=120):
        with attempt:
            ...                                  # one HTTP attempt
"""

from __future__ import annotations

import math
import random

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from chainray.errors import EndpointError

__all__ = ["retry_policy", "is_retryable", "wait_retry_after_or", "retry_after_of",
           "stop_when_retry_after_exceeds", "budget_left"]


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, EndpointError) and exc.retryable


def retry_after_of(retry_state: RetryCallState) -> float | None:
    """The last error's Retry-After in seconds, if it is a usable number."""
    exc = retry_state.outcome.exception() if retry_state.outcome else None
    value = getattr(exc, "retry_after", None)
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return None
    return float(value)


def budget_left(retry_state: RetryCallState, max_delay_s: float) -> float:
    return max(0.0, max_delay_s - (retry_state.seconds_since_start or 0.0))


class wait_retry_after_or(wait_base):
    """Wait the error's Retry-After plus a little jitter, within the budget; otherwise the
    fallback wait."""

    def __init__(self, fallback: wait_base, max_delay_s: float = math.inf) -> None:
        self.fallback, self.max_delay_s = fallback, max_delay_s

    def __call__(self, retry_state: RetryCallState) -> float:
        retry_after = retry_after_of(retry_state)
        if retry_after is None:
            return self.fallback(retry_state)
        wait = retry_after + random.uniform(0, 0.1 * retry_after + 0.05)
        return max(retry_after, min(wait, budget_left(retry_state, self.max_delay_s)))


class stop_when_retry_after_exceeds(stop_base):
    """Stop when the server asks to wait longer than the retry budget has left."""

    def __init__(self, max_delay_s: float) -> None:
        self.max_delay_s = max_delay_s

    def __call__(self, retry_state: RetryCallState) -> bool:
        retry_after = retry_after_of(retry_state)
        return retry_after is not None and retry_after > budget_left(retry_state,
                                                                      self.max_delay_s)


def _give_up(max_delay_s: float):
    """After the last attempt: name an unaffordable Retry-After, else re-raise as it was."""

    def give_up(retry_state: RetryCallState):
        exc = retry_state.outcome.exception()
        retry_after = retry_after_of(retry_state)
        left = budget_left(retry_state, max_delay_s)
        if isinstance(exc, EndpointError) and retry_after is not None and retry_after > left:
            raise EndpointError(f"the server asked to wait {retry_after:.0f} s; retry budget "
                                f"is {left:.0f} s (of {max_delay_s:.0f} s): {exc.message}",
                                status=exc.status, code=exc.code, type=exc.type,
                                param=exc.param, retry_after=retry_after) from exc
        return retry_state.outcome.result()  # re-raises the last error unchanged

    return give_up


def retry_policy(max_attempts: int = 6, max_delay_s: float = 120.0,
                 backoff_s: float = 0.5, backoff_max_s: float = 20.0) -> AsyncRetrying:
    """Retry retryable ``EndpointError``s within ``max_attempts`` and ``max_delay_s``."""
    return AsyncRetrying(
        retry=retry_if_exception(is_retryable),
        wait=wait_retry_after_or(wait_random_exponential(multiplier=backoff_s,
                                                         max=backoff_max_s), max_delay_s),
        stop=(stop_after_attempt(max_attempts) | stop_after_delay(max_delay_s)
              | stop_when_retry_after_exceeds(max_delay_s)),
        retry_error_callback=_give_up(max_delay_s),
    )
