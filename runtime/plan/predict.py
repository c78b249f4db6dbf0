"""Predicted makespan, tokens and cost of a chain under each strategy, before anything runs.

Tokens: a step's prompt is its template filled with the inputs, the upstream outputs it sees
(whole, or the first N characters for ``{x:.N}``) and, for outputs it sees without naming
them, the "previously covered" block (300 characters of each). It is measured, not rendered:
the template is filled once with empty outputs and the outputs' predicted lengths are added,
so a sequential chain of thousands of steps costs time linear in its size. Prompt tokens are
chainray's estimate (``chainray.tokens``) times the endpoint's measured ratio of its own count
to that estimate. Reply lengths come from ``chainray.plan.lengths``. Each step is predicted by
its own model's profile where one was measured (``others``), else by the chain's main one.

Latency: per llm step ``chainray.plan.fit.step_seconds``; a phase of parallel steps waits for
the slowest of them, so the makespan is the mean over fixed draws of time to first token and
reply length (reproducible), and its spread the 10th-90th percentile of those draws. On an
endpoint that slows beyond ``slots`` requests in flight, the draws are timed by
``chainray.plan.makespan.shared_finish``.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from chainray.plan.cost import PriceTable
from chainray.plan.fit import LatencyModel, step_seconds
from chainray.plan.lengths import DEFAULT_REPLIES, Replies, reply_tokens
from chainray.plan.makespan import longest_finish, shared_finish
from chainray.plan.prefix import MIN_PREFIX_TOKENS, cached_prefixes
from chainray.plan.schedule import Schedule, Strategy, resolve
from chainray.spec.chain import DEFAULT_MAX_TOKENS, DEFAULT_MODEL, Chain
from chainray.spec.prompts import CONTEXT_CHARS, render_prompt
from chainray.spec.templates import template_fields
from chainray.tokens import estimate_text_tokens

__all__ = ["LatencyModel", "Prediction", "predict", "step_seconds", "StepShape", "step_shapes",
           "prompt_chars", "Measured"]

# A model's measured latency and reply lengths, by model (``predict``'s ``others``).
Measured = Mapping[str, tuple[LatencyModel, Replies]]

_DRAWS = 64  # at most; fewer for very large chains (the budget below)
_DRAW_BUDGET = 16_000  # step evaluations over all draws (at least 8 draws)
_BLOCK = len("\n\nPreviously covered by earlier steps:\n")


class Prediction(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: Strategy
    makespan_s: float
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost: float
    calls: int
    step_seconds: dict[str, float] = {}  # expected duration of each step, alone
    makespan_range: tuple[float, float] = (0.0, 0.0)  # 10th-90th percentile of the draws
    tokens_range: tuple[int, int] = (0, 0)
    lengths_from: dict[str, int] = {}  # where reply lengths came from -> llm steps
    infeasible: str | None = None  # the first step whose prompt and reply overflow the window
    cached_tokens: int = 0  # of prompt_tokens, read from the provider's prompt cache
    step_prompt_tokens: dict[str, int] = {}  # each llm step's expected prompt
    step_completion_tokens: dict[str, int] = {}  # and reply


@dataclass(frozen=True)
class StepShape:
    """What a step's prompt is made of, without its upstream outputs."""

    id: str
    llm: bool
    base_chars: int  # the template filled with the inputs, the outputs it names left empty
    message_tokens: int  # the reply's priming and the system message (chainray.tokens)
    named: tuple[tuple[str, int | None], ...]  # outputs the template names (and their .N)
    extras: tuple[str, ...]  # outputs it sees unnamed ("previously covered"); () if prefix
    prefix: int  # sequential: it sees the first ``prefix`` steps of the order
    withheld: bool  # a declared dependency it does not see
    max_tokens: int
    opening: str
    model: str


def step_shapes(chain: Chain, schedule: Schedule, inputs: dict | None = None) -> list[StepShape]:
    """Each step's prompt parts in the schedule's order (topological)."""
    order = [s for phase in schedule.phases for s in phase]
    position = {s: i for i, s in enumerate(order)}
    inputs = chain.inputs if inputs is None else inputs
    prefix = schedule.strategy == "sequential"
    shapes = []
    for i, step_id in enumerate(order):
        step, plan = chain.by_id[step_id], schedule.plan[step_id]
        settings = chain.settings_for(step)
        template = step.prompt or ""
        fields = [(name.split(".")[0], name, spec) for name, spec in template_fields(template)]
        if prefix:  # it sees every step before it: no set of them (linear, not quadratic)
            roots = {root for root, _, _ in fields} | set(step.after)
            sees = {r for r in roots if position.get(r, i) < i}
        else:
            sees = set(plan.sees)
        named = tuple((root, int(spec[1:]) if spec else (200 if "." in name else None))
                      for root, name, spec in fields if root in sees)
        names = {root for root, _, _ in fields}
        base = render_prompt(template, inputs, {root: "" for root, _ in named}, step.after)
        system = settings.system
        shapes.append(StepShape(
            id=step_id, llm=step.kind == "llm", base_chars=len(base),
            message_tokens=3 + (3 + estimate_text_tokens(system) if system else 0),
            named=named, extras=() if prefix else tuple(s for s in plan.sees if s not in names),
            prefix=i if prefix else 0, withheld=not set(step.after) <= sees,
            max_tokens=settings.max_tokens or DEFAULT_MAX_TOKENS,
            opening=template[:300], model=settings.model or DEFAULT_MODEL))
    return shapes


