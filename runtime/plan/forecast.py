"""How long and how much a batch of runs takes under the user's limits, before it runs.

A batch is bounded by whichever of these is slowest:

- **window**: at most ``window`` runs in flight (``run --batch-window``), each taking the
  predicted makespan of one run;
- **max_concurrency**: the call-seconds of every llm step, spread over that many slots;
- **rpm** / **tpm**: each model's RateLimiter paces its requests and tokens at
  ``target_share`` of the limits (tokens are charged as used: unused reservations are
  refunded), after a first burst of ``burst_s`` seconds' worth that the limiter's full
  bucket admits at once; the model with the most work binds. A limit nobody gave is no
  bound: chainray does not pace it, so the forecast does not either.

After the binding bound's work is admitted, the last run still finishes its final step (the
"tail"). Utilisation is the share of each limit the forecast batch uses on average.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from chainray.plan.cost import PriceTable
from chainray.plan.fit import LatencyModel
from chainray.plan.lengths import Replies
from chainray.plan.predict import Measured, Prediction, predict
from chainray.plan.schedule import Strategy
from chainray.spec.chain import Chain

__all__ = ["BatchForecast", "forecast_batch", "SAMPLE_INPUTS"]

Bound = Literal["latency", "window", "max_concurrency", "rpm", "tpm"]
SAMPLE_INPUTS = 50  # distinct input lines predicted one by one; the rest follow their mean


class BatchForecast(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    runs: int
    strategy: Strategy
    makespan_s: float
    total_tokens: int
    calls: int
    cost: float
    binding: Bound
    bounds_s: dict[str, float]  # each bound's own time for the whole batch
    utilisation: dict[str, float]  # share of each given limit used on average
    run_makespan_s: float  # one run alone
    step_prompt_tokens: dict[str, int] = {}  # each llm step's prompts over all the runs


def _per_run(chain: Chain, strategy: Strategy, prices: PriceTable, model: LatencyModel,
             inputs: Sequence[dict] | None, replies: Replies | None,
             others: Measured | None) -> list[Prediction]:
    if not inputs:
        return [predict(chain, strategy, prices, model, replies, others=others)]
    sample = list(inputs)[:: max(1, math.ceil(len(inputs) / SAMPLE_INPUTS))]
    return [predict(chain.model_copy(update={"inputs": {**chain.inputs, **line}}), strategy,
                    prices, model, replies, others=others) for line in sample]


def forecast_batch(chain: Chain, strategy: Strategy, prices: PriceTable, *, runs: int,
                   rpm: int | None, tpm: int | None, max_concurrency: int,
                   window: int = 64, target_share: float = 0.95, burst_s: float = 1.0,
                   model: LatencyModel | None = None,
                   inputs: Sequence[dict] | None = None,
                   replies: Replies | None = None, others: Measured | None = None
                   ) -> BatchForecast:
    """Forecast ``runs`` runs (or one per line of ``inputs``) of ``chain`` under the limits
    (``model``, ``replies``, ``others``: as ``predict`` takes them)."""
    model = model or LatencyModel()
    runs = len(inputs) if inputs else runs
    each = _per_run(chain, strategy, prices, model, inputs, replies, others)
    run_s = statistics.mean(p.makespan_s for p in each)
    tokens = statistics.mean(p.total_tokens for p in each)
    calls = each[0].calls
    llm = [s.id for s in chain.steps if s.kind == "llm"]
    call_s = statistics.mean(sum(p.step_seconds[s] for s in llm) for p in each)
    final = chain.final_step.id
    tail = statistics.mean(p.step_seconds[final] for p in each)
    bounds = {
        "latency": run_s,
        "window": math.ceil(runs / window) * run_s,
        "max_concurrency": runs * call_s / max_concurrency + tail,
    }
    steps_of: dict[str, list[str]] = {}  # each model's llm steps: one RateLimiter each
    for step in chain.steps:
        if step.kind == "llm":
            steps_of.setdefault(chain.model_for(step), []).append(step.id)
    work = {"rpm": {m: runs * len(steps) for m, steps in steps_of.items()},
            "tpm": {m: runs * statistics.mean(sum(p.step_prompt_tokens[s]
                                                  + p.step_completion_tokens[s]
                                                  for s in steps) for p in each)
                    for m, steps in steps_of.items()}}
    for bound, limit in (("rpm", rpm), ("tpm", tpm)):
        if limit:
            rate = limit * target_share / 60
            bounds[bound] = max((max(0.0, w - max(1.0, rate * burst_s)) / rate
                                 for w in work[bound].values()), default=0.0) + tail
    binding: Bound = max(bounds, key=bounds.__getitem__)  # type: ignore[assignment]
    makespan = bounds[binding]
    minutes = makespan / 60
    utilisation = {"max_concurrency": runs * call_s / makespan / max_concurrency}
    for bound, limit in (("rpm", rpm), ("tpm", tpm)):
        if limit:  # the busiest model's limiter
            utilisation[bound] = max(work[bound].values(), default=0) / minutes / limit
    return BatchForecast(
        runs=runs, strategy=strategy, makespan_s=round(makespan, 2),
        total_tokens=round(runs * tokens), calls=runs * calls,
        cost=round(runs * statistics.mean(p.cost for p in each), 6), binding=binding,
        bounds_s={k: round(v, 2) for k, v in bounds.items()},
        utilisation={k: round(min(1.0, v), 3) for k, v in utilisation.items()},
        run_makespan_s=round(run_s, 2),
        step_prompt_tokens={s: round(runs * statistics.mean(p.step_prompt_tokens[s]
                                                            for p in each)) for s in llm})
