"""Run a chain against the simulator's reply model in-process, without HTTP or Ray.

The same prompts a real run sends (``build_messages``), the same reply model
(``plan_reply``), and the makespan of the schedule from the replies' durations: tokens are
exactly what a real run on the simulator counts, latency is its expectation without overheads.
"""

from __future__ import annotations

import random
import statistics

from chainray.plan.schedule import Strategy, longest_path, resolve
from chainray.results import StepResult
from chainray.sim.config import SimConfig
from chainray.sim.replies import plan_reply
from chainray.spec.chain import DEFAULT_MAX_TOKENS, Chain
from chainray.spec.prompts import render_prompt
from chainray.tokens import estimate_prompt_tokens


def offline_run(chain: Chain, strategy: Strategy, config: SimConfig | None = None,
                latency_draws: int = 40) -> dict:
    config = config or SimConfig()
    schedule = resolve(chain, strategy)
    outputs: dict[str, str] = {}
    replies, prompt_tokens = {}, {}
    for phase in schedule.phases:
        for step_id in phase:
            step = chain.by_id[step_id]
            seen = {s: outputs[s] for s in schedule.plan[step_id].sees}
            prompt = render_prompt(step.prompt or "", chain.inputs, seen, step.after)
            messages = [{"role": "user", "content": prompt}]
            prompt_tokens[step_id] = estimate_prompt_tokens(messages)
            max_tokens = chain.settings_for(step).max_tokens or DEFAULT_MAX_TOKENS
            reply = plan_reply(config, prompt, prompt_tokens[step_id], max_tokens,
                               random.Random(0))
            outputs[step_id] = reply.text
            replies[step_id] = (prompt, max_tokens, reply)
    depends = {p.id: p.depends_on for p in schedule.steps}
    makespans = []
    for draw in range(latency_draws):
        rng = random.Random(draw)
        durations = {sid: plan_reply(config, prompt, prompt_tokens[sid], max_tokens,
                                     rng).duration_s
                     for sid, (prompt, max_tokens, _) in replies.items()}
        makespans.append(longest_path(depends, durations.__getitem__)[1])
    completion = {sid: len(r.tokens) for sid, (_, _, r) in replies.items()}
    steps = [StepResult(id=sid, status="ok", output=outputs[sid],
                        prompt_tokens=prompt_tokens[sid], completion_tokens=completion[sid])
             for sid in outputs]
    return {"strategy": strategy, "latency_s": statistics.mean(makespans),
            "total_tokens": sum(prompt_tokens.values()) + sum(completion.values()),
            "output_length": len(outputs[schedule.final]), "steps": steps}
