"""``chainray.plan``: schedules, critical paths, predictions and the advice, as data (no Ray).

Predictions rest on the profile of the endpoint and model the runs would call, learned from
every earlier run there (``chainray.plan.profiles``); with none, on stated defaults.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict

from chainray.errors import InputError
from chainray.plan.advisor import Objective, advise
from chainray.plan.cost import load_prices
from chainray.plan.fit import LatencyModel
from chainray.plan.learn import Observed, load_results, models, observe
from chainray.plan.lengths import DEFAULT_REPLIES, Replies
from chainray.plan.predict import Prediction, predict
from chainray.plan.prefix import MIN_PREFIX_TOKENS, prefix_hints
from chainray.plan.profiles import (
    SIMULATOR,
    Profile,
    default_endpoint,
    endpoint_label,
    known_profiles,
    load_profile,
)
from chainray.plan.schedule import STRATEGIES, Schedule, Strategy, resolve
from chainray.spec.chain import DEFAULT_MODEL, Chain, load_chain

__all__ = ["Plan", "plan", "endpoint_models", "batch_api_advice"]


class Plan(BaseModel):
    """What ``chainray.plan`` found: the recommended strategy, why, and every alternative."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    chain: str
    objective: Objective
    strategy: Strategy
    reasons: tuple[str, ...]
    withholding: tuple[Strategy, ...] = ()  # weighed, but withhold declared context
    schedules: dict[str, Schedule]
    predictions: dict[str, Prediction]
    latency_model: LatencyModel
    replies: Replies = DEFAULT_REPLIES
    endpoint: str = SIMULATOR  # the profile's endpoint
    model: str = DEFAULT_MODEL
    profiled: bool = False  # False: the defaults, nothing measured
    notes: tuple[str, ...] = ()  # a profile that could not be read, and the like
    # the chain's other models: requests measured on the endpoint (0: none, so their steps
    # are predicted by ``model``'s profile)
    other_models: dict[str, int] = {}
    # ``predictions`` are with prefix warm-up (a run's default); these without it, for the
    # strategies where it changes anything; hints: how the prompts could share a prefix
    without_warmup: dict[str, Prediction] = {}
    prefix_warmup: bool = True  # the advice: keep warm-up on for the recommended strategy
    hints: tuple[str, ...] = ()


def _main_model(chain: Chain) -> str:
    named = Counter(chain.model_for(s) for s in chain.steps if s.kind == "llm")
    return named.most_common(1)[0][0] if named else DEFAULT_MODEL


def _calibration(paths: list[str], label: str, model: str, chain: Chain) -> list[Observed]:
    results = load_results(paths)
    used = Counter(s.model for r in results for s in r.steps if s.attempts and s.model)
    if used and model not in used:
        raise InputError(f"--calibrate: those runs called {', '.join(sorted(used))}, not "
                         f"{model}; plan for their model with --model "
                         f"{used.most_common(1)[0][0]}")
    items = []
    for result in results:
        try:
            ran = chain if result.scenario == chain.name else load_chain(result.scenario)
        except InputError:
            ran = None
        items.append(Observed(result, ran, None if ran is None else ran.inputs))
    return items


class Basis(NamedTuple):
    """What predictions of a chain on an endpoint rest on: the main model's latency model
    and reply lengths (measured, or the stated defaults), and those of the chain's other
    models measured there (``predict``'s ``others``)."""

    latency: LatencyModel
    replies: Replies
    endpoint: str
    model: str
    profiled: bool
    notes: tuple[str, ...]
    others: dict[str, tuple[LatencyModel, Replies]]
    other_requests: dict[str, int]  # each other model: requests measured (0: none)


