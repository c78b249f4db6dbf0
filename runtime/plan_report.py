"""``chainray plan``: what each strategy would do with a chain, printed for a person."""

from __future__ import annotations

from runtime.schedule import STRATEGIES, resolve
from runtime.spec import load_chain

__all__ = ["print_plan"]


def print_plan(scenario: str, **_options) -> None:
    chain = load_chain(scenario)
    print(f"{chain.name}: {len(chain.steps)} steps, final step {chain.final_step.id!r}")
    for strategy in STRATEGIES:
        schedule = resolve(chain, strategy)
        print(f"\n{strategy} (shape {schedule.shape}, {len(schedule.phases)} phases)")
        for i, phase in enumerate(schedule.phases, 1):
            print(f"  phase {i}: {', '.join(phase)}")
        path = schedule.critical_path
        print(f"  critical path: {len(path)} steps: {' -> '.join(path)}")
