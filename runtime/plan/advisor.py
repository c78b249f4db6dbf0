"""Which strategy to pick, from the chain's graph and the user's objective, with the reasons.

The seed's decision flowchart: steps that each need the one before -> sequential; independent
groups joined by dependencies -> hybrid; all independent -> parallel when latency matters more
than cost, sequential when cost does; quality that needs cross-pollination -> sequential (or
hybrid when the graph already says what each step needs).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from chainray.plan.schedule import STRATEGIES, Strategy, resolve
from chainray.spec.chain import Chain

__all__ = ["Objective", "Advice", "advise"]

Objective = Literal["latency", "cost", "quality"]


class Advice(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: Strategy
    objective: Objective
    reasons: tuple[str, ...]


def advise(chain: Chain, objective: Objective = "latency",
           predictions: dict | None = None) -> Advice:
    """Recommend a strategy; ``predictions`` (strategy -> Prediction) sharpen the reasons."""
    declared = resolve(chain, "hybrid")
    n = len(chain.steps)
    withheld = sum(1 for s in chain.steps if s.after and s.id != declared.final)
    reasons: list[str] = []
    if declared.shape == "sequential":
        reasons.append(f"every step needs the one before it ({n} steps in a line): nothing "
                       "can run in parallel, and parallel would drop context each step needs")
        return Advice(strategy="sequential", objective=objective, reasons=tuple(reasons))
    if declared.shape == "parallel":
        reasons.append(f"all {n - 1} steps before the final one are independent")
        strategy: Strategy = {"latency": "parallel", "cost": "sequential",
                              "quality": "sequential"}[objective]
        if objective == "latency":
            reasons.append("parallel runs them at once: the critical path is 2 steps instead "
                           f"of {n}")
        elif objective == "cost":
            reasons.append("sequential avoids the burst of parallel calls and lets each step "
                           "see what was covered, so later steps repeat less")
        else:
            reasons.append("sequential lets each step build on what earlier steps covered "
                           "(cross-pollination), at the price of latency")
    else:
        groups = max(len(phase) for phase in declared.phases)
        reasons.append(f"the graph has independent groups (up to {groups} steps at once) "
                       f"joined by dependencies ({len(declared.phases)} phases)")
        strategy = {"latency": "hybrid", "cost": "hybrid", "quality": "sequential"}[objective]
        if objective == "quality":
            reasons.append("sequential lets every step see what all earlier steps covered "
                           "(cross-pollination); hybrid keeps only the declared context but "
                           "is faster")
        reasons.append("hybrid runs independent steps together and keeps every declared "
                       f"dependency; parallel would withhold upstream output from {withheld} "
                       "step(s) that declare they need it")
        if objective == "cost" and predictions:
            cheaper = min(("sequential", "hybrid"), key=lambda s: predictions[s].cost)
            strategy = cheaper
            reasons.append(f"{cheaper} is predicted cheapest of the strategies that keep the "
                           "declared context")
    if predictions:
        chosen, others = predictions[strategy], [predictions[s] for s in STRATEGIES
                                                  if s != strategy]
        fastest = min(others, key=lambda p: p.makespan_s)
        reasons.append(f"predicted {chosen.makespan_s:.1f}s and {chosen.total_tokens} tokens "
                       f"(vs {fastest.strategy} {fastest.makespan_s:.1f}s, "
                       f"{fastest.total_tokens} tokens)")
    return Advice(strategy=strategy, objective=objective, reasons=tuple(reasons))