def endpoint_models(chain: Chain, base_url: str | None = None, model: str | None = None,
                    calibrate_from: Iterable[str] = (), strict: bool = False) -> Basis:
    """What predictions of ``chain`` on an endpoint rest on (``model``: every step's, else
    the chain's most used one, the others' own profiles where measured; ``calibrate_from``
    adds runs' results to each model's). ``strict``: an endpoint with no profile of the main
    model is an ``InputError``."""
    if base_url and base_url.startswith(SIMULATOR):
        label = base_url
    else:
        label = endpoint_label(base_url) if base_url else default_endpoint(os.environ)
    main = model or _main_model(chain)  # a model given is every step's
    names = [main] if model else list(dict.fromkeys(
        [main, *(chain.model_for(s) for s in chain.steps if s.kind == "llm")]))
    profiles: dict[str, Profile | None] = {}
    notes: list[str] = []
    for name in names:
        profiles[name], problem = load_profile(label, name)
        notes += [problem] if problem else []
    paths = list(calibrate_from)
    if paths:
        filled = {name: found or Profile(endpoint=label, model=name)
                  for name, found in profiles.items()}
        observe(filled, _calibration(paths, label, main, chain))
        profiles = dict(filled)
    profile = profiles[main]
    profiled = profile is not None and bool(profile.requests)
    if not profiled and strict:
        known = [f"{e} ({m}, {n} requests)" for e, m, n in known_profiles()]
        raise InputError(
            (f"{notes[0]}; " if notes else "") + f"no profile of {label} ({main}): "
            "nothing was measured there yet; run or bench a chain on it first, or pass "
            "--calibrate FILE" + (f" (profiles: {'; '.join(known)})" if known else ""))
    latency, replies = models(profile) if profiled else (LatencyModel(), DEFAULT_REPLIES)
    # Another model on the same endpoint: what its few requests cannot pin down (decode
    # speed from three replies, say) keeps the main model's fitted value, not the defaults.
    prior = latency.model_copy(update={"overhead_s": LatencyModel().overhead_s})  # own dispatch
    others = {name: models(found, base=prior) for name, found in profiles.items()
              if name != main and found is not None and found.requests}
    other_requests = {name: found.requests if found is not None else 0
                      for name, found in profiles.items() if name != main}
    return Basis(latency, replies, label, main, profiled, tuple(notes), others,
                 other_requests)


def profile_endpoint(base_url: str | None, sim_speed: float | None) -> str | None:
    """The endpoint whose profiles to predict from: ``base_url``, or with ``sim_speed`` the
    embedded simulator at that speed (as runs at that speed learn it)."""
    if sim_speed is None:
        return base_url
    if base_url:
        raise InputError("--sim-speed (sim_speed) names the embedded simulator's profile; it "
                         "does not go with --base-url (base_url)")
    return endpoint_label(None, simulated=True, sim_speed=sim_speed)


