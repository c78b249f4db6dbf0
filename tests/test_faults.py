"""Endpoint faults from the simulator's switches: every run completes or fails with the named
cause, attempts stay within bound, and the result's calls and tokens equal the server's."""

from __future__ import annotations

import pytest

from tests.helpers import fan_chain, job, session_for


def assert_matches_server(result, stats):
    assert result.api_calls == stats["requests"]
    assert result.total_tokens == stats["total_tokens"]
    assert result.rate_limited == stats["by_status"].get("429", 0)


@pytest.mark.parametrize("faults", [
    {"error_500": 0.2},
    {"drop": 0.25},
    {"hang": 0.25, "hang_s": 30.0},
], ids=["20%-500s", "dropped-connections", "hung-responses"])
def test_transient_faults_are_retried_to_success(ray_session, sim, faults):
    sim.configure(speed=50.0, seed=3, faults=faults)
    with session_for(sim, timeout=0.5, max_attempts=8) as session:
        result = session.run(job(fan_chain(10)))
    stats = sim.stats()
    assert result.status == "ok"
    assert result.retries > 0 and all(s.attempts <= 8 for s in result.steps)
    assert_matches_server(result, stats)
    if "hang" in faults:
        assert stats["by_outcome"].get("client_closed", 0) + stats["by_outcome"].get(
            "hung", 0) == result.retries


def test_429_storm_from_a_smaller_real_limit_is_absorbed(ray_session, sim):
    # The server allows 120/min (a burst of 4); chainray is told 6000/min. It learns the real
    # limit from the headers and waits out each Retry-After instead of hammering.
    sim.configure(speed=50.0, rpm=120, burst_s=2.0)
    with session_for(sim, rpm=6000, max_attempts=10) as session:
        result = session.run(job(fan_chain(8)))
        [limiter] = session.limiter_stats()
    stats = sim.stats()
    assert result.status == "ok" and result.rate_limited > 0
    assert result.rate_limited < 15
    assert limiter["limits"]["rpm"] == 120 and limiter["penalties"] == result.rate_limited
    assert_matches_server(result, stats)


@pytest.mark.parametrize("setting,cause", [
    ({"api_key": "sk-only-this-one"}, "401"),
    ({"faults": {"quota_exhausted": True}}, "insufficient_quota"),
])
def test_auth_and_quota_fail_fast_never_retried(ray_session, sim, setting, cause):
    sim.configure(**setting)
    with session_for(sim, max_attempts=6) as session:
        result = session.run(job(fan_chain(3), "sequential"))
    stats = sim.stats()
    assert result.status == "failed" and cause in result.error
    assert stats["requests"] == 1 and result.api_calls == 1
    assert [s.status for s in result.steps] == ["error", "skipped", "skipped", "skipped"]


def test_attempts_are_bounded_when_the_fault_never_clears(ray_session, sim):
    sim.configure(speed=100.0, faults={"error_500": 1.0})
    with session_for(sim, max_attempts=3) as session:
        result = session.run(job(fan_chain(2), "sequential"))
    assert result.status == "failed" and "HTTP 500" in result.error
    assert result.steps[0].attempts == 3 and sim.stats()["requests"] == 3


def test_each_attempt_is_timed_with_its_outcome_and_the_backoff_before_the_next(
        ray_session, sim):
    from chainray.report.timeline import backoff_s
    from chainray.results import RunResult

    sim.configure(speed=50.0, seed=5, faults={"error_500": 0.25, "error_429": 0.15})
    with session_for(sim, max_attempts=10, backoff_s=0.1) as session:
        result = session.run(job(fan_chain(10)))
    assert result.status == "ok"
    for step in result.steps:
        log = step.attempt_log
        assert len(log) == step.attempts  # one record per request the server saw
        assert log[-1].outcome == "ok" and all(a.outcome != "ok" for a in log[:-1])
        assert sum(a.outcome == "rate_limited" for a in log) == step.rate_limited
        assert {a.code for a in log if a.outcome == "error"} <= {"server_error", "500"}
        assert step.started_at <= log[0].queued_at and log[-1].finished_at <= step.finished_at
        assert all(a.queued_at <= a.sent_at <= a.finished_at for a in log)
        assert all(b.queued_at >= a.finished_at for a, b in zip(log, log[1:], strict=False))
    retried = [s for s in result.steps if s.attempts > 1]
    assert retried and all(backoff_s(s) > 0 for s in retried)
    assert sum(s.attempts for s in result.steps) == result.api_calls
    # the JSON carries the log, and JSON written before it existed still loads
    assert RunResult.model_validate_json(result.model_dump_json()) == result
    old = result.model_dump(mode="json")
    for step in old["steps"]:
        del step["attempt_log"]
    assert RunResult.model_validate(old).steps[0].attempt_log == ()
