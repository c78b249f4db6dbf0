"""Chains on Ray against the simulator: dependencies, strategies, limits, retries, sharing."""

from __future__ import annotations

import pytest
import ray

from chainray.plan.schedule import longest_path, resolve
from chainray.spec.chain import chain_from_dict, load_chain
from tests.helpers import fan_chain, job, session_for


@pytest.fixture(scope="module")
def quantum():
    return load_chain("quantum_research")


def test_hybrid_run_respects_dependencies_in_time(ray_session, sim, quantum):
    with session_for(sim) as session:
        result = session.run(job(quantum, "hybrid"))
    assert result.status == "ok"
    by_id = {step.id: step for step in result.steps}
    for step in quantum.steps:
        for dep in step.after:
            assert by_id[step.id].started_at >= by_id[dep].finished_at - 0.005, (step.id, dep)
    # steps with no dependency between them overlap in time (hybrid is not sequential)
    first_phase = [by_id[s] for s in ("hardware", "software", "commercial")]
    assert max(s.started_at for s in first_phase) < min(s.finished_at for s in first_phase)


def test_all_strategies_run_the_same_steps_and_gather_outputs(ray_session, sim, quantum):
    with session_for(sim) as session:
        results = {s: session.run(job(quantum, s)) for s in ("sequential", "parallel",
                                                             "hybrid")}
    for strategy, result in results.items():
        assert result.status == "ok", strategy
        assert {s.id for s in result.steps} == {s.id for s in quantum.steps}
        assert result.api_calls == 6 and result.output
        assert "5 inputs" in result.output  # the synthesis received all five reports
        assert len(result.phases) == {"sequential": 6, "parallel": 2, "hybrid": 4}[strategy]
    seq = {s.id: s for s in results["sequential"].steps}
    order = [phase[0] for phase in results["sequential"].phases]
    for before, after in zip(order, order[1:], strict=False):
        assert seq[after].started_at >= seq[before].finished_at - 0.005


def test_run_matches_what_the_server_saw(ray_session, sim, quantum):
    sim.configure(speed=10.0)
    with session_for(sim) as session:
        result = session.run(job(quantum, "hybrid"))
    stats = sim.stats()
    assert result.total_tokens == stats["total_tokens"]
    assert result.prompt_tokens == stats["prompt_tokens"]
    assert result.api_calls == stats["requests"] == 6
    by_step = {r["tag"].rsplit(":", 1)[1]: r for r in stats["request_log"]}
    server_ms = {step: (r["end"] - r["start"]) * 1000 for step, r in by_step.items()}
    schedule = resolve(quantum, "hybrid")
    depends = {p.id: p.depends_on for p in schedule.steps}
    _, critical = longest_path(depends, server_ms.__getitem__)
    # In the server's own clock: every step left after what it needs had answered, and the
    # first phase's three ran together; the run took at least its critical path and less
    # than its steps one after another. (How close to the critical path it comes is a speed
    # figure: benchmarks/overhead.py.)
    assert all(by_step[step]["start"] >= by_step[need]["end"]
               for step, needs in depends.items() for need in needs)
    first = [by_step[step] for step in ("hardware", "software", "commercial")]
    assert max(r["start"] for r in first) < min(r["end"] for r in first)
    assert critical <= result.latency_ms < sum(server_ms.values())


def test_limiter_holds_rpm_against_the_servers_count(ray_session, sim):
    sim.configure(speed=50.0, rpm=60, burst_s=1.0)  # the server allows 1 request a second
    with session_for(sim, rpm=60) as session:
        result = session.run(job(fan_chain(6), "hybrid"))
    stats = sim.stats()
    assert result.status == "ok" and stats["by_status"] == {"200": 7}
    starts = sorted(r["start"] for r in stats["request_log"])
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps[1:]) > 0.9  # paced at 0.95 x 60/min: about 1.05 s apart


