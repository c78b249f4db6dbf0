"""Predictions and the advisor, without Ray."""

from __future__ import annotations

import argparse
import json

import pytest

from chainray.plan.advisor import LATENCY_TIE, advise, withheld_context
from chainray.plan.cost import load_prices
from chainray.plan.learn import calibrate
from chainray.plan.predict import LatencyModel, predict
from chainray.plan.schedule import STRATEGIES, resolve
from chainray.results import RunResult, StepResult
from chainray.spec.chain import SCENARIO_DIR, chain_from_dict, load_chain

PRICES = load_prices()


def line_chain():
    return chain_from_dict({"name": "line", "steps": [
        {"id": "a", "prompt": "x"}, {"id": "b", "prompt": "{a}", "after": ["a"]},
        {"id": "c", "prompt": "{b}", "after": ["b"]}]})


def fan_chain():
    return chain_from_dict({"name": "fan", "steps": [
        {"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"},
        {"id": "c", "prompt": "{a} {b}", "after": ["a", "b"]}]})


def test_a_line_of_dependencies_never_runs_parallel():
    for objective in ("latency", "cost", "quality"):
        advice = advise(line_chain(), objective)
        assert advice.strategy in ("sequential", "hybrid")  # the same one-at-a-time schedule
        assert "parallel" not in advice.candidates


def test_a_makespan_closer_than_predictions_tell_apart_goes_to_more_context():
    # On a line, hybrid skips what a step did not declare: a few prompt tokens, a sliver of
    # time. Shaving 0.5 % is not a reason to give the last step less context; 10 % is.
    chain = line_chain()
    base = {s: predict(chain, s, PRICES) for s in ("sequential", "hybrid")}

    def hybrid_faster_by(share):
        makespan = base["sequential"].makespan_s * (1 - share)
        return {**base, "hybrid": base["hybrid"].model_copy(update={"makespan_s": makespan})}

    near = advise(chain, "latency", hybrid_faster_by(0.005))
    assert near.strategy == "sequential"
    assert f"shortest predicted makespan within {LATENCY_TIE:.0%}" in near.reasons[1]
    far = advise(chain, "latency", hybrid_faster_by(0.10))
    assert far.strategy == "hybrid" and "within" not in far.reasons[1]


def test_independent_steps_follow_the_predictions():
    predictions = {s: predict(fan_chain(), s, PRICES) for s in STRATEGIES}
    fastest = min(p.makespan_s for p in predictions.values())
    cheapest = min(p.cost for p in predictions.values())
    # hybrid and parallel are the same schedule here (nothing declared before the final step)
    assert predictions[advise(fan_chain(), "latency", predictions).strategy].makespan_s == fastest
    assert predictions[advise(fan_chain(), "cost", predictions).strategy].cost == cheapest
    assert advise(fan_chain(), "quality", predictions).strategy == "sequential"


