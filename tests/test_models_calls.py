"""Models as they are, end to end on Ray: reasoning models, structured output, streaming
measurements and fallbacks, against the simulator and against the hostile fixture server."""

from __future__ import annotations

import pytest
import ray

from chainray.actors.adaptations import AdaptationsRef
from chainray.call.adaptations import adaptation_key
from chainray.spec.chain import SCENARIO_DIR, chain_from_dict, load_chain
from tests.fixture_server import FixtureServer
from tests.helpers import job, session_for

SCENARIOS = sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


@pytest.fixture(scope="module")
def hostile():
    with FixtureServer() as server:
        yield server


def test_every_scenario_runs_unchanged_on_a_reasoning_model(ray_session, sim):
    sim.configure(speed=200.0)
    with session_for(sim) as session:
        for name in SCENARIOS:
            result = session.run(job(load_chain(name), "hybrid", model="o4-mini"))
            assert result.status == "ok", (name, result.error)
            assert {s.model for s in result.steps if s.model} == {"o4-mini"}
    stats = sim.stats()
    assert stats["by_status"].get("400", 0) == 0  # the family is adapted before sending


def test_an_unknown_model_is_taught_by_its_400s_once_per_parameter(ray_session, sim, capfd):
    sim.configure(speed=200.0, reasoning_models="^house-reasoner")
    chain = chain_from_dict({"name": "teach", "defaults": {
        "model": "house-reasoner", "temperature": 0.3, "max_tokens": 30}, "steps": [
        {"id": "a", "prompt": "one"}, {"id": "b", "after": ["a"], "prompt": "two {a}"},
        {"id": "c", "after": ["b"], "prompt": "three {b}"}]})
    with session_for(sim) as session:
        first = session.run(job(chain))
        second = session.run(job(chain))
        learned = AdaptationsRef(session.config.limiter_namespace).find()
    assert first.status == second.status == "ok"
    assert learned is not None and ray.get(learned.known.remote(
        adaptation_key(sim.base_url, "house-reasoner")), timeout=30).keys() == {
        "max_tokens", "temperature"}
    stats = sim.stats()
    assert stats["by_status"].get("400", 0) == 2  # max_tokens once, temperature once
    assert first.api_calls + second.api_calls == stats["requests"] == 8
    err = capfd.readouterr().err
    assert err.count("house-reasoner: temperature 0.3 not supported, using the default") == 1
    assert err.count("house-reasoner: max_tokens not supported, sending "
                     "max_completion_tokens instead") == 1


def test_structured_output_is_requested_validated_and_named_downstream(ray_session, sim):
    sim.configure(speed=200.0)
    result = None
    with session_for(sim) as session:
        result = session.run(job(load_chain("request_router"), "hybrid"))
    assert result.status == "ok"
    classify = {s.id: s for s in result.steps}["classify"]
    assert classify.output.startswith("{") and '"intent"' in classify.output
    assert classify.attempts == 1


def test_a_bad_structured_reply_is_sent_back_once(ray_session, hostile):
    chain = chain_from_dict({"name": "strict", "steps": [{"id": "classify", "prompt": "x",
        "schema": {"type": "object", "properties": {"intent": {"type": "string"}},
                   "required": ["intent"]}}]})
    hostile.behave("corrects_itself")
    with session_for(hostile, rpm=None, tpm=None) as session:
        fixed = session.run(job(chain))
        hostile.behave("ok")  # never JSON
        broken = session.run(job(chain))
    assert fixed.status == "ok" and fixed.output == '{"intent": "bug"}'
    assert fixed.api_calls == 2
    assert broken.status == "failed" and broken.api_calls == 2 == hostile.requests
    assert "did not follow the step's schema twice" in broken.error


def test_streamed_usage_equals_unstreamed_usage_and_measures_the_first_token(ray_session, sim):
    sim.configure(speed=50.0)
    data = {"name": "s", "inputs": {"t": "tea"}, "defaults": {"max_tokens": 60,
                                                              "temperature": 0}, "steps": [
        {"id": "a", "prompt": "facts about {t}"},
        {"id": "b", "after": ["a"], "prompt": "summary of {a}"}]}
    with session_for(sim) as session:
        streamed = session.run(job(chain_from_dict(data)))
        data["defaults"]["stream"] = False
        plain = session.run(job(chain_from_dict(data)))
        learned = AdaptationsRef(session.config.limiter_namespace).find()
    assert learned is None  # the model took what it was sent: no process to remember it
    assert streamed.total_tokens == plain.total_tokens > 0
    assert all(s.ttft_ms and s.decode_tokens_per_s for s in streamed.steps)
    assert all(s.ttft_ms is None for s in plain.steps)
    assert not any(s.usage_estimated for s in [*streamed.steps, *plain.steps])


def test_fallbacks_go_in_order_under_their_own_limiters(ray_session, hostile):
    chain = chain_from_dict({"name": "fb", "steps": [{
        "id": "a", "prompt": "x", "model": "gone-first",
        "fallback_models": ["gone-second", "fixture-model"]}]})
    hostile.behave("missing_model")
    with session_for(hostile, rpm=None, tpm=None) as session:
        result = session.run(job(chain))
        assert set(session.limiters) >= {"gone-first", "gone-second", "fixture-model"}
    assert result.status == "ok" and result.steps[0].model == "fixture-model"
    assert hostile.models == ["gone-first", "gone-second", "fixture-model"]
    assert result.api_calls == 3


def test_no_fallback_on_401(ray_session, hostile):
    chain = chain_from_dict({"name": "fb401", "steps": [{
        "id": "a", "prompt": "x", "model": "m1", "fallback_models": ["m2"]}]})
    hostile.behave("unauthorized")
    with session_for(hostile, rpm=None, tpm=None) as session:
        result = session.run(job(chain))
    assert result.status == "failed" and "401" in result.error
    assert hostile.models == ["m1"] and result.api_calls == 1
