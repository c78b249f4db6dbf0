"""The call path without Ray: Retry-After parsing, the permit scope on every way out, one
deadline per attempt, and replies read without trust (against tests/fixture_server.py)."""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate

import pytest
from pydantic import SecretStr

from chainray.call.completion import read_completion
from chainray.call.endpoint import Endpoint, LLMReply, LLMRequest, make_client
from chainray.call.error_table import parse_retry_after
from chainray.call.llm import Call
from chainray.errors import EndpointError
from chainray.limit.permit_book import Limits, PermitBook
from chainray.limit.permit_scope import PermitScope
from chainray.text import one_line, terminal_safe
from tests.fixture_server import FixtureServer


@pytest.mark.parametrize("headers, expected", [
    ({"retry-after": "2"}, 2.0),
    ({"retry-after": "0.5"}, 0.5),
    ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
    ({"retry-after-ms": "junk", "retry-after": "3"}, 3.0),
    ({"retry-after": "soon"}, None),
    ({"retry-after": "-5"}, None),
    ({"retry-after": "NaN"}, None),
    ({"retry-after": "inf"}, None),
    ({"retry-after": "1e999"}, None),
    ({"retry-after": ""}, None),
    ({"retry-after": "Mon, 99 Foo 2026 99:99:99 GMT"}, None),
    ({}, None),
    (None, None),
])
def test_retry_after_parsing_never_raises(headers, expected):
    assert parse_retry_after(headers) == expected


def test_retry_after_http_date_is_seconds_from_now():
    assert 8 <= parse_retry_after({"retry-after": formatdate(time.time() + 10,
                                                             usegmt=True)}) <= 10
    assert parse_retry_after({"retry-after": formatdate(time.time() - 60,
                                                        usegmt=True)}) == 0.0


def book() -> PermitBook:
    return PermitBook(Limits(rpm=60_000, tpm=10_000_000, max_concurrency=1))


async def granted_at_once(permits: PermitBook) -> bool:
    permit = await permits.acquire(1, 0.0, timeout_s=0.5)
    permits.release(permit.id)
    return permit.waited_s < 0.1


async def test_permit_is_handed_back_on_error_and_on_cancellation():
    permits = book()
    with pytest.raises(ValueError):
        async with PermitScope(permits, 10):
            raise ValueError("parse failure")
    assert not permits.leases and await granted_at_once(permits)

    async def hold():
        async with PermitScope(permits, 10):
            await asyncio.sleep(60)

    task = asyncio.ensure_future(hold())
    await asyncio.sleep(0.05)
    assert len(permits.leases) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not permits.leases and await granted_at_once(permits)


async def test_a_retryable_429_penalizes_and_a_fatal_one_releases():
    permits = book()
    with pytest.raises(EndpointError):
        async with PermitScope(permits, 10, max_penalty_s=5.0):
            raise EndpointError("slow down", status=429, retry_after=0.1, retryable=True)
    assert permits.penalties == 1 and not permits.leases
    with pytest.raises(EndpointError):
        async with PermitScope(permits, 10):
            raise EndpointError("quota", status=429, code="insufficient_quota")
    assert permits.penalties == 1 and not permits.leases


async def test_a_429_longer_than_the_budget_left_holds_nobody():
    permits = book()
    with pytest.raises(EndpointError):
        async with PermitScope(permits, 10, max_penalty_s=0.2):
            raise EndpointError("slow down", status=429, retry_after=3600, retryable=True)
    assert permits.penalties == 0 and not permits.leases
    assert await granted_at_once(permits)  # the caller gives up; nobody waits for it


async def test_no_permit_within_the_budget_is_an_endpoint_error():
    permits = book()
    held = await permits.acquire(1)
    with pytest.raises(EndpointError, match="permit"):
        async with PermitScope(permits, 10, timeout_s=0.05):
            pass
    permits.release(held.id)
    assert not permits.leases


@pytest.fixture(scope="module")
def hostile():
    with FixtureServer() as server:
        yield server


