"""Predicted makespan, tokens and cost of a chain under each strategy, before anything runs.

The latency model is the simulator's profile by default (time to first token + prefill +
tokens/s decode) and can be fitted to earlier runs' JSON results (``calibrate``). Tokens follow
what each strategy sends: sequential prompts carry what earlier steps covered, parallel
prompts carry none, the final step gathers the outputs it sees.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from chainray.errors import InputError
from chainray.plan.cost import PriceTable
from chainray.plan.schedule import Schedule, Strategy, longest_path, resolve
from chainray.results import RunResult
from chainray.sim.config import SimConfig
from chainray.spec.chain import DEFAULT_MAX_TOKENS, DEFAULT_MODEL, Chain
from chainray.spec.prompts import CONTEXT_CHARS
from chainray.spec.templates import template_fields
from chainray.tokens import estimate_text_tokens

__all__ = ["LatencyModel", "Prediction", "predict", "calibrate"]

_SIM = SimConfig()
_WITHHELD_CHARS = 60  # "[x: not available, it runs at the same time as this step]"


class LatencyModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    ttft_s: float = Field(default=_SIM.expected_ttft_s(), ge=0)
    prefill_s_per_token: float = Field(default=_SIM.prefill_s_per_token, ge=0)
    tokens_per_s: float = Field(default=_SIM.tokens_per_s, gt=0)
    completion_share: float = Field(default=sum(_SIM.completion_share) / 2, gt=0, le=1)
    chars_per_token: float = Field(default=6.0, gt=0)
    overhead_s: float = Field(default=0.01, ge=0)
    source: str = "defaults (the simulator's gpt-4o-mini profile)"


class Prediction(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: Strategy
    makespan_s: float
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost: float
    calls: int


def _completion_tokens(chain: Chain, step_id: str, model: LatencyModel) -> int:
    step = chain.by_id[step_id]
    if step.kind == "python":
        return 0
    max_tokens = chain.settings_for(step).max_tokens or DEFAULT_MAX_TOKENS
    return round(max_tokens * model.completion_share)


def _prompt_tokens(chain: Chain, schedule: Schedule, step_id: str, output_chars: dict,
                   model: LatencyModel) -> int:
    step, plan = chain.by_id[step_id], schedule.plan[step_id]
    fields = dict(template_fields(step.prompt or ""))
    chars = len(step.prompt or "") + len(chain.settings_for(step).system or "")
    for name, spec in fields.items():
        chars -= len(name) + 2
        if name in chain.inputs:
            chars += len(chain.inputs[name] or "")
        elif name in plan.sees:
            limit = int(spec[1:]) if spec.startswith(".") and spec[1:].isdigit() else None
            chars += min(output_chars[name], limit) if limit else output_chars[name]
        else:
            chars += _WITHHELD_CHARS
    extra = [s for s in plan.sees if s not in fields]
    if extra:
        chars += 40 + sum(min(output_chars[s], CONTEXT_CHARS) + len(s) + 6 for s in extra)
    messages = 2 if chain.settings_for(step).system else 1
    return estimate_text_tokens("x" * chars) + 3 * messages + 3


def predict(chain: Chain, strategy: Strategy, prices: PriceTable,
            model: LatencyModel | None = None) -> Prediction:
    model = model or LatencyModel()
    schedule = resolve(chain, strategy)
    completion = {s.id: _completion_tokens(chain, s.id, model) for s in chain.steps}
    output_chars = {k: round(v * model.chars_per_token) for k, v in completion.items()}
    prompt = {p.id: _prompt_tokens(chain, schedule, p.id, output_chars, model)
              for p in schedule.steps}

    def seconds(step_id: str) -> float:
        if chain.by_id[step_id].kind == "python":
            return model.overhead_s
        return (model.overhead_s + model.ttft_s + model.prefill_s_per_token * prompt[step_id]
                + max(0, completion[step_id] - 1) / model.tokens_per_s)

    _, makespan = longest_path({p.id: p.depends_on for p in schedule.steps}, seconds)
    llm_steps = [s for s in chain.steps if s.kind == "llm"]
    cost = sum(prices.cost(chain.settings_for(s).model or DEFAULT_MODEL, prompt[s.id],
                           completion[s.id])
               for s in llm_steps)
    prompt_total = sum(prompt[s.id] for s in llm_steps)
    completion_total = sum(completion.values())
    return Prediction(strategy=strategy, makespan_s=round(makespan, 2),
                      prompt_tokens=prompt_total, completion_tokens=completion_total,
                      total_tokens=prompt_total + completion_total, cost=round(cost, 6),
                      calls=len(llm_steps))


def _load_results(paths: Iterable[str]) -> list[RunResult]:
    results = []
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
            try:
                data = json.loads(text)
            except ValueError:  # a batch's JSON Lines: runs, then a {"batch": ...} line
                data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except (OSError, ValueError) as exc:
            raise InputError(f"--calibrate {path}: cannot read it: {exc}") from None
        items = data.get("runs", [data]) if isinstance(data, dict) else data
        items = [item for item in items if not (isinstance(item, dict) and "batch" in item)]
        results.extend(RunResult.model_validate(item) for item in items)
    return results


def calibrate(paths: Iterable[str], base: LatencyModel | None = None) -> LatencyModel:
    """Fit time to first token and tokens/s to the llm steps of earlier runs (least squares
    of latency against completion tokens); keep the base model where data is thin."""
    base = base or LatencyModel()
    steps = [s for r in _load_results(paths) for s in r.steps
             if s.status == "ok" and s.completion_tokens > 0 and s.attempts == 1]
    if len(steps) < 3 or len({s.completion_tokens for s in steps}) < 2:
        return base
    xs = [s.completion_tokens for s in steps]
    ys = [s.latency_ms / 1000 - base.prefill_s_per_token * s.prompt_tokens for s in steps]
    slope, intercept = statistics.linear_regression(xs, ys)
    if slope <= 0:
        return base
    chars = [len(s.output) / s.completion_tokens for s in steps if s.output]
    return base.model_copy(update={
        "ttft_s": max(0.0, intercept - base.overhead_s), "tokens_per_s": 1 / slope,
        "chars_per_token": statistics.median(chars) if chars else base.chars_per_token,
        "source": f"fitted to {len(steps)} steps of earlier runs"})