def _clip(chars: float) -> float:
    return chars if chars <= CONTEXT_CHARS else CONTEXT_CHARS + 3


def prompt_chars(shapes: list[StepShape], out_chars: dict[str, float],
                 python_chars: dict[str, float] | None = None) -> dict[str, float]:
    """Characters of every llm step's prompt given its upstream outputs' lengths; fills in
    ``out_chars`` of python steps (from ``python_chars``, else as a join of what they see)."""
    python_chars = python_chars or {}
    order = [s.id for s in shapes]
    line_total = join_total = 0.0  # prefix sums over the order (sequential)
    result: dict[str, float] = {}
    for shape in shapes:
        if shape.prefix or not shape.extras:
            names = {n for n, _ in shape.named}
            count = shape.prefix - len(names) if shape.prefix else 0
            lines = line_total - sum(len(n) + 4 + _clip(out_chars[n]) for n in names) \
                if shape.prefix else 0.0
        else:
            count = len(shape.extras)
            lines = sum(len(s) + 4 + _clip(out_chars[s]) for s in shape.extras)
        chars = shape.base_chars + sum(min(out_chars[n], cap) if cap else out_chars[n]
                                       for n, cap in shape.named)
        if count:
            chars += _BLOCK + lines + count - 1
        if shape.llm:
            result[shape.id] = chars
        elif shape.id not in out_chars:
            seen = (order[:shape.prefix] if shape.prefix else
                    [n for n, _ in shape.named] + list(shape.extras))
            joined = join_total if shape.prefix else sum(len(s) + 6 + out_chars[s]
                                                           for s in seen)
            out_chars[shape.id] = python_chars.get(shape.id, max(0.0, joined - 2))
        line_total += len(shape.id) + 4 + _clip(out_chars[shape.id])
        join_total += len(shape.id) + 6 + out_chars[shape.id]
    return result


