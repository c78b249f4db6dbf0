"""Planning stays bounded: prompts are measured, not rendered whole, and a strategy whose
prompts overflow the model's context window is marked infeasible where it happens."""

from __future__ import annotations

import json
import random

import chainray
from chainray.builtin_steps import join
from chainray.plan.cost import load_prices
from chainray.plan.predict import prompt_chars, step_shapes
from chainray.plan.schedule import STRATEGIES, resolve
from chainray.spec.chain import chain_from_dict
from chainray.spec.prompts import render_prompt

CHAIN = chain_from_dict({
    "name": "short_final", "inputs": {"topic": "tea"},
    "defaults": {"model": "gpt-4o-mini", "max_tokens": 20},
    "steps": [{"id": "a", "prompt": "Write about {topic} and its history in some detail."},
              {"id": "b", "prompt": "Write about {topic} and its trade in some detail."},
              {"id": "c", "prompt": "Write about {topic} and its culture in some detail."},
              {"id": "d", "after": ["a", "b", "c"], "final": True,
               "prompt": "Title for: {a:.10} {b:.10} {c:.10}"}]})


def test_a_strategy_that_overflows_the_context_window_is_infeasible_and_not_advised(tmp_path):
    table = json.loads(load_prices().model_dump_json())
    table["models"]["gpt-4o-mini"]["context_window"] = 60
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps(table))
    found = chainray.plan(CHAIN, objective="quality", prices=str(prices))
    sequential = found.predictions["sequential"]
    assert sequential.infeasible.startswith("step c: a prompt of ~")
    assert "gpt-4o-mini's context window of 60" in sequential.infeasible
    assert found.predictions["hybrid"].infeasible is None
    assert found.strategy != "sequential"  # quality would pick it, were it feasible
    assert any(r.startswith("sequential is infeasible: step c") for r in found.reasons)


def test_measured_prompts_are_the_rendered_prompts_lengths():
    steps = [{"id": f"s{i}", "prompt": f"Angle {i} on {{topic}}."} for i in range(60)]
    steps.append({"id": "join", "kind": "python", "call": "chainray.builtin_steps:join",
                  "after": ["s1", "s2"]})
    steps.append({"id": "end", "after": [s["id"] for s in steps], "final": True,
                  "prompt": "Sum up {topic}; first: {s0:.40}; joined: {join}"})
    chain = chain_from_dict({"name": "long", "inputs": {"topic": "tea"}, "steps": steps})
    rng = random.Random(5)
    outputs = {s.id: " ".join("w" * rng.randint(1, 9) for _ in range(rng.randint(5, 200)))
               for s in chain.steps if s.kind == "llm"}
    for strategy in STRATEGIES:
        schedule = resolve(chain, strategy)
        seen_by = {p.id: p.sees for p in schedule.steps}
        out = {k: float(len(v)) for k, v in outputs.items()}
        measured = prompt_chars(step_shapes(chain, schedule), out)
        texts = dict(outputs)
        for step_id in (s for phase in schedule.phases for s in phase):
            step = chain.by_id[step_id]
            seen = {s: texts[s] for s in seen_by[step_id]}
            if step.kind == "python":
                texts[step_id] = join(chain.inputs, seen)
                assert out[step_id] == len(texts[step_id])
                continue
            rendered = render_prompt(step.prompt, chain.inputs, seen, step.after)
            assert measured[step_id] == len(rendered), (strategy, step_id)
