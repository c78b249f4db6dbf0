"""Predicted makespan, tokens and cost of a chain under each strategy, before anything runs.

Tokens: each step's prompt is rendered as the strategy would send it (what it sees, what is
withheld, the "previously covered" block), and the reply length follows the reply-length
model of ``chainray.sim.lengths`` (the embedded simulator's model, in docs/simulator.md):
a plain reply uses part of ``max_tokens``, an isolated sibling writes more, a step told what
was covered writes less, rich upstream context makes a longer answer. The reply texts come
from that model too, so the final step gathers outputs of the predicted length.

Latency: per llm step ``overhead + ttft + prefill * prompt tokens + (completion - 1) / decode
speed``, with a lognormal spread of time to first token, so a phase of parallel steps waits
for the slowest of them (expected over fixed draws: the prediction is reproducible). The
profile defaults to the simulator's and is fitted to measured runs by ``calibrate``.
"""

from __future__ import annotations

import json
import math
import random
import statistics
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from chainray.errors import InputError
from chainray.plan.cost import PriceTable
from chainray.plan.schedule import Schedule, Strategy, longest_path, resolve
from chainray.results import RunResult, StepResult
from chainray.sim.config import SimConfig
from chainray.sim.lengths import LengthModel
from chainray.sim.replies import plan_reply
from chainray.spec.chain import DEFAULT_MAX_TOKENS, DEFAULT_MODEL, Chain
from chainray.spec.prompts import render_prompt
from chainray.tokens import estimate_prompt_tokens

__all__ = ["LatencyModel", "Prediction", "predict", "calibrate", "fit_steps", "step_seconds"]

_SIM = SimConfig()
_DRAWS = 64  # fixed draws of time to first token for the expected makespan


class LatencyModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    ttft_s: float = Field(default=_SIM.expected_ttft_s(), ge=0, description="mean")
    ttft_sigma: float = Field(default=_SIM.ttft_sigma, ge=0, description="lognormal shape")
    prefill_s_per_token: float = Field(default=_SIM.prefill_s_per_token, ge=0)
    tokens_per_s: float = Field(default=_SIM.tokens_per_s, gt=0)
    overhead_s: float = Field(default=0.01, ge=0)
    lengths: LengthModel = LengthModel()
    seed: int = 0
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
    step_seconds: dict[str, float] = {}  # expected duration of each step (mean ttft)


def _replies(chain: Chain, schedule: Schedule, model: LatencyModel
             ) -> tuple[dict[str, int], dict[str, int]]:
    """Prompt and completion tokens of every step, rendering prompts as the strategy would."""
    config = SimConfig(lengths=model.lengths, seed=model.seed)
    outputs: dict[str, str] = {}
    prompt: dict[str, int] = {}
    completion: dict[str, int] = {}
    for phase in schedule.phases:
        for step_id in phase:
            step = chain.by_id[step_id]
            if step.kind == "python":
                prompt[step_id] = completion[step_id] = 0
                outputs[step_id] = ""
                continue
            seen = {s: outputs[s] for s in schedule.plan[step_id].sees}
            text = render_prompt(step.prompt or "", chain.inputs, seen, step.after)
            system = chain.settings_for(step).system
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": text}]
            prompt[step_id] = estimate_prompt_tokens(messages)
            max_tokens = chain.settings_for(step).max_tokens or DEFAULT_MAX_TOKENS
            reply = plan_reply(config, "\n".join(m["content"] for m in messages),
                               prompt[step_id], max_tokens, random.Random(0))
            outputs[step_id] = reply.text
            completion[step_id] = len(reply.tokens)
    return prompt, completion


def step_seconds(model: LatencyModel, prompt_tokens: int, completion_tokens: int,
                 ttft_s: float | None = None) -> float:
    """How long one llm call takes under ``model`` (mean time to first token by default)."""
    ttft = model.ttft_s if ttft_s is None else ttft_s
    return (model.overhead_s + ttft + model.prefill_s_per_token * prompt_tokens
            + max(0, completion_tokens - 1) / model.tokens_per_s)


def _ttft_draws(model: LatencyModel, n: int) -> list[list[float]]:
    """``_DRAWS`` rows of ``n`` lognormal times to first token with the model's mean."""
    sigma = model.ttft_sigma
    median = model.ttft_s / math.exp(sigma**2 / 2)
    rng = random.Random(f"ttft:{model.seed}")
    return [[median * rng.lognormvariate(0, sigma) for _ in range(n)] for _ in range(_DRAWS)]


def predict(chain: Chain, strategy: Strategy, prices: PriceTable,
            model: LatencyModel | None = None) -> Prediction:
    model = model or LatencyModel()
    schedule = resolve(chain, strategy)
    prompt, completion = _replies(chain, schedule, model)
    depends = {p.id: p.depends_on for p in schedule.steps}
    ids = list(depends)

    def seconds(step_id: str, ttft: float | None = None) -> float:
        if chain.by_id[step_id].kind == "python":
            return model.overhead_s
        return step_seconds(model, prompt[step_id], completion[step_id], ttft)

    spans = []
    for row in _ttft_draws(model, len(ids)):
        draw = dict(zip(ids, row, strict=True))
        spans.append(longest_path(depends, lambda s, d=draw: seconds(s, d[s]))[1])
    llm_steps = [s for s in chain.steps if s.kind == "llm"]
    cost = sum(prices.cost(chain.settings_for(s).model or DEFAULT_MODEL, prompt[s.id],
                           completion[s.id])
               for s in llm_steps)
    prompt_total = sum(prompt[s.id] for s in llm_steps)
    completion_total = sum(completion.values())
    return Prediction(strategy=strategy, makespan_s=round(statistics.mean(spans), 2),
                      prompt_tokens=prompt_total, completion_tokens=completion_total,
                      total_tokens=prompt_total + completion_total, cost=round(cost, 6),
                      calls=len(llm_steps),
                      step_seconds={s: round(seconds(s), 3) for s in ids})


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