async def call(server: FixtureServer, timeout_s: float = 1.0, attempts: int = 2):
    endpoint = Endpoint(base_url=server.base_url, api_key=SecretStr("sk-test-0123456789"),
                        timeout_s=timeout_s, max_attempts=attempts, backoff_s=0.01)
    request = LLMRequest(model="m", messages=({"role": "user", "content": "hi"},),
                         max_tokens=20, estimated_tokens=30)
    permits, reply = book(), LLMReply()
    try:
        await Call(make_client(endpoint), permits, endpoint, request, reply=reply).run()
        error = None
    except EndpointError as exc:
        error = exc
    assert not permits.leases and await granted_at_once(permits)
    return reply, error


async def test_timeout_bounds_a_slow_drip_body(hostile):
    hostile.behave("drip")
    started = time.monotonic()
    reply, error = await call(hostile, timeout_s=0.5, attempts=2)
    assert time.monotonic() - started < 3
    assert error is not None and error.code == "timeout" and reply.attempts == 2
    assert hostile.requests == 2


async def test_malformed_reply_retried_then_answered(hostile):
    hostile.behave("empty_choices", times=1)
    reply, error = await call(hostile)
    assert error is None and reply.text == "fixture answer"
    assert reply.attempts == hostile.requests == 2


async def test_a_refused_connection_is_not_counted_as_a_request():
    closed = FixtureServer().start()
    closed.stop()  # nothing listens on its port any more
    reply, error = await call(closed)
    assert error is not None and error.code == "connect_failed" and error.retryable
    assert reply.attempts == 0


async def test_a_request_cancelled_before_it_left_is_not_counted(hostile):
    # One connection: the second call waits for it, and is cancelled there (as a hedge's
    # loser is when the original answers first). The server never sees it.
    import httpx2
    import openai

    from chainray.call.departure import attach_trace

    hostile.behave("drip", times=1)
    endpoint = Endpoint(base_url=hostile.base_url, api_key=SecretStr("sk-test-0123456789"),
                        timeout_s=1.0, max_attempts=1)
    client = openai.AsyncOpenAI(base_url=hostile.base_url, api_key="sk-test", max_retries=0,
                                http_client=openai.DefaultAsyncHttpxClient(
                                    limits=httpx2.Limits(max_connections=1),
                                    event_hooks={"request": [attach_trace]}))
    request = LLMRequest(model="m", messages=({"role": "user", "content": "hi"},),
                         max_tokens=20, estimated_tokens=30)
    permits = PermitBook(Limits(rpm=60_000, tpm=10_000_000, max_concurrency=2))
    first, second = LLMReply(), LLMReply()
    holding = asyncio.ensure_future(Call(client, permits, endpoint, request, reply=first).run())
    await asyncio.sleep(0.3)
    waiting = asyncio.ensure_future(Call(client, permits, endpoint, request,
                                         reply=second).run())
    await asyncio.sleep(0.3)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    with pytest.raises(EndpointError):
        await holding  # the drip outlasts its timeout
    assert hostile.requests == 1
    assert (first.attempts, second.attempts) == (1, 0)
    assert [(a.outcome, a.code) for a in second.attempt_log] == [("cancelled", "not_sent")]
    assert not permits.leases


def test_read_completion_marks_what_is_missing():
    messages = [{"role": "user", "content": "x" * 40}]
    body = b'{"choices": [{"message": {"content": "abcd"}, "finish_reason": "length"}]}'
    completion = read_completion(body, messages)
    assert completion.usage_estimated and completion.truncated
    assert completion.prompt_tokens > 10 and completion.completion_tokens == 1
    tool = b'{"choices": [{"message": {"content": null, "tool_calls": [{"id": "t"}]}}]}'
    assert "t" in read_completion(tool, messages).text
    for bad in (b"", b"[]", b'{"choices": [1]}', b'{"choices": [{"message": {"content": 5}}]}'):
        with pytest.raises(EndpointError) as caught:
            read_completion(bad, messages)
        assert caught.value.retryable and caught.value.code == "malformed_reply"


def test_text_for_terminals_and_error_fields():
    raw = "a\x1b[31mred\x1b[0m \x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\ \x07\u202e\x9b2J\tz\n"
    assert terminal_safe(raw) == "ared link \tz\n"
    assert one_line("x\n" * 500) == ("x " * 149) + "x…"
    assert len(one_line("y" * 5000)) == 300
