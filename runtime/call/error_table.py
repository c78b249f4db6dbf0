"""Foreign errors on the call path become ``EndpointError`` here, and only here.

One table (as httpx's ``map_httpcore_exceptions``) decides per exception class what a failure
means: retryable or not, with which status, code and Retry-After. Wrap every attempt in
``map_exceptions``; what leaves it is an ``EndpointError`` (picklable, one line, no key) or a
``BaseException`` that is not an error of the call (cancellation, KeyboardInterrupt).

    with map_exceptions(secret):
        raw = await client.chat.completions.with_raw_response.create(...)

A second table, ``error_code``, says what a failure comes to for the user: the closed
``ErrorCode`` a failed step reports (``spend_cap``, ``rate_limited``, ``auth``, ...). It reads
an error's code and status, never its message.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING

from chainray.errors import EndpointError, Interrupted, PermitRefused
from chainray.results import ErrorCode
from chainray.text import one_line

if TYPE_CHECKING:
    import openai

__all__ = ["map_exceptions", "to_endpoint_error", "parse_retry_after", "redact",
           "NO_RETRY_429", "TOO_LARGE", "error_code"]

log = logging.getLogger("chainray.calls")

NO_RETRY_429 = {"insufficient_quota", "credit_balance_exhausted",
                "organization_spend_limit_exceeded", "project_spend_limit_exceeded",
                "organization_usage_limit_exceeded"}
# Codes of a request the server will never take as it is (shorten the prompt, not retry).
TOO_LARGE = {"request_too_large", "context_length_exceeded"}


def _seconds(text: str, scale: float = 1.0) -> float | None:
    try:
        value = float(text) * scale
    except (ValueError, TypeError, OverflowError):
        return None
    return value if math.isfinite(value) and value >= 0 else None


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds the server asks us to wait, or None; never raises.

    ``retry-after-ms`` first (OpenAI's), then ``retry-after`` as seconds or an HTTP date.
    Garbage, negative, NaN and infinite values count as not given.
    """
    if not headers:
        return None
    if (seconds := _seconds(headers.get("retry-after-ms", ""), 1 / 1000)) is not None:
        return seconds
    value = headers.get("retry-after")
    if value is None:
        return None
    if (seconds := _seconds(value)) is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def redact(text: str, secret: str) -> str:
    """Remove a secret (and its long prefixes, as some servers echo part of a key)."""
    if len(secret) < 8:
        return text
    for size in (len(secret), 12):
        text = text.replace(secret[:size], "[redacted]")
    return text


def _status_error(exc: openai.APIStatusError, secret: str) -> EndpointError:
    status, code, kind = exc.status_code, exc.code, exc.type
    headers = exc.response.headers if exc.response is not None else {}
    retryable = (status in (408, 409, 429) or status >= 500) and \
        headers.get("x-should-retry") != "false"
    if status == 429 and (code in NO_RETRY_429 or kind == "insufficient_quota"):
        retryable = False
    message = one_line(redact(str(getattr(exc, "message", exc)), secret))
    if status == 413:  # often a proxy's bare page: say what was too large, and how large
        code = code if isinstance(code, str) else "request_too_large"
        size = _request_bytes(exc)
        message = ("the server refuses a request body this large"
                   + (f" ({size:,} bytes sent)" if size else "") + "; shorten the prompt")
    param = getattr(exc, "param", None)
    return EndpointError(message, status=status, code=code if isinstance(code, str) else None,
                         type=kind if isinstance(kind, str) else None,
                         param=param if isinstance(param, str) else None,
                         retry_after=parse_retry_after(headers), retryable=retryable)


def _request_bytes(exc: openai.APIStatusError) -> int | None:
    try:
        request = exc.response.request
        length = request.headers.get("content-length")
        return int(length) if length else len(request.content)
    except Exception:  # no request kept, or a streamed body: the size is then not known
        return None


def _timeout(exc: BaseException, secret: str) -> EndpointError:
    return EndpointError("the request did not finish within --timeout", code="timeout",
                         retryable=True)


# Failures before a connection existed: the server saw no request (not counted in api_calls).
NOT_SENT = {"ConnectError", "ConnectTimeout"}


