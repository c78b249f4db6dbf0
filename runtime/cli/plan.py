"""``chainray plan``: ``chainray.plan``'s schedules, predictions and advice, printed for a
person; with ``--runs N`` or ``--inputs FILE``, the forecast of a batch under the given limits."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from chainray.api.planning import Plan, endpoint_models, plan
from chainray.plan.advisor import Objective, advise
from chainray.plan.cost import load_prices
from chainray.plan.forecast import BatchForecast, forecast_batch
from chainray.plan.predict import predict
from chainray.plan.profiles import SIMULATOR, known_profiles
from chainray.plan.schedule import STRATEGIES
from chainray.spec.chain import load_chain

__all__ = ["print_plan", "print_forecast", "print_advice"]


def print_advice(heading: str, strategy: str, reasons: Sequence[str],
                 withholding: Sequence[str] = ()) -> None:
    """The advisor's pick and its reasons (``plan``'s from predictions, ``bench``'s from
    what was measured), naming beside the pick the strategies it passed over for withholding
    declared context (the fastest or cheapest figure above may be one of them)."""
    passed = [s for s in withholding if s != strategy]
    verb = "it withholds" if len(passed) == 1 else "they withhold"
    aside = f" (not {' or '.join(passed)}: {verb} declared context)" if passed else ""
    print(f"{heading}: {strategy}{aside}")
    for reason in reasons:
        print(f"  - {reason}")


def _sim_flags(endpoint: str) -> str:
    """``embedded simulator --speed 20`` as plan's flag: ``--sim-speed 20``."""
    return endpoint.removeprefix(SIMULATOR).strip().replace("--speed", "--sim-speed", 1)


def _basis(found: Plan) -> list[str]:
    """Which profile the predictions rest on, or that they are defaults."""
    model, replies = found.latency_model, found.replies
    elsewhere = [f"plan {_sim_flags(endpoint)} ({n} requests)"
                 for endpoint, name, n in known_profiles()
                 if endpoint.startswith(SIMULATOR) and endpoint != found.endpoint
                 and name == found.model and n] if found.endpoint.startswith(SIMULATOR) else []
    head = (f"profile: {found.endpoint} ({found.model}), {model.requests} requests"
            if found.profiled else
            f"defaults: nothing measured on {found.endpoint} ({found.model}) yet; run or bench "
            "there (or --calibrate FILE) and plan learns it"
            + (f"; measured there at other speeds: {', '.join(elsewhere)}" if elsewhere else ""))
    return [head,
            f"  latency: {model.source}: time to first token {model.ttft_s:.2f}s (lognormal "
            f"sigma {model.ttft_sigma:.2f}), prefill {model.prefill_s_per_token * 1000:.3f} "
            f"ms/token, {model.tokens_per_s:.0f} tokens/s, {model.overhead_s * 1000:.0f} ms "
            "per step"
            + (f", full speed up to ~{model.slots} requests in flight" if model.slots else ""),
            f"  reply lengths: {replies.source}",
            *_other_models(found.other_models, found.model)]


def _other_models(requests: dict[str, int], main: str) -> list[str]:
    """Which of the chain's other models have a profile of their own."""
    return [f"  {name}'s steps: its own profile, {n} requests" if n else
            f"  {name}'s steps: nothing measured for {name} yet; predicted as {main}"
            for name, n in requests.items()]


