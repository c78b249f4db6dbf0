"""``chainray plan``: schedules, critical paths, predictions and advice, printed for a person."""

from __future__ import annotations

from chainray.plan.advisor import Objective, advise
from chainray.plan.cost import load_prices
from chainray.plan.predict import LatencyModel, calibrate, predict
from chainray.plan.schedule import STRATEGIES, resolve
from chainray.spec.chain import load_chain

__all__ = ["print_plan"]


def print_plan(scenario: str, objective: Objective = "latency", calibrate_from=(),
               prices_path: str | None = None) -> None:
    chain = load_chain(scenario)
    prices = load_prices(prices_path)
    model = calibrate(calibrate_from) if calibrate_from else LatencyModel()
    predictions = {s: predict(chain, s, prices, model) for s in STRATEGIES}
    print(f"{chain.name}: {len(chain.steps)} steps, final step {chain.final_step.id!r}")
    for strategy in STRATEGIES:
        schedule, guess = resolve(chain, strategy), predictions[strategy]
        print(f"\n{strategy} (shape {schedule.shape}, {len(schedule.phases)} phases)")
        for i, phase in enumerate(schedule.phases, 1):
            print(f"  phase {i}: {', '.join(phase)}")
        path = schedule.critical_path
        print(f"  critical path: {len(path)} steps: {' -> '.join(path)}")
        print(f"  predicted: makespan {guess.makespan_s:.1f}s, {guess.total_tokens} tokens "
              f"({guess.prompt_tokens} in, {guess.completion_tokens} out), {guess.calls} calls, "
              f"${guess.cost:.5f}")
    advice = advise(chain, objective, predictions)
    print(f"\nlatency model: {model.source}: time to first token {model.ttft_s:.2f}s, "
          f"{model.tokens_per_s:.0f} tokens/s")
    print(f"recommended for {objective}: {advice.strategy}")
    for reason in advice.reasons:
        print(f"  - {reason}")