def _connection(exc: BaseException, secret: str) -> EndpointError:
    cause = exc.__cause__ or exc
    code = "connect_failed" if type(cause).__name__ in NOT_SENT else "connection_error"
    return EndpointError(one_line(redact(f"connection failed: {type(cause).__name__}: {cause}",
                                         secret)), code=code, retryable=True)


def _malformed(exc: BaseException, secret: str) -> EndpointError:
    return EndpointError(one_line(redact(f"malformed reply: {type(exc).__name__}: {exc}",
                                         secret)), status=200, code="malformed_reply",
                         retryable=True)


def _other(exc: BaseException, secret: str) -> EndpointError:
    return EndpointError(one_line(redact(f"{type(exc).__name__}: {exc}", secret)))


@cache
def _table() -> tuple[tuple[type[BaseException] | tuple, Callable[..., EndpointError]], ...]:
    """First match wins: subclasses before their bases. Built on first use, so that importing
    the call path (the driver, the Coordinator) does not pay for openai's import."""
    import httpx2
    import openai

    return (
        (openai.APITimeoutError, _timeout),
        ((asyncio.TimeoutError, TimeoutError), _timeout),
        (openai.APIConnectionError, _connection),
        # A streamed body is read after openai hands it over, so httpx2 errors reach here.
        (httpx2.TimeoutException, _timeout),
        (httpx2.TransportError, _connection),
        (openai.APIStatusError, _status_error),
        ((ValueError, KeyError, IndexError, TypeError, AttributeError, UnicodeError),
         _malformed),
        (Exception, _other),
    )


def to_endpoint_error(exc: BaseException, secret: str = "") -> EndpointError:
    """The ``EndpointError`` that ``exc`` stands for (an ``EndpointError`` passes as it is)."""
    if isinstance(exc, EndpointError):
        return exc
    for kinds, convert in _table():
        if isinstance(exc, kinds):
            return convert(exc, secret)
    return _other(exc, secret)


@contextmanager
def map_exceptions(secret: str = "") -> Iterator[None]:
    """Turn every ``Exception`` raised inside into an ``EndpointError``; log the detail."""
    try:
        yield
    except EndpointError:
        raise
    except Exception as exc:
        log.debug("call failed: %s", redact(traceback.format_exc(), secret))
        raise to_endpoint_error(exc, secret) from None


# An error's own code first (chainray's reasons, then the server's), then its HTTP status.
_BY_CODE: dict[str, ErrorCode] = {
    "spend_cap": "spend_cap", "timeout": "timeout", "permit_timeout": "timeout",
    "connect_failed": "connection", "connection_error": "connection",
    "malformed_reply": "malformed_reply", "empty_content": "empty_content",
    "schema_mismatch": "schema_mismatch", "context_length_exceeded": "too_large",
    "string_above_max_length": "too_large", **{code: "quota" for code in NO_RETRY_429},
    # Batch API lines: the job's window ended before the line ran, or the job was cancelled
    "batch_expired": "timeout", "batch_missing": "timeout", "batch_cancelled": "interrupted",
    # ... or the provider's enqueued-token limit refused it: over it alone, or the queue full
    "batch_too_large": "too_large", "batch_queue_full": "rate_limited",
}
_BY_STATUS: dict[int, ErrorCode] = {401: "auth", 403: "auth", 413: "too_large",
                                    429: "rate_limited"}


def error_code(exc: BaseException) -> ErrorCode:
    """What a call's failure comes to for the user (``StepResult.error_code``).

        >>> error_code(EndpointError("...", status=429, code="insufficient_quota"))
        'quota'
    """
    if isinstance(exc, Interrupted):
        return "interrupted"
    if isinstance(exc, PermitRefused):
        return "too_large"
    if not isinstance(exc, EndpointError):
        return "internal"
    if exc.code in _BY_CODE:
        return _BY_CODE[exc.code]
    if exc.type == "insufficient_quota":
        return "quota"
    status = exc.status or 0
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return "bad_request" if 400 <= status < 500 else "server_error" if status >= 500 else \
        "internal"