def _draws(n_steps: int) -> int:
    return max(8, min(_DRAWS, _DRAW_BUDGET // max(1, n_steps)))


def _percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return ordered[int(0.1 * (len(ordered) - 1))], ordered[math.ceil(0.9 * (len(ordered) - 1))]


def predict(chain: Chain, strategy: Strategy, prices: PriceTable,
            model: LatencyModel | None = None, replies: Replies | None = None,
            schedule: Schedule | None = None, prefix_warmup: bool = False,
            min_prefix_tokens: int = MIN_PREFIX_TOKENS, others: Measured | None = None
            ) -> Prediction:
    """``schedule``: ``resolve(chain, strategy)`` when the caller has it already; ``model``
    and ``replies``: the main model's, for every step whose model has none in ``others``.

    A step reads the prefix it shares with a step it waits for from the provider's cache; with
    ``prefix_warmup``, siblings that share one start at their leader's first token and read
    it too (``chainray.plan.prefix``)."""
    model, replies = model or LatencyModel(), replies or DEFAULT_REPLIES
    schedule = schedule or resolve(chain, strategy)
    shapes = step_shapes(chain, schedule)
    order = [s.id for s in shapes]
    depends = {p.id: p.depends_on for p in schedule.steps}
    own = {s.id: (others or {}).get(s.model, (model, replies)) for s in shapes}
    lat = {s: pair[0] for s, pair in own.items()}
    rep = {s: pair[1] for s, pair in own.items()}
    lengths, sources = {}, {}
    for shape in shapes:
        if shape.llm:
            unnamed = shape.prefix - len(shape.named) if shape.prefix else len(shape.extras)
            covered = unnamed + sum(1 for _, cap in shape.named if cap)  # excerpts shown
            mean, sd, where = reply_tokens(rep[shape.id], f"{chain.name}/{shape.id}",
                                           strategy, shape.max_tokens, shape.opening,
                                           shape.withheld, covered)
            lengths[shape.id] = (mean, sd, shape.max_tokens)
            sources[where] = sources.get(where, 0) + 1
    python = {k.split("/", 1)[1]: v[strategy]  # learned under the chain's default model
              for measured in [*(r for _, r in (others or {}).values()), replies]
              for k, v in measured.python_chars.items()
              if k.split("/", 1)[0] == chain.name and strategy in v}

    def tokens(completion: dict[str, float]) -> tuple[dict[str, int], dict[str, int]]:
        out = {s: c * rep[s].chars_per_token for s, c in completion.items()}
        chars = prompt_chars(shapes, out, python)
        prompt = {s.id: round(rep[s.id].prompt_scale * (
            s.message_tokens + 3 + max(1, (chars[s.id] + 3) // 4))) for s in shapes if s.llm}
        return prompt, {s: max(1, round(c)) for s, c in completion.items()}

    def span(prompt: dict[str, int], completion: dict[str, int], ttft: dict[str, float]
             ) -> float:
        seconds = {s: step_seconds(lat[s], max(0, prompt[s] - cached.get(s, 0)),
                                   completion[s], ttft[s]) if s in prompt else
                   lat[s].overhead_s for s in order}
        for follower, lead in warm.items():  # it leaves at its leader's first token
            seconds[follower] += ttft[lead] + lat[lead].prefill_s_per_token * prompt[lead]
        if model.slots is None:
            return longest_finish(order, depends, seconds)
        # the engine shares its decoding; time to first token is each request's own
        work = {s: max(0, completion[s] - 1) / lat[s].tokens_per_s if s in prompt else 0.0
                for s in order}
        return shared_finish(order, depends, work,
                             {s: seconds[s] - work[s] for s in order}, model.slots)

    prompt, completion = tokens({s: m for s, (m, _, _) in lengths.items()})
    shared, warm = _cached(chain, schedule, shapes, lengths, python, rep,
                           min_prefix_tokens, prefix_warmup)
    cached = {s: min(prompt[s], round(rep[s].prompt_scale * n)) for s, n in shared.items()}
    rng = random.Random(f"draws:{model.seed}")
    median = {s: m.ttft_s / math.exp(m.ttft_sigma**2 / 2) for s, m in lat.items()}
    spans, totals = [], []
    for _ in range(_draws(len(order))):
        drawn = {s: min(cap, max(1.0, rng.gauss(m, sd))) for s, (m, sd, cap) in lengths.items()}
        p, c = tokens(drawn)
        ttft = {s: median[s] * rng.lognormvariate(0, lat[s].ttft_sigma) for s in order}
        spans.append(span(p, c, ttft))
        totals.append(sum(p.values()) + sum(c.values()))
    llm_steps = [s for s in shapes if s.llm]
    cost = sum(prices.cost(s.model, prompt[s.id], completion[s.id], cached.get(s.id, 0))
               for s in llm_steps)
    prompt_total, completion_total = sum(prompt.values()), sum(completion.values())
    infeasible = _overflow(llm_steps, prompt, completion, prices)
    low, high = _percentiles(spans)
    tlow, thigh = _percentiles(totals)
    return Prediction(
        strategy=strategy, makespan_s=round(statistics.mean(spans), 2),
        prompt_tokens=prompt_total, completion_tokens=completion_total,
        total_tokens=prompt_total + completion_total, cost=round(cost, 6),
        calls=len(llm_steps), makespan_range=(round(low, 2), round(high, 2)),
        cached_tokens=sum(cached.values()), step_prompt_tokens=prompt,
        step_completion_tokens=completion,
        tokens_range=(round(tlow), round(thigh)), lengths_from=sources, infeasible=infeasible,
        step_seconds={s: round(step_seconds(lat[s], prompt[s], completion[s])
                               if s in prompt else lat[s].overhead_s, 3) for s in order})


def _cached(chain: Chain, schedule: Schedule, shapes: list[StepShape], lengths: dict,
            python: dict[str, float], replies: Mapping[str, Replies], min_tokens: int,
            warmup: bool) -> tuple[dict[str, int], dict[str, str]]:
    """Prompt-cached tokens per step and warm-up followers (``cached_prefixes``), with the
    outputs at their mean predicted lengths (``replies``: each step's own)."""
    out = {s: m * replies[s].chars_per_token for s, (m, _, _) in lengths.items()}
    prompt_chars(shapes, out, python)  # fills in the python steps' outputs
    # what a request opens with: system message, template, inputs, the outputs it names
    opens = {s.id: 4 * s.message_tokens + s.base_chars + sum(
        min(out[n], cap) if cap else out[n] for n, cap in s.named) for s in shapes if s.llm}
    return cached_prefixes(chain, schedule, out, min_tokens, warmup, opens)


def _overflow(shapes: list[StepShape], prompt: dict[str, int], completion: dict[str, int],
              prices: PriceTable) -> str | None:
    """Where a predicted prompt and its reply first exceed the model's context window (from
    the price table's ``context_window``; a model without one is not checked)."""
    for shape in shapes:
        row = prices.models.get(shape.model)
        window = row.context_window if row is not None else None
        if window and prompt[shape.id] + completion[shape.id] > window:
            return (f"step {shape.id}: a prompt of ~{prompt[shape.id]:,} tokens and its reply "
                    f"exceed {shape.model}'s context window of {window:,}")
    return None