def _lstsq(columns: list[list[float]], y: list[float]) -> list[float]:
    """Least squares ``y ~ columns`` by the normal equations (a handful of unknowns)."""
    n = len(columns)
    a = [[sum(p * q for p, q in zip(ci, cj, strict=True)) for cj in columns]
         + [sum(p * q for p, q in zip(ci, y, strict=True))] for ci in columns]
    for i in range(n):
        pivot = max(range(i, n), key=lambda r: abs(a[r][i]))
        a[i], a[pivot] = a[pivot], a[i]
        if abs(a[i][i]) < 1e-12:
            raise ValueError("singular")
        for r in range(n):
            if r != i:
                f = a[r][i] / a[i][i]
                a[r] = [x - f * z for x, z in zip(a[r], a[i], strict=True)]
    return [a[i][n] / a[i][i] for i in range(n)]


def _predicted(columns: list[list[float]], coef: list[float]) -> list[float]:
    return [sum(c[k] * w for c, w in zip(columns, coef, strict=True))
            for k in range(len(columns[0]))]


def fit_steps(steps: list[StepResult], base: LatencyModel | None = None) -> LatencyModel:
    """Fit the latency profile to measured llm steps (first-attempt successes).

    Each step's time in flight (latency minus time queued for permits) is regressed on
    ``[1, completion tokens - 1, prompt tokens]`` by least squares: the intercept is overhead
    + mean time to first token, the slopes seconds per decoded token and prefill seconds per
    prompt token. Where streaming measured ``ttft_ms`` on every step, time to first token and
    prefill are fitted to it directly and decode speed to the rest. The lognormal spread of
    time to first token comes from the residuals. A coefficient the data cannot pin down (no
    variation in prompt length) keeps the base's value.
    """
    base = base or LatencyModel()
    steps = [s for s in steps if s.status == "ok" and s.completion_tokens > 1
             and s.attempts == 1 and not s.cached]
    if len(steps) < 4 or len({s.completion_tokens for s in steps}) < 2:
        return base
    first = _fit(steps, base)
    if first is None:
        return base
    # One pass of trimming: steps delayed far beyond the fit (a loaded machine, a slow
    # network moment) are dropped and the fit repeated, so they do not bend the slopes.
    errors = [abs(e) for e in first[1]]
    cut = 4 * statistics.median(errors) + 1e-3
    kept = [s for s, e in zip(steps, errors, strict=True) if e <= cut]
    second = _fit(kept, base) if len(kept) >= 4 and len(kept) < len(steps) else None
    return (second or first)[0]


def _fit(steps: list[StepResult], base: LatencyModel
         ) -> tuple[LatencyModel, list[float]] | None:
    """One least-squares fit; the model and each step's residual, or None if unusable."""
    flight = [(s.latency_ms - s.queued_ms) / 1000 for s in steps]
    prompt = [float(s.prompt_tokens) for s in steps]
    decode = [float(s.completion_tokens - 1) for s in steps]
    ones = [1.0] * len(steps)
    varied = max(prompt) - min(prompt) > 0.2 * max(1.0, statistics.mean(prompt))
    streamed = all(s.ttft_ms is not None for s in steps)
    try:
        if streamed:
            ttft = [s.ttft_ms / 1000 for s in steps]  # type: ignore[operator]
            columns = [ones, prompt] if varied else [ones]
            coef = _lstsq(columns, ttft)
            residual = [t - p for t, p in zip(ttft, _predicted(columns, coef), strict=True)]
            rest = [f - t for f, t in zip(flight, ttft, strict=True)]
            per_token = _lstsq([decode], rest)[0]
            intercept, prefill = coef[0], coef[1] if varied else base.prefill_s_per_token
        else:
            columns = [ones, decode] + ([prompt] if varied else [])
            target = flight if varied else [
                f - base.prefill_s_per_token * p for f, p in zip(flight, prompt, strict=True)]
            coef = _lstsq(columns, target)
            residual = [t - p for t, p in zip(target, _predicted(columns, coef), strict=True)]
            intercept, per_token = coef[0], coef[1]
            prefill = coef[2] if varied else base.prefill_s_per_token
    except ValueError:
        return None
    if per_token <= 0 or len({s.completion_tokens for s in steps}) < 2:
        return None
    ttft_mean = max(0.0, intercept - base.overhead_s)
    spread = statistics.pvariance(residual)
    sigma = math.sqrt(math.log1p(spread / ttft_mean**2)) if ttft_mean > 0 else 0.0
    return base.model_copy(update={
        "ttft_s": round(ttft_mean, 4), "ttft_sigma": round(min(sigma, 2.0), 3),
        "prefill_s_per_token": round(max(0.0, prefill), 8),
        "tokens_per_s": round(1 / per_token, 2),
        "source": f"fitted to {len(steps)} steps of earlier runs"
                  + (" (with streamed time to first token)" if streamed else "")}), residual


def calibrate(paths: Iterable[str], base: LatencyModel | None = None) -> LatencyModel:
    """Fit the latency profile to the llm steps of earlier runs' JSON results."""
    return fit_steps([s for r in _load_results(paths) for s in r.steps], base)