def test_limiter_holds_tpm(ray_session, sim):
    # Each call reserves about 20 prompt + 100 max tokens; 6000 TPM at 95 % is 95 tokens/s.
    sim.configure(speed=50.0, tpm=6000, enforce="second")  # a 1-second burst, with debt
    with session_for(sim, tpm=6000) as session:
        result = session.run(job(fan_chain(4, max_tokens=100), "parallel"))
    stats = sim.stats()
    assert result.status == "ok" and result.rate_limited == 0
    assert stats["by_status"] == {"200": 5}
    log = sorted(stats["request_log"], key=lambda r: r["start"])
    span = log[-1]["start"] - log[0]["start"]
    before_last = sum(r["prompt_tokens"] + r["completion_tokens"] for r in log[:-1])
    # admitted tokens <= a 1-second bucket (100) + one request of debt + 95 tokens/s
    assert before_last <= 100 + 130 + 95 * span
    assert span > 2.0  # unpaced, all five would start at once


def test_limiter_holds_concurrency(ray_session, sim):
    sim.configure(speed=5.0)
    with session_for(sim, max_concurrency=2) as session:
        result = session.run(job(fan_chain(6), "parallel"))
    assert result.status == "ok"
    assert sim.stats()["peak_in_flight"] == 2


def test_retries_on_500_and_429_succeed(ray_session, sim):
    sim.configure(faults={"error_500": 0.25, "error_429": 0.15}, speed=50.0)
    with session_for(sim) as session:
        result = session.run(job(fan_chain(8), "hybrid"))
    stats = sim.stats()
    assert result.status == "ok"
    assert result.retries > 0 and result.api_calls == stats["requests"]
    assert result.rate_limited == stats["by_status"].get("429", 0)
    assert result.total_tokens == stats["total_tokens"]
    assert all(step.attempts <= 6 for step in result.steps)


def test_401_fails_fast_without_retry(ray_session, sim):
    sim.configure(api_key="sk-the-right-one")
    single = chain_from_dict({"name": "one", "steps": [{"id": "a", "prompt": "hi"}]})
    with session_for(sim) as session:
        result = session.run(job(single))
    assert result.status == "failed" and "401" in result.error
    assert result.steps[0].attempts == 1 and sim.stats()["requests"] == 1
    assert "sk-the-right-one" not in result.model_dump_json()


def test_fail_policy_skips_the_rest_and_continue_marks_errors(ray_session, sim):
    chain = chain_from_dict({"name": "pol", "steps": [
        {"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"},
        {"id": "c", "after": ["a", "b"], "prompt": "{a} {b}"}]})
    sim.configure(faults={"quota_exhausted": True})
    with session_for(sim) as session:
        failed = session.run(job(chain, "sequential"))
        statuses = {s.id: s.status for s in failed.steps}
        assert statuses == {"a": "error", "b": "skipped", "c": "skipped"}
        assert sim.stats()["requests"] == 1
        sim.configure(faults={"quota_exhausted": False, "error_500": 1.0}, speed=100.0)
        continued = session.run(job(chain, "parallel", on_error="continue"))
    assert {s.status for s in continued.steps} == {"error"}
    assert continued.steps[-1].attempts == 6  # the final step ran, with a, b marked failed


def test_one_named_limiter_is_shared_by_concurrent_runs(ray_session, sim, quantum):
    with session_for(sim) as first:
        second = session_for(sim, limiter_namespace=first.config.limiter_namespace)
        results = list(first.run_many([job(quantum, "parallel"), job(quantum, "hybrid")],
                                      window=2))
        second.run(job(quantum, "sequential"))
        [one] = first.limiter_stats()
        [two] = second.limiter_stats()
        assert first.limiters["gpt-4o-mini"]._actor_id == second.limiters["gpt-4o-mini"]._actor_id
    assert one["granted"] == two["granted"] == sum(r.api_calls for r in results) + 6
    assert len(ray.util.list_named_actors(all_namespaces=True)) >= 1