def print_plan(scenario: str, objective: Objective = "latency", calibrate_from=(),
               prices_path: str | None = None, base_url: str | None = None,
               model: str | None = None) -> None:
    chain = load_chain(scenario)
    found = plan(chain, objective, prices=prices_path, calibrate_from=calibrate_from,
                 base_url=base_url, model=model, strict=bool(base_url))
    for note in found.notes:
        print(f"chainray: {note}", file=sys.stderr)
    print(f"{chain.name}: {len(chain.steps)} steps, final step {chain.final_step.id!r}")
    for strategy, schedule in found.schedules.items():
        guess = found.predictions[strategy]
        print(f"\n{strategy} (shape {schedule.shape}, {len(schedule.phases)} phases)")
        for i, phase in enumerate(schedule.phases, 1):
            print(f"  phase {i}: {', '.join(phase)}")
        path = schedule.critical_path
        print(f"  critical path: {len(path)} steps: {' -> '.join(path)}")
        low, high = guess.makespan_range
        tlow, thigh = guess.tokens_range
        print(f"  predicted: makespan {guess.makespan_s:.1f}s ({low:.1f}-{high:.1f}s), "
              f"{guess.total_tokens} tokens ({tlow}-{thigh}; {guess.prompt_tokens} in, "
              f"{guess.completion_tokens} out), {guess.calls} calls, ${guess.cost:.5f}"
              + (f", {guess.cached_tokens} prompt tokens cached" if guess.cached_tokens else ""))
        if (cold := found.without_warmup.get(strategy)) is not None:
            print(f"  without prefix warm-up (--no-prefix-warmup): makespan "
                  f"{cold.makespan_s:.1f}s, ${cold.cost:.5f}, {cold.cached_tokens} cached")
        sources = ", ".join(f"{n} from {where}" for where, n in guess.lengths_from.items())
        if sources:
            print(f"  reply lengths: {sources}")
    print()
    for line in _basis(found):
        print(line)
    print("(ranges: 10th-90th percentile of reply lengths and first tokens as they vary; "
          "the fit itself can be off by more)")
    print_advice(f"recommended for {objective}", found.strategy, found.reasons,
                 found.withholding)
    for hint in found.hints:
        print(f"prompt caching: {hint}")


def _describe(forecast: BatchForecast, rpm: int | None, tpm: int | None,
              concurrency: int) -> list[str]:
    limits = {"rpm": f"{rpm} requests/min", "tpm": f"{tpm} tokens/min",
              "max_concurrency": f"{concurrency} calls at once",
              "window": "runs in flight (--batch-window)", "latency": "one run's own latency"}
    use = forecast.utilisation
    return [
        f"batch of {forecast.runs} runs, {forecast.strategy}: makespan "
        f"{forecast.makespan_s:.1f}s ({forecast.makespan_s / 60:.1f} min), "
        f"{forecast.total_tokens} tokens, {forecast.calls} calls, ${forecast.cost:.4f}",
        f"binding limit: {forecast.binding} ({limits[forecast.binding]})",
        "bounds: " + ", ".join(f"{k} {v:.1f}s" for k, v in forecast.bounds_s.items()),
        "expected utilisation: " + ", ".join(
            f"{name} {use[key]:.0%}" for name, key in (("rpm", "rpm"), ("tpm", "tpm"),
                                                       ("concurrency", "max_concurrency"))
            if key in use),
        *([] if rpm and tpm else [
            "no " + " or ".join(n for n, v in (("rpm", rpm), ("tpm", tpm)) if not v)
            + " limit given: not paced, so not a bound (give --rpm/--tpm to forecast "
            "under them)"]),
    ]


def print_forecast(scenario: str, *, strategy: str, objective: Objective, runs: int | None,
                   inputs_path: str | None, rpm: int | None, tpm: int | None,
                   max_concurrency: int,
                   window: int, calibrate_from=(), prices_path: str | None = None,
                   base_url: str | None = None, model: str | None = None) -> None:
    from chainray.api.batch import read_batch_inputs

    chain = load_chain(scenario)
    prices = load_prices(prices_path)
    basis = endpoint_models(chain, base_url, model, calibrate_from, strict=bool(base_url))
    latency, replies, others = basis.latency, basis.replies, basis.others
    for note in basis.notes:
        print(f"chainray: {note}", file=sys.stderr)
    inputs = read_batch_inputs(inputs_path, chain, dict(chain.inputs)) if inputs_path else None
    if strategy == "auto":
        predictions = {s: predict(chain, s, prices, latency, replies, others=others)
                       for s in STRATEGIES}
        strategy = advise(chain, objective, predictions, latency).strategy
    forecast = forecast_batch(chain, strategy, prices, runs=runs or 1, rpm=rpm, tpm=tpm,
                              max_concurrency=max_concurrency, window=window, model=latency,
                              inputs=inputs, replies=replies, others=others)
    print(f"{'profile' if basis.profiled else 'defaults (nothing measured yet)'}: "
          f"{basis.endpoint} ({basis.model})")
    for line in _other_models(basis.other_requests, basis.model):
        print(line)
    for line in _describe(forecast, rpm, tpm, max_concurrency):
        print(line)
