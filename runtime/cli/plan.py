"""``chainray plan``: ``chainray.plan``'s schedules, predictions and advice, printed for a
person (no network, no Ray)."""

from __future__ import annotations

from chainray.api.planning import plan
from chainray.plan.advisor import Objective
from chainray.spec.chain import load_chain

__all__ = ["print_plan"]


def print_plan(scenario: str, objective: Objective = "latency", calibrate_from=(),
               prices_path: str | None = None) -> None:
    chain = load_chain(scenario)
    found = plan(chain, objective, prices=prices_path, calibrate_from=calibrate_from)
    print(f"{chain.name}: {len(chain.steps)} steps, final step {chain.final_step.id!r}")
    for strategy, schedule in found.schedules.items():
        guess = found.predictions[strategy]
        print(f"\n{strategy} (shape {schedule.shape}, {len(schedule.phases)} phases)")
        for i, phase in enumerate(schedule.phases, 1):
            print(f"  phase {i}: {', '.join(phase)}")
        path = schedule.critical_path
        print(f"  critical path: {len(path)} steps: {' -> '.join(path)}")
        print(f"  predicted: makespan {guess.makespan_s:.1f}s, {guess.total_tokens} tokens "
              f"({guess.prompt_tokens} in, {guess.completion_tokens} out), {guess.calls} calls, "
              f"${guess.cost:.5f}")
    model = found.latency_model
    print(f"\nlatency model: {model.source}: time to first token {model.ttft_s:.2f}s, "
          f"{model.tokens_per_s:.0f} tokens/s")
    print(f"recommended for {objective}: {found.strategy}")
    for reason in found.reasons:
        print(f"  - {reason}")
