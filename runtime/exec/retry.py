"""The one retry policy for LLM calls, built from tenacity's parts.

Random exponential backoff (AWS "full jitter"), Retry-After honoured as a minimum, bounded in
attempts and in time; only errors that a retry can cure are retried (never 400/401/403/404, a
request too large, or insufficient_quota).
"""

from __future__ import annotations

import random

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)
from tenacity.wait import wait_base

from chainray.errors import EndpointError

__all__ = ["retry_policy", "is_retryable", "wait_retry_after_or"]


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, EndpointError) and exc.retryable


class wait_retry_after_or(wait_base):
    """Wait the error's Retry-After plus a little jitter; otherwise the fallback wait."""

    def __init__(self, fallback: wait_base, cap_s: float = 60.0) -> None:
        self.fallback, self.cap_s = fallback, cap_s

    def __call__(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is None:
            return self.fallback(retry_state)
        return min(self.cap_s, retry_after + random.uniform(0, 0.1 * retry_after + 0.05))


def retry_policy(max_attempts: int = 6, max_delay_s: float = 120.0,
                 backoff_s: float = 0.5, backoff_max_s: float = 20.0) -> AsyncRetrying:
    """Retry retryable ``EndpointError``s; the last error is re-raised as it was."""
    return AsyncRetrying(
        retry=retry_if_exception(is_retryable),
        wait=wait_retry_after_or(wait_random_exponential(multiplier=backoff_s,
                                                         max=backoff_max_s)),
        stop=stop_after_attempt(max_attempts) | stop_after_delay(max_delay_s),
        reraise=True,
    )
