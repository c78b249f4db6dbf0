"""Predictions and the advisor, without Ray."""

from __future__ import annotations

import json

import pytest

from chainray.plan.advisor import advise
from chainray.plan.cost import load_prices
from chainray.plan.predict import LatencyModel, calibrate, predict
from chainray.plan.schedule import STRATEGIES
from chainray.results import RunResult, StepResult
from chainray.spec.chain import chain_from_dict, load_chain

PRICES = load_prices()


def line_chain():
    return chain_from_dict({"name": "line", "steps": [
        {"id": "a", "prompt": "x"}, {"id": "b", "prompt": "{a}", "after": ["a"]},
        {"id": "c", "prompt": "{b}", "after": ["b"]}]})


def fan_chain():
    return chain_from_dict({"name": "fan", "steps": [
        {"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"},
        {"id": "c", "prompt": "{a} {b}", "after": ["a", "b"]}]})


def test_a_line_of_dependencies_is_sequential_whatever_the_objective():
    for objective in ("latency", "cost", "quality"):
        assert advise(line_chain(), objective).strategy == "sequential"


def test_independent_steps_parallel_for_latency_sequential_for_cost_and_quality():
    assert advise(fan_chain(), "latency").strategy == "parallel"
    assert advise(fan_chain(), "cost").strategy == "sequential"
    assert advise(fan_chain(), "quality").strategy == "sequential"


def test_groups_with_dependencies_are_hybrid_for_latency_with_reasons():
    chain = load_chain("quantum_research")
    predictions = {s: predict(chain, s, PRICES) for s in STRATEGIES}
    advice = advise(chain, "latency", predictions)
    assert advice.strategy == "hybrid"
    assert any("withhold" in reason for reason in advice.reasons)


def test_predicted_makespans_follow_the_critical_paths():
    chain = load_chain("quantum_research")
    p = {s: predict(chain, s, PRICES) for s in STRATEGIES}
    assert p["parallel"].makespan_s < p["hybrid"].makespan_s < p["sequential"].makespan_s
    assert all(x.calls == 6 for x in p.values())
    # the same completions everywhere; sequential prompts also carry earlier steps' context
    assert len({x.completion_tokens for x in p.values()}) == 1
    assert p["sequential"].prompt_tokens > p["parallel"].prompt_tokens
    assert p["parallel"].cost > 0


def test_unknown_model_costs_zero_with_a_warning():
    with pytest.warns(UserWarning, match="no price"):
        assert PRICES.cost("mystery-model", 1000, 1000) == 0.0
    assert PRICES.cost("gpt-4o-mini", 1_000_000, 0) == pytest.approx(0.15)


def test_calibration_fits_speed_from_earlier_runs(tmp_path):
    steps = [StepResult(id=f"s{n}", status="ok", completion_tokens=n, prompt_tokens=0,
                        latency_ms=(0.2 + n / 140) * 1000, attempts=1, output="w " * n)
             for n in (50, 100, 200, 300)]
    run = RunResult(scenario="x", strategy="hybrid", shape="hybrid", status="ok", run_id="r",
                    phases=(), latency_ms=1, critical_path_ms=1, total_tokens=0,
                    prompt_tokens=0, completion_tokens=0, api_calls=4, retries=0,
                    rate_limited=0, estimated_cost=0, output_length=0, output="",
                    steps=tuple(steps))
    path = tmp_path / "run.json"
    path.write_text(json.dumps([json.loads(run.model_dump_json())]))
    model = calibrate([str(path)])
    assert model.tokens_per_s == pytest.approx(140, rel=0.01)
    assert model.ttft_s == pytest.approx(0.2 - LatencyModel().overhead_s, abs=0.01)
    assert "fitted to 4 steps" in model.source
