"""The RateLimiter on Ray: it never stalls, explicit limits reconfigure it, a penalty does not
hold a later driver, limits are stated only by flags, the simulator or the server."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import ray

from chainray.actors.rate_limiter import RateLimiter, RemoteLimiter, get_rate_limiter
from chainray.api.config import SessionConfig
from chainray.api.session import Driver
from chainray.limit.permit_book import SLOW_START, Limits, PermitTimeout
from chainray.spec.chain import chain_from_dict
from tests.helpers import fan_chain, job, session_for
from tests.plain_server import PlainServer


def limiter(limits: Limits, **options) -> RemoteLimiter:
    name = f"test-limiter-{uuid.uuid4().hex[:8]}"
    return RemoteLimiter(RateLimiter.options(name=name, **options).remote(name, limits))


async def test_release_gets_in_however_many_callers_wait(ray_session):
    # Ten times more waiting acquires than the actor runs at once: release, stats and
    # penalize still get in, and every waiter is served.
    book = limiter(Limits(max_concurrency=2), max_concurrency=20)
    held = [await book.acquire(1, 0.0) for _ in range(2)]
    waiting = [asyncio.ensure_future(book.acquire(1, 0.0, 60)) for _ in range(200)]
    await asyncio.sleep(1.0)
    stats = await asyncio.wait_for(book.handle.stats.remote(), 5)
    assert stats["in_flight"] == 2 and stats["granted"] == 2
    for permit in held:
        await asyncio.wait_for(book.release(permit.id, 1, None), 5)

    async def serve(future):
        permit = await future
        await asyncio.wait_for(book.release(permit.id, 1, None), 30)

    await asyncio.wait_for(asyncio.gather(*map(serve, waiting)), 120)
    assert (await book.handle.stats.remote())["granted"] == 202


async def test_a_penalty_does_not_hold_a_later_driver(ray_session):
    name, namespace = f"shared-{uuid.uuid4().hex[:8]}", f"test-{uuid.uuid4().hex[:8]}"
    first = RemoteLimiter(get_rate_limiter(name, Limits(), namespace))
    permit = await first.acquire(10, 0.0, timeout_s=120)      # 120 s of retry budget left
    await first.penalize(permit.id, 3600.0)                   # the server asks for an hour
    later = RemoteLimiter(get_rate_limiter(name, Limits(), namespace))
    started = time.monotonic()
    await asyncio.wait_for(later.acquire(10, 0.0, timeout_s=120), 10)
    assert time.monotonic() - started < 2.0
    ray.kill(later.handle)


async def test_acquire_times_out_with_a_chainray_error(ray_session):
    book = limiter(Limits(max_concurrency=1))
    await book.acquire(1, 0.0)
    with pytest.raises(PermitTimeout, match="no permit within 0.2 s"):
        await book.acquire(1, 0.0, timeout_s=0.2)


def test_explicit_flags_reconfigure_a_shared_limiter(ray_session, sim, capsys):
    sim.configure(speed=50.0, rpm=6000)
    with session_for(sim, rpm=6000) as first:
        first.run(job(fan_chain(2)))
        second = session_for(sim, rpm=120, progress=True,
                             limiter_namespace=first.config.limiter_namespace)
        sim.reset()
        result = second.run(job(fan_chain(6), "parallel"))
        [stats] = first.limiter_stats()
    assert "reconfigured the shared limiter: rpm 120 from --rpm" in capsys.readouterr().err
    assert result.status == "ok" and stats["limits"]["rpm"] == 120
    starts = sorted(r["start"] for r in sim.stats()["request_log"])
    # 120/min: a 1-second bucket holds 2 requests, then about 1.9 a second
    assert sum(s - starts[0] < 0.5 for s in starts) <= 3
    assert starts[-1] - starts[0] > 2.0


def test_no_flags_against_a_plain_server_invents_no_limit(ray_session, capsys):
    server = PlainServer(latency_s=2.0)
    with server.running() as base_url:
        with session_for_plain(base_url, progress=True) as session:
            result = session.run(job(fan_chain(30), "parallel"))
            [stats] = session.limiter_stats()
    assert result.status == "ok"
    assert stats["limits"]["rpm"] is None and stats["limits"]["tpm"] is None
    starts = sorted(r["start"] for r in server.log)
    ends = sorted(r["end"] for r in server.log)
    # Nothing paced them: the slow start's width went at once, and the rest as the first
    # answers came back, each before any request of that second round was answered.
    assert starts[SLOW_START - 1] < ends[0]
    assert starts[29] < ends[SLOW_START]
    assert "rpm not paced" in capsys.readouterr().err


def test_a_retry_after_beyond_the_budget_fails_the_step_at_once(ray_session):
    server = PlainServer(latency_s=0.05, rate_limit_first=1, retry_after="3600")
    one = chain_from_dict({"name": "one", "steps": [{"id": "a", "prompt": "hi"}]})
    with server.running() as base_url, session_for_plain(base_url) as session:
        started = time.monotonic()
        result = session.run(job(one))
    assert time.monotonic() - started < 20
    assert result.status == "failed"
    assert "the server asked to wait 3600 s; retry budget is" in result.steps[0].error


def session_for_plain(base_url: str, **overrides) -> Driver:
    """A session on a plain server with no flags at all."""
    config = dict(base_url=base_url, env={"OPENAI_API_KEY": "sk-test"}, progress=False,
                  limiter_namespace=f"test-{uuid.uuid4().hex[:8]}", timeout=10.0,
                  backoff_s=0.05)
    return Driver(SessionConfig(**{**config, **overrides}))


def test_an_embedded_simulators_limiter_states_its_settings_and_ends_with_the_run(
        ray_session, capsys):
    config = SessionConfig(env={}, sim_speed=50.0, progress=True,
                           limiter_namespace=f"test-{uuid.uuid4().hex[:8]}")
    with Driver(config) as session:
        result = session.run(job(fan_chain(2)))
        [handle] = session.limiters.values()
    assert result.status == "ok"
    assert ("rpm 500 from the embedded simulator's settings; tpm 200,000 from the embedded "
            "simulator's settings") in capsys.readouterr().err
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(handle.stats.remote(), timeout=30)


def test_queued_ms_is_the_time_steps_waited_for_permits(ray_session):
    server = PlainServer(latency_s=0.3)
    with server.running() as base_url:
        with session_for_plain(base_url, max_concurrency=1) as session:
            result = session.run(job(fan_chain(3), "parallel"))
    assert result.status == "ok"
    waits = sorted(step.queued_ms for step in result.steps if step.id != "final")
    assert waits[0] < 250 and 250 < waits[1] < 900 and 550 < waits[2] < 1500
    assert result.queued_ms > 0


def test_the_gauges_read_zero_once_a_run_has_ended(ray_session, sim):
    # Set before the posted release had run, "calls in flight" used to read 1 after a run.
    with session_for(sim) as session:
        result = session.run(job(fan_chain(3)))
        [stats] = session.limiter_stats()
    assert result.status == "ok" and stats["granted"] == 4
    assert stats["gauges"] == {"calls_in_flight": 0, "waiting_callers": 0}
