"""Which strategy to pick, from the chain's graph, the user's objective and the predictions,
with what each alternative gains or loses.

The rule is one line: among the strategies that keep every dependency the chain declares
(hybrid and sequential always do; parallel only when no step before the final one declares
any), pick the one the predictions show best on the objective. Latency compares predicted
makespan, cost predicted dollars (tokens when there is no price), quality how much upstream
output the steps see (sequential: everything earlier), then makespan. Ties go to the strategy
that gives the steps more context; makespans within ``LATENCY_TIE`` of the shortest are a tie
(closer than the predictions can tell apart). ``auto`` uses exactly this.

Prefix warm-up (siblings that share a prompt prefix start at their leader's first token, so a
provider's cache serves them) is weighed per strategy on the same objective when ``cold``
predictions (without it) are given: the better setting stands for the strategy, and the advice
says whether to keep it on.

On an endpoint that slows beyond a few requests in flight (a latency model with ``slots``),
the advice says how much of the parallel speed-up is left there, and suggests a
``--max-concurrency`` when holding requests back to ``slots`` (critical path first) is
predicted to finish sooner than sharing the engine among them all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict

from chainray.plan.cost import load_prices
from chainray.plan.fit import LatencyModel
from chainray.plan.makespan import capped_finish, longest_finish, shared_finish
from chainray.plan.predict import Prediction, predict
from chainray.plan.schedule import STRATEGIES, Schedule, Strategy, resolve
from chainray.spec.chain import Chain

__all__ = ["Objective", "Advice", "advise", "withheld_context"]

Objective = Literal["latency", "cost", "quality"]
_CONTEXT_RANK = {"sequential": 0, "hybrid": 1, "parallel": 2}  # most context first
# Predicted makespans land within ~3 % of measured ones on servers we did not write, and
# repeated runs differ as much: a strategy less than this share faster has not shown it is.
LATENCY_TIE = 0.02


class Advice(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: Strategy
    objective: Objective
    reasons: tuple[str, ...]
    candidates: tuple[Strategy, ...]  # those that keep every declared dependency (and fit)
    withholding: tuple[Strategy, ...] = ()  # weighed, but withhold declared context
    prefix_warmup: bool = True  # keep it on (False: --no-prefix-warmup serves the objective)


def withheld_context(chain: Chain, schedule: Schedule) -> list[str]:
    """Steps that, under ``schedule``, do not see an upstream output they declare."""
    return [step.id for step in chain.steps
            if not set(step.after) <= set(schedule.plan[step.id].sees)]


def _context_seen(schedule: Schedule) -> int:
    return sum(len(plan.sees) for plan in schedule.steps)


def _score(objective: Objective, prediction: Prediction, schedule: Schedule) -> tuple:
    rank = _CONTEXT_RANK[schedule.strategy]
    if objective == "latency":
        return (round(prediction.makespan_s, 2), rank)
    if objective == "cost":
        return (round(prediction.cost, 7), prediction.total_tokens, rank)
    return (-_context_seen(schedule), round(prediction.makespan_s, 2), rank)


def _names(ids: list[str]) -> str:
    return ids[0] if len(ids) == 1 else ", ".join(ids[:-1]) + " and " + ids[-1]


def _compare(other: Prediction, chosen: Prediction, withheld: list[str]) -> str:
    parts = []
    dt = chosen.makespan_s - other.makespan_s
    parts.append(f"{abs(dt):.1f} s {'faster' if dt > 0 else 'slower'}" if abs(dt) >= 0.05
                 else "as fast")
    if chosen.cost > 0:
        dc = (other.cost - chosen.cost) / chosen.cost
        parts.append(f"{abs(dc):.0%} {'dearer' if dc > 0 else 'cheaper'}" if abs(dc) >= 0.005
                     else "same cost")
    else:
        dn = other.total_tokens - chosen.total_tokens
        parts.append(f"{abs(dn)} tokens {'more' if dn > 0 else 'fewer'}")
    text = f"{other.strategy}: {', '.join(parts)}"
    if withheld:
        text += f", but withholds declared context from {_names(withheld)}"
    return text


def _crowding(chain: Chain, schedules: Mapping[str, Schedule], strategy: Strategy,
              predictions: Mapping[str, Prediction], model: LatencyModel) -> list[str]:
    """What an endpoint that slows beyond ``model.slots`` requests in flight means here."""
    notes = []
    alone = {}
    for name in ("parallel", "hybrid"):
        schedule = schedules[name]
        order = [s for phase in schedule.phases for s in phase]
        alone[name] = longest_finish(order, {p.id: p.depends_on for p in schedule.steps},
                                     predictions[name].step_seconds)
    par, hyb = predictions["parallel"].makespan_s, predictions["hybrid"].makespan_s
    if abs(alone["parallel"] - alone["hybrid"]) > 0.05 * max(alone.values()):
        fast, slow = ("parallel", "hybrid") if par <= hyb else ("hybrid", "parallel")
        here = max(par, hyb) / max(1e-9, min(par, hyb))
        free = alone[slow] / max(1e-9, alone[fast])
        notes.append(f"this endpoint slows beyond ~{model.slots} requests in flight: {fast} "
                     f"is {here:.1f}x faster than {slow} here, not {free:.1f}x")
    schedule = schedules[strategy]
    order = [s for phase in schedule.phases for s in phase]
    depends = {p.id: p.depends_on for p in schedule.steps}
    seconds = predictions[strategy].step_seconds
    llm = {s.id for s in chain.steps if s.kind == "llm"}
    # the engine shares decoding; time to first token is each request's own
    work = {s: max(0.0, seconds[s] - model.overhead_s - model.ttft_s) if s in llm else 0.0
            for s in order}
    delay = {s: seconds[s] - work[s] for s in order}
    shared = shared_finish(order, depends, work, delay, model.slots or 1)
    capped = capped_finish(order, depends, work, delay, model.slots or 1)
    if capped < 0.95 * shared:
        notes.append(f"--max-concurrency {model.slots}: {strategy} predicted {capped:.1f} s "
                     f"instead of {shared:.1f} s (the critical path keeps full speed)")
    return notes


def _warmup(objective: Objective, warm: Prediction, cold: Prediction | None,
            schedule: Schedule) -> tuple[Prediction, str | None]:
    """The prediction of the warm-up setting that serves ``objective`` better, and the
    reason (None when warm-up changes nothing for this strategy)."""
    if cold is None:
        return warm, None
    slower = warm.makespan_s - cold.makespan_s
    saved = 1 - warm.cost / cold.cost if cold.cost > 0 else 0.0
    # the outputs are the same either way: for quality, the cheaper setting stands
    weigh: Objective = "cost" if objective == "quality" else objective
    keep = _score(weigh, warm, schedule) <= _score(weigh, cold, schedule)
    more = warm.cached_tokens - cold.cached_tokens
    text = (f"prefix warm-up: {more:,} more prompt tokens from the provider's cache, "
            f"{saved:.0%} cheaper, {slower:+.1f} s makespan; "
            + ("keep it on" if keep else f"for {objective}, --no-prefix-warmup"))
    return (warm if keep else cold), text


def advise(chain: Chain, objective: Objective = "latency",
           predictions: Mapping[str, Prediction] | None = None,
           model: LatencyModel | None = None,
           schedules: Mapping[str, Schedule] | None = None,
           cold: Mapping[str, Prediction] | None = None, measured: bool = False) -> Advice:
    """Recommend a strategy among those of ``predictions`` (strategy -> Prediction; default:
    ``predict`` of every strategy with the bundled prices and ``model``, default the default
    latency model). ``cold``: predictions without prefix warm-up (``predictions`` have it
    on), weighed per strategy under ``objective``. ``measured``: the "predictions" are what
    runs measured (``chainray bench``), and the reasons say so."""
    if predictions is None:
        prices = load_prices()
        predictions = {s: predict(chain, s, prices, model) for s in STRATEGIES}
    named = [s for s in STRATEGIES if s in predictions]
    schedules = schedules or {s: resolve(chain, s) for s in STRATEGIES}
    withheld = {s: withheld_context(chain, schedules[s]) for s in named}
    weighed = {s: _warmup(objective, predictions[s], (cold or {}).get(s), schedules[s])
               for s in named}
    predictions = {s: weighed[s][0] for s in named}
    keeping = tuple(s for s in named if not withheld[s])
    candidates = tuple(s for s in keeping if not predictions[s].infeasible) or keeping \
        or tuple(named)
    shortest = min(predictions[s].makespan_s for s in candidates)
    if objective == "latency":
        tied = [s for s in candidates
                if predictions[s].makespan_s <= shortest * (1 + LATENCY_TIE)]
        strategy = min(tied, key=_CONTEXT_RANK.__getitem__)
    else:
        strategy = min(candidates,
                       key=lambda s: _score(objective, predictions[s], schedules[s]))
    chosen = predictions[strategy]
    declared = schedules["hybrid"]
    widest = max(len(p) for p in declared.phases)
    shape = (f"every step needs the one before it ({len(declared.phases)} steps in a line): "
             "nothing can run in parallel" if widest == 1 else
             f"the declared graph is {declared.shape}-shaped ({len(declared.phases)} phases, "
             f"up to {widest} steps at once)")
    one = len(candidates) == 1
    reasons = [f"{shape}; {_names(list(candidates))} "
               f"keep{'s' if one else ''} every declared dependency"
               + (f" and fit{'s' if one else ''} the context window"
                  if candidates != keeping else "") if keeping else
               f"{shape}; none of {_names(named)} keeps every declared dependency"]
    if chosen.infeasible:
        reasons.append(f"{strategy} is infeasible too: {chosen.infeasible}")
    told = "measured" if measured else "predicted"
    near = f" within {LATENCY_TIE:.0%}" if chosen.makespan_s > shortest else ""
    measure = {"latency": f"the shortest {told} makespan{near} ({chosen.makespan_s:.1f} s)",
               "cost": f"the lowest {told} cost (${chosen.cost:.5f}, "
                       f"{chosen.total_tokens} tokens)",
               "quality": "the most upstream context per step"}[objective]
    detail = (f" (each step sees {_context_seen(schedules[strategy])} upstream outputs in all; "
              f"{told} {chosen.makespan_s:.1f} s)" if objective == "quality" else "")
    reasons.append(f"{strategy} has {measure} of those{detail}")
    for other in named:
        if other != strategy:
            reasons.append(_compare(predictions[other], chosen, withheld[other]))
            if predictions[other].infeasible:
                reasons.append(f"{other} is infeasible: {predictions[other].infeasible}")
    if model is not None and model.slots is not None and {"parallel", "hybrid"} <= set(named):
        reasons.extend(_crowding(chain, schedules, strategy, predictions, model))
    if weighed[strategy][1] is not None:
        reasons.append(weighed[strategy][1])
    return Advice(strategy=strategy, objective=objective, reasons=tuple(reasons),
                  candidates=candidates, withholding=tuple(s for s in named if withheld[s]),
                  prefix_warmup=cold is None or chosen is not cold.get(strategy))


# Batch API jobs are cut to this share of a model's stated enqueued-token limit: chainray's
# token estimate is not the provider's tokenizer, and a job it undercounts would be refused.
ENQUEUED_SHARE = 0.8


def batch_jobs_in_series(phases: list[list[str]], step_models: Mapping[str, str],
                         step_tokens: Mapping[str, int], limits: Mapping[str, int]
                         ) -> tuple[int, list[str]]:
    """How many Batch API turnarounds a batch waits, one after another, and which learned
    limits made them more. A phase is a job per model, the models' jobs at once; a model
    whose enqueued-token limit is known (``limits``) sends its phase's prompt tokens
    (``step_tokens``, all runs) in jobs under ``ENQUEUED_SHARE`` of it, one after another."""
    jobs, cut = 0, set()
    for phase in phases:
        tokens: dict[str, int] = {}
        for step in phase:
            if step in step_tokens:
                tokens[step_models[step]] = tokens.get(step_models[step], 0) + step_tokens[step]
        if not tokens:
            continue
        each = {model: max(1, math.ceil(n / (ENQUEUED_SHARE * limits[model])))
                if model in limits else 1 for model, n in tokens.items()}
        jobs += max(each.values())
        cut |= {model for model, n in each.items() if n > 1}
    return jobs, [f"{model}'s enqueued-token limit of {limits[model]:,}" for model in sorted(cut)]


def batch_or_online(deadline_s: float, online_s: float, online_cost: float, batch_cost: float,
                    jobs: int, turnaround_s: float, turnaround_from: str
                    ) -> tuple[bool, list[str]]:
    """Whether a batch should go through the provider's Batch API (True) or online calls,
    for results needed within ``deadline_s``, and why. The Batch API's completion time is
    ``jobs`` (``batch_jobs_in_series``) times a job's turnaround, which is not known
    up front: ``turnaround_from`` says where ``turnaround_s`` came from (measured jobs, or
    the provider's completion window). Within the deadline the cheaper way wins; past it,
    the one that meets it; if neither does, the faster."""
    batch_s = jobs * turnaround_s
    why = [f"online: about {_duration(online_s)} (forecast from the limits), "
           f"${online_cost:.4f}",
           f"Batch API: {jobs} job(s) of about {_duration(turnaround_s)} each "
           f"({turnaround_from}) = {_duration(batch_s)}, ${batch_cost:.4f}"]
    deadline = f"the deadline {_duration(deadline_s)}"
    batch_fits, online_fits = batch_s <= deadline_s, online_s <= deadline_s
    if batch_fits and online_fits:
        cheaper = batch_cost <= online_cost
        return cheaper, [*why, f"both fit {deadline}: "
                         f"{'the Batch API' if cheaper else 'online'} costs less"]
    if batch_fits or online_fits:
        return batch_fits, [*why, f"only the Batch API fits {deadline}" if batch_fits else
                            f"the Batch API may not finish within {deadline}; online does"]
    faster = batch_s < online_s
    return faster, [*why, f"neither is predicted to fit {deadline}: the "
                    f"{'Batch API' if faster else 'online run'} is sooner"]


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