def plan(chain: Chain | str, objective: Objective = "latency", *, prices: str | None = None,
         calibrate_from: Iterable[str] = (), base_url: str | None = None,
         model: str | None = None, strict: bool = False,
         min_prefix_tokens: int = MIN_PREFIX_TOKENS, sim_speed: float | None = None) -> Plan:
    """Resolve every strategy's schedule, predict its makespan, tokens and cost, and advise.

    The predictions use the profile of ``base_url`` and ``model`` (default: the endpoint
    ``chainray.run`` would call and the chain's model; ``sim_speed``: the embedded
    simulator's at that speed, as runs with ``sim_speed`` learn it), learned from earlier runs
    there, each step from its own model's where one was measured; ``calibrate_from`` adds
    runs' JSON results to them. With ``strict``, an endpoint nothing was
    measured on is an ``InputError``; otherwise the stated defaults apply. Predictions are
    with prefix warm-up (siblings that share a prompt prefix of ``min_prefix_tokens`` or more
    start at their leader's first token), ``without_warmup`` without it. Sends nothing
    anywhere and needs no Ray.

        >>> import chainray
        >>> advice = chainray.plan("quantum_research", objective="cost")
        >>> advice.strategy in ("sequential", "parallel", "hybrid")
        True
        >>> len(advice.schedules["hybrid"].critical_path) >= 2
        True
    """
    if objective not in ("latency", "cost", "quality"):
        raise InputError(f"objective must be latency, cost or quality, got {objective!r}")
    base_url = profile_endpoint(base_url, sim_speed)
    chain = chain if isinstance(chain, Chain) else load_chain(str(chain))
    price_table = load_prices(prices)
    basis = endpoint_models(chain, base_url, model, calibrate_from, strict)
    latency, replies = basis.latency, basis.replies
    schedules = {s: resolve(chain, s) for s in STRATEGIES}
    predictions = {s: predict(chain, s, price_table, latency, replies, schedules[s],
                              prefix_warmup=True, min_prefix_tokens=min_prefix_tokens,
                              others=basis.others)
                   for s in STRATEGIES}
    cold = {s: predict(chain, s, price_table, latency, replies, schedules[s],
                       others=basis.others)
            for s in STRATEGIES if predictions[s].cached_tokens}
    cold = {s: p for s, p in cold.items() if p != predictions[s]}  # warm-up changed it
    advice = advise(chain, objective, predictions, latency, schedules, cold)
    return Plan(chain=chain.name, objective=objective, strategy=advice.strategy,
                reasons=advice.reasons, withholding=advice.withholding, schedules=schedules,
                predictions=predictions, latency_model=latency, replies=replies,
                endpoint=basis.endpoint, model=basis.model, profiled=basis.profiled,
                notes=basis.notes, other_models=basis.other_requests,
                without_warmup=cold, prefix_warmup=advice.prefix_warmup,
                hints=tuple(prefix_hints(chain, schedules[advice.strategy],
                                         min_prefix_tokens)))


def batch_api_advice(config, chain: Chain, strategy: str, inputs: list[dict],
                     window: int) -> tuple[bool, list[str]]:
    """Whether a batch needing its results within ``config.deadline`` should go through the
    provider's Batch API, and why (``chainray.plan.advisor.batch_or_online``). A job's
    turnaround is the median that earlier batches journaled, else the embedded simulator's
    setting, else the provider's documented completion window (24h, its only promise); a
    phase takes more than one when earlier batches learned an enqueued-token limit that
    cuts its jobs (``batch_jobs_in_series``)."""
    from chainray.api.batch import batch_forecast
    from chainray.call.batch_client import COMPLETION_WINDOW_S
    from chainray.plan.advisor import batch_jobs_in_series, batch_or_online
    from chainray.runner.batch_jobs import journaled_jobs
    from chainray.runner.journal import journal_dir
    from chainray.sim.config import SimConfig

    forecast = batch_forecast(config, chain, strategy, inputs, window)
    prices = load_prices(config.prices)
    models = {s.id: config.model or chain.model_for(s)
              for s in chain.steps if s.kind == "llm"}
    shares = [price.batch_share or 1.0 for model in models.values()
              if (price := prices.models.get(model)) is not None]
    logs = journaled_jobs(journal_dir())  # the newest batch's word on a limit wins
    limits = {model: tokens for log in logs
              for model, tokens in log.limits_at(endpoint_label(config.base_url)).items()} \
        if config.base_url else {}
    jobs, cut_by = batch_jobs_in_series(resolve(chain, strategy).phases, models,
                                        forecast.step_prompt_tokens, limits)
    measured = [t for log in logs for t in log.turnarounds()]
    if measured:
        turnaround = sorted(measured)[len(measured) // 2]
        source = f"median of {len(measured)} job(s) earlier batches measured"
    elif config.uses_simulator:
        turnaround = SimConfig().batch_turnaround_s / config.sim_speed
        source = "the embedded simulator's setting"
    else:
        turnaround = COMPLETION_WINDOW_S
        source = "the provider's documented completion window, its only promise"
    use, why = batch_or_online(config.deadline, forecast.makespan_s, forecast.cost,
                               forecast.cost * max(shares, default=1.0), jobs, turnaround,
                               source)
    if cut_by:
        why.insert(2, f"{' and '.join(cut_by)} (learned by earlier batches) cut the phases "
                   "into jobs one after another")
    return use, why
