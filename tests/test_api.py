"""The Python API: chains built in Python (Python-function steps included) run on the embedded
simulator through ``chainray.run``, ``arun``, ``bench`` and a reused ``Session``."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

import chainray
from chainray.errors import InputError, SpecError


def _demo_chain(call) -> chainray.Chain:
    return chainray.Chain(name="demo", inputs={"topic": "tea"}, defaults={"max_tokens": 30},
                          steps=[
        chainray.Step(id="facts", prompt="List facts about {topic}"),
        chainray.Step(id="count", kind="python", call=call, after=["facts"]),
        chainray.Step(id="summary", after=["facts", "count"],
                      prompt="Sum up {facts:.500} {count}")])


def test_a_python_function_defined_here_runs_as_a_step_on_the_embedded_simulator(ray_session):
    seen = {}

    def count_words(inputs, upstream):  # a closure: Ray ships it to the worker by value
        seen_topic = inputs["topic"]
        return f"{seen_topic}: {len(upstream['facts'].split())} words"

    chain = _demo_chain(count_words)
    result = chainray.run(chain, strategy="hybrid", sim_speed=50, rpm=5000)
    assert result.status == "ok", result.error
    steps = {step.id: step for step in result.steps}
    facts_words = len(steps["facts"].output.split())
    assert steps["count"].output == f"tea: {facts_words} words"
    assert steps["count"].status == "ok" and steps["count"].prompt_tokens == 0
    assert result.api_calls == 2  # the python step sent nothing
    assert seen == {}  # it ran on a worker, not in this process


def test_a_callable_serialises_as_its_qualified_name_and_the_chain_stays_frozen():
    def count_words(inputs, upstream):
        return "0"

    chain = _demo_chain(count_words)
    dumped = json.loads(chain.model_dump_json())
    assert dumped["steps"][1]["call"] == (
        f"{__name__}:test_a_callable_serialises_as_its_qualified_name_and_the_chain_stays_frozen"
        ".<locals>.count_words")
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        chain.steps[1].call = print


def test_module_function_strings_resolve_at_build_time():
    step = chainray.Step(id="run", kind="python", call="chainray.scenarios.sql_helpers:run_query")
    from chainray.scenarios.sql_helpers import run_query

    assert step.call is run_query
    with pytest.raises(SpecError) as err:
        chainray.Chain(name="x", steps=[chainray.Step(
            id="run", kind="python", call="chainray.scenarios.sql_helpers:no_such_function")])
    assert (err.value.step, err.value.field) == ("run", "call")
    assert "no function 'no_such_function'" in str(err.value)


def test_a_session_reuses_ray_and_the_limiter_for_many_runs_in_order(ray_session):
    with chainray.Session(sim_speed=50, rpm=5000) as session:
        driver = session._driver
        coordinator = driver.coordinator
        results = session.run_many([
            ("progressive_refinement", {"brief": "tea"}),
            ("progressive_refinement", {"brief": "coffee"}),
            chainray.load_chain("code_review")])
        again = session.run("progressive_refinement")
        assert driver.coordinator is coordinator
        assert list(driver.limiters) == ["gpt-4o-mini"]  # one shared limiter for all runs
        stats = session.limiter_stats()[0]
    assert [r.scenario for r in results] == ["progressive_refinement"] * 2 + ["code_review"]
    assert len({r.run_id for r in [*results, again]}) == 4
    assert all(r.status == "ok" for r in [*results, again])
    calls = sum(r.api_calls for r in [*results, again])
    assert stats["granted"] == calls  # every call of every run went through the one limiter
    with pytest.raises(RuntimeError):
        session.run("progressive_refinement")  # closed


def test_arun_awaits_a_run_without_blocking_the_event_loop(ray_session):
    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        task = asyncio.create_task(ticker())
        result = await chainray.arun("progressive_refinement", sim_speed=20, rpm=5000)
        task.cancel()
        return result, ticks

    result, ticks = asyncio.run(main())
    assert result.status == "ok"
    assert ticks >= 5  # the loop kept running while the chain ran


def test_bench_runs_each_strategy_on_identical_inputs(ray_session):
    runs = chainray.bench("headline_ensemble", strategies=["parallel", "hybrid"], repeat=2,
                          inputs={"article": "A cat was elected mayor."}, sim_speed=50,
                          rpm=5000)
    assert [r.strategy for r in runs] == ["parallel", "hybrid"] * 2
    assert all(r.status == "ok" for r in runs)


def test_bad_options_and_inputs_fail_before_anything_starts():
    with pytest.raises(TypeError, match="unknown option 'rmp'"):
        chainray.run("quantum_research", rmp=5)
    with pytest.raises(InputError, match="no input 'topc'"):
        from chainray.api.options import chain_inputs

        chain_inputs(chainray.load_chain("quantum_research"), {"topc": "x"})
    with pytest.raises(InputError, match="rpm"):
        chainray.Session(rpm=0)


def test_plan_returns_the_schedules_and_advice_as_data():
    found = chainray.plan("quantum_research", objective="cost")
    assert set(found.schedules) == {"sequential", "parallel", "hybrid"}
    assert found.strategy in found.schedules and found.reasons
    assert found.schedules["hybrid"].critical_path[-1] == "synthesis"
    assert found.predictions["parallel"].makespan_s < found.predictions["sequential"].makespan_s


def test_public_names_are_exported():
    assert set(chainray.__all__) >= {"load_chain", "Chain", "Step", "run", "arun", "bench",
                                     "plan", "Session"}
    for name in chainray.__all__:
        assert getattr(chainray, name) is not None
        assert getattr(chainray, name).__doc__


def test_a_closed_sessions_actors_serve_the_next_session_and_end_with_ray(ray_session, sim):
    import ray

    from chainray.actors.standby import end_standby
    from tests.helpers import fan_chain, job, session_for

    with session_for(sim) as first:
        coordinator = first.coordinator
        pids = ray.get(coordinator.runner_pids.remote(), timeout=60)
        assert first.run(job(fan_chain(2))).status == "ok"
    with session_for(sim) as second:  # no new worker process: the same crew
        assert second.coordinator._actor_id == coordinator._actor_id
        assert ray.get(second.coordinator.runner_pids.remote(), timeout=60) == pids
        assert second.run(job(fan_chain(2))).status == "ok"
    end_standby()  # what leave_ray does before Ray stops
    deadline = time.monotonic() + 60  # the exit is asynchronous: the death lands shortly
    with pytest.raises(ray.exceptions.RayActorError):
        while time.monotonic() < deadline:
            ray.get(coordinator.progress.remote(), timeout=60)
            time.sleep(0.2)