@pytest.mark.parametrize("objective", ["latency", "cost", "quality"])
@pytest.mark.parametrize("path", sorted(SCENARIO_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_advice_never_contradicts_its_own_predictions(path, objective):
    chain = load_chain(str(path))
    predictions = {s: predict(chain, s, PRICES) for s in STRATEGIES}
    advice = advise(chain, objective, predictions)
    keeping = [s for s in STRATEGIES if not withheld_context(chain, resolve(chain, s))]
    assert advice.strategy in keeping and set(advice.candidates) == set(keeping)
    chosen = predictions[advice.strategy]
    for other in keeping:
        if objective == "latency":
            assert chosen.makespan_s <= predictions[other].makespan_s * (1 + LATENCY_TIE)
        elif objective == "cost":
            assert chosen.cost <= predictions[other].cost
    # every alternative is named with what it gains or loses
    for other in set(STRATEGIES) - {advice.strategy}:
        line = next(r for r in advice.reasons if r.startswith(f"{other}:"))
        assert ("faster" in line or "slower" in line or "as fast" in line)
        assert ("withholds declared context" in line) == (other not in keeping)


def test_auto_uses_the_same_advice():
    from chainray.api.config import SessionConfig
    from chainray.cli.run import pick_strategy

    chain = load_chain("quantum_research")
    for objective in ("latency", "cost", "quality"):
        args = argparse.Namespace(strategy="auto", objective=objective, prices=None,
                                  base_url=None, model=None)
        strategy, config = pick_strategy(chain, args, SessionConfig())
        assert strategy == advise(chain, objective).strategy
        assert config.prefix_warmup  # nothing in quantum_research shares a long prefix


def test_withholding_is_stated_with_the_time_it_gains():
    chain = load_chain("quantum_research")
    advice = advise(chain, "cost")
    line = next(r for r in advice.reasons if r.startswith("parallel:"))
    assert "faster" in line and "withholds declared context from security and academic" in line


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
    # parallel's isolated siblings write more and sequential's steps less: the seed's order
    # of tokens. Parallel's synthesis reads those longer reports, but sequential's prompts
    # carry earlier steps' excerpts, so parallel's extra prompt tokens stay below the extra
    # it wrote (the synthesis alone would read about 1.7 prompt tokens per extra word).
    seq, par = p["sequential"], p["parallel"]
    assert seq.completion_tokens < par.completion_tokens
    assert par.prompt_tokens - seq.prompt_tokens < par.completion_tokens - seq.completion_tokens
    assert p["sequential"].total_tokens < p["hybrid"].total_tokens < p["parallel"].total_tokens
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


def _steps(ttft: bool) -> list[StepResult]:
    out, rng = [], __import__("random").Random(3)
    for n in range(40):
        prompt, completion = rng.randrange(50, 3000), rng.randrange(20, 400)
        first = 0.4 + 0.0002 * prompt + rng.uniform(-0.05, 0.05)
        latency = first + 0.01 + (completion - 1) / 120
        out.append(StepResult(id=f"s{n}", status="ok", prompt_tokens=prompt,
                              completion_tokens=completion, latency_ms=latency * 1000 + 300,
                              queued_ms=300, attempts=1, ttft_ms=first * 1000 if ttft else None))
    return out


@pytest.mark.parametrize("streamed", [False, True])
def test_calibration_recovers_ttft_prefill_and_decode(streamed):
    from chainray.plan.learn import fit_steps

    model = fit_steps(_steps(streamed))
    assert model.tokens_per_s == pytest.approx(120, rel=0.03)
    assert model.prefill_s_per_token == pytest.approx(0.0002, rel=0.1)
    assert model.ttft_s == pytest.approx(0.4 + (0.0 if streamed else 0.01) - 0.01, abs=0.03)
    assert ("streamed" in model.source) == streamed


def test_a_few_short_prompts_do_not_price_prefill_from_first_token_noise():
    from chainray.plan.learn import fit_steps

    # six short prompts whose first tokens happen to come later as prompts grow: noise of
    # time to first token, not prefill; a slope fitted to it would put a 500-token prompt's
    # first token 14 s out
    prompts, first = [15, 20, 25, 30, 35, 40], [0.3, 0.9, 0.4, 1.1, 0.6, 1.3]
    steps = [StepResult(id=f"s{n}", status="ok", prompt_tokens=p, completion_tokens=40 + 7 * n,
                        latency_ms=(t + 0.01 + (39 + 7 * n) / 70) * 1000, attempts=1,
                        ttft_ms=t * 1000)
             for n, (p, t) in enumerate(zip(prompts, first, strict=True))]
    model = fit_steps(steps)
    assert model.prefill_s_per_token == LatencyModel().prefill_s_per_token
    assert model.ttft_s == pytest.approx(sum(first) / len(first), abs=0.02)
    assert model.tokens_per_s == pytest.approx(70, rel=0.03)


def test_one_long_prompt_with_a_slow_first_token_does_not_price_prefill():
    from chainray.plan.fit import Sample, fit_samples

    # a headline_ensemble run on the simulator (0.05 ms a prompt token): five prompts of ~58
    # tokens and the aggregator's 174, whose first token drew the lognormal's tail
    samples = [Sample(57, 15, 0.809, 0.598), Sample(57, 15, 1.093, 0.883),
               Sample(59, 15, 0.448, 0.234, 2.62), Sample(58, 15, 0.470, 0.262, 2.757),
               Sample(61, 15, 0.537, 0.329, 2.605), Sample(174, 18, 3.945, 3.689)]
    model = fit_samples(samples)
    assert model.prefill_s_per_token == LatencyModel().prefill_s_per_token
    assert 0.5 < model.ttft_s < 1.5


def test_long_similar_prompts_keep_the_decode_speed_when_prefill_is_not_pinned():
    from chainray.plan.fit import Sample, fit_samples

    # prompts of 8-9k tokens, first tokens that do not grow with them, 70 tokens/s: the
    # default prefill stands, and its share of the first token is not read as decoding
    rng = __import__("random").Random(5)
    samples = []
    for _ in range(12):
        prompt, completion = rng.randrange(8000, 9000), rng.randrange(100, 400)
        first = rng.uniform(0.4, 1.2)
        samples.append(Sample(prompt, completion, first + (completion - 1) / 70, first))
    model = fit_samples(samples)
    assert model.prefill_s_per_token == LatencyModel().prefill_s_per_token
    assert model.tokens_per_s == pytest.approx(70, rel=0.01)
