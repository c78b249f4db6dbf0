"""Schedule resolution: turn a chain and a strategy into phases, edges and a critical path.

Pure Python (graphlib), no Ray. What each strategy means (DESIGN.md):

- ``hybrid``: the graph as declared; a step waits for and sees its declared dependencies.
- ``parallel``: every non-final LLM step starts at once and sees no upstream output; the
  final step waits for and sees them all. A python step still waits for and sees its declared
  ``after:`` steps: it sends nothing and costs nothing, so honouring its inputs leaves the
  parallel shape of the LLM calls unchanged, and a function that reads ``upstream["x"]`` runs
  under every strategy (it used to get ``{}`` here and fail with ``KeyError``).
- ``sequential``: one step at a time in topological order; each step also sees what every
  earlier step produced ("previously covered angles").
"""

from __future__ import annotations

import graphlib
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict

from chainray.spec.chain import Chain

__all__ = ["Strategy", "STRATEGIES", "StepPlan", "Schedule", "resolve", "longest_path"]

Strategy = Literal["sequential", "parallel", "hybrid"]
STRATEGIES: tuple[Strategy, ...] = ("sequential", "parallel", "hybrid")
Shape = Literal["sequential", "parallel", "hybrid"]


class StepPlan(BaseModel):
    """How one step runs under a schedule: what it waits for and whose output it sees."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    depends_on: tuple[str, ...]
    sees: tuple[str, ...]


class Schedule(BaseModel):
    """A resolved plan: phases of steps that may run together, edges, shape, critical path."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: Strategy
    shape: Shape
    phases: tuple[tuple[str, ...], ...]
    edges: tuple[tuple[str, str], ...]
    critical_path: tuple[str, ...]
    steps: tuple[StepPlan, ...]
    final: str

    @cached_property
    def plan(self) -> dict[str, StepPlan]:
        return {step.id: step for step in self.steps}

    def remaining_path(self) -> dict[str, int]:
        """For each step, the number of steps on its longest path to the end, itself included.

        The RateLimiter grants permits to the step with the longest remaining path first.
        """
        dependents: dict[str, list[str]] = {step.id: [] for step in self.steps}
        for before, after in self.edges:
            dependents[before].append(after)
        remaining: dict[str, int] = {}
        for phase in reversed(self.phases):
            for step_id in phase:
                remaining[step_id] = 1 + max((remaining[d] for d in dependents[step_id]),
                                             default=0)
        return remaining


def _topological_order(chain: Chain) -> list[str]:
    """Topological order, ties broken by declaration order so runs are reproducible."""
    position = {step.id: i for i, step in enumerate(chain.steps)}
    sorter = graphlib.TopologicalSorter({s.id: s.after for s in chain.steps})
    sorter.prepare()
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=position.__getitem__)
        order.extend(ready)
        sorter.done(*ready)
    return order


def _step_plans(chain: Chain, strategy: Strategy) -> list[StepPlan]:
    order = _topological_order(chain)
    final = chain.final_step.id
    others = tuple(s for s in order if s != final)
    plans = []
    for i, step_id in enumerate(order):
        declared = chain.by_id[step_id].after
        if strategy == "hybrid":
            depends_on, sees = declared, declared
        elif strategy == "parallel":
            python = chain.by_id[step_id].kind == "python"
            depends_on = sees = others if step_id == final else declared if python else ()
        else:
            depends_on, sees = tuple(order[i - 1:i]), tuple(order[:i])
        plans.append(StepPlan(id=step_id, depends_on=depends_on, sees=sees))
    return plans


def _phases(plans: list[StepPlan]) -> list[tuple[str, ...]]:
    position = {plan.id: i for i, plan in enumerate(plans)}
    sorter = graphlib.TopologicalSorter({plan.id: plan.depends_on for plan in plans})
    sorter.prepare()
    phases = []
    while sorter.is_active():
        ready = tuple(sorted(sorter.get_ready(), key=position.__getitem__))
        phases.append(ready)
        sorter.done(*ready)
    return phases


def longest_path(
    depends_on: Mapping[str, tuple[str, ...]], weight: Callable[[str], float] = lambda _: 1.0,
) -> tuple[list[str], float]:
    """The heaviest path through a dependency graph and its total weight."""
    best: dict[str, tuple[float, str | None]] = {}  # heaviest path to a step, its predecessor
    for step_id in graphlib.TopologicalSorter(depends_on).static_order():
        before = max(depends_on.get(step_id, ()), key=lambda d: best[d][0], default=None)
        best[step_id] = ((best[before][0] if before else 0.0) + weight(step_id), before)
    last = max(best, key=lambda s: best[s][0])
    path, step = [], last
    while step is not None:
        path.append(step)
        step = best[step][1]
    return path[::-1], best[last][0]


def _shape(chain: Chain, phases: list[tuple[str, ...]]) -> Shape:
    """The shape of the LLM calls (python steps send nothing, so they do not shape a run)."""
    llm = {step.id for step in chain.steps if step.kind == "llm"} or set(chain.by_id)
    phases = [kept for phase in phases if (kept := [s for s in phase if s in llm])]
    if len(phases) == len(llm):
        return "sequential"
    return "parallel" if len(phases) <= 2 else "hybrid"


def resolve(chain: Chain, strategy: Strategy) -> Schedule:
    """Resolve ``chain`` under ``strategy`` into a ``Schedule``."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    plans = _step_plans(chain, strategy)
    phases = _phases(plans)
    path, _ = longest_path({plan.id: plan.depends_on for plan in plans})
    return Schedule(
        strategy=strategy,
        shape=_shape(chain, phases),
        phases=tuple(phases),
        edges=tuple((dep, plan.id) for plan in plans for dep in plan.depends_on),
        critical_path=tuple(path),
        steps=tuple(plans),
        final=chain.final_step.id,
    )
