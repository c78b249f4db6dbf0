"""From what a user names to the ``RunJob`` a session runs, shared by the Python API
(``chainray.run``, ``chainray.Session``) and the command line, so both mean the same thing:
the chain, its inputs, the strategy (``auto``: the advisor's pick), the spend cap's check.

The options themselves are defined once, in ``chainray.api.config.SessionConfig``. Nothing here
imports Ray.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from chainray.api import preflight
from chainray.errors import InputError
from chainray.plan.cost import load_prices
from chainray.plan.schedule import STRATEGIES
from chainray.runner.jobs import RunJob, RunOptions, models_of
from chainray.spec.chain import Chain, load_chain

if TYPE_CHECKING:
    from chainray.api.config import SessionConfig

__all__ = ["prepare_job", "run_job", "RunSpec", "chain_inputs", "as_chain",
           "choose_strategy", "StrategyChoice", "new_run_id", "refuse_unpriced", "cap_summary",
           "StrategyName", "Objective"]

StrategyName = Literal["sequential", "parallel", "hybrid", "auto"]
Objective = Literal["latency", "cost", "quality"]
RunSpec = Chain | str | tuple[Chain | str, Mapping[str, Any]]  # a chain, or (chain, inputs)


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def as_chain(chain: Chain | str) -> Chain:
    """A chain, or a bundled scenario name / chain file path loaded into one."""
    return chain if isinstance(chain, Chain) else load_chain(str(chain))


def chain_inputs(chain: Chain, overrides: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The chain's inputs with ``overrides`` applied; every input must end up with a value."""
    inputs: dict[str, Any] = dict(chain.inputs)
    for name, value in (overrides or {}).items():
        if name not in inputs:
            known = ", ".join(inputs) or "none"
            raise InputError(f"the chain has no input {name!r} (inputs: {known})")
        inputs[name] = None if value is None else str(value)
    missing = [name for name, value in inputs.items() if value is None]
    if missing:
        raise InputError(f"input {missing[0]!r} has no value; give it (--set {missing[0]}=... "
                         f"or inputs={{{missing[0]!r}: ...}})")
    return inputs


class StrategyChoice(NamedTuple):
    """The strategy to run; for ``auto``, the advisor's reasons and its prefix warm-up."""

    strategy: str
    reasons: tuple[str, ...] = ()
    prefix_warmup: bool | None = None  # None: not the advisor's to say

    def applied(self, config: SessionConfig) -> SessionConfig:
        """``config`` with the advisor's prefix warm-up, unless the user set one."""
        if self.prefix_warmup is None or "prefix_warmup" in config.model_fields_set:
            return config
        return config.model_copy(update={"prefix_warmup": self.prefix_warmup})


def choose_strategy(chain: Chain, strategy: StrategyName, objective: Objective = "latency",
                    prices: str | None = None, base_url: str | None = None,
                    model: str | None = None) -> StrategyChoice:
    """The strategy to run and, for ``auto``, the advisor's reasons for it and whether to warm
    shared prefixes (from the profile of the endpoint and model the run calls, as ``chainray
    plan`` predicts)."""
    if strategy != "auto":
        if strategy not in STRATEGIES:
            raise InputError(f"unknown strategy {strategy!r}; choose from "
                             f"{', '.join(STRATEGIES)} or auto")
        return StrategyChoice(strategy)
    from chainray.api.planning import plan

    advice = plan(chain, objective=objective, prices=prices, base_url=base_url, model=model)
    return StrategyChoice(advice.strategy, advice.reasons, advice.prefix_warmup)


def refuse_unpriced(chain: Chain, model: str | None, prices: str | None) -> None:
    """Under a spend cap, every model a run may call (fallbacks included, ``model`` overriding
    each llm step's) needs a price, else its cost cannot be capped: refused before anything
    starts."""
    table = load_prices(prices)
    called = [m for step in chain.steps if step.kind == "llm"
              for m in models_of(chain.settings_for(step))]
    unpriced = sorted({model or m for m in called} - table.models.keys())
    if unpriced:
        raise InputError(f"--max-cost/max_cost: no price for model {unpriced[0]!r}, so its "
                         "cost cannot be capped; add it to a price table and pass it with "
                         "--prices (prices= in Python)")


def cap_summary(state: dict | None) -> str | None:
    """What the spend cap did, naming the cap and the spend; None when it stopped nothing."""
    if not state or not state["stopped"]:
        return None
    return (f"spend cap ${state['cap_usd']:.4f} reached: spent ${state['spent_usd']:.4f}; "
            "calls that did not fit were not sent")


def run_job(chain: Chain, strategy: str, inputs: Mapping[str, str | None],
            options: RunOptions, *, run_id: str | None = None) -> RunJob:
    """One run to hand to a session (``strategy`` already resolved: not ``auto``) with the
    per-run ``options``; its journal and resumed steps are added when it is opened."""
    return RunJob(run_id=run_id or new_run_id(), chain=chain, strategy=strategy,
                  inputs=dict(inputs), **dict(options.run_options()))


def prepare_job(chain: Chain | str, strategy: StrategyName, inputs: Mapping | None,
                objective: Objective, config: SessionConfig,
                run_id: str | None = None) -> RunJob:
    """The run ``chain`` asks for, every input checked (and, under a spend cap, every model's
    price) before anything starts."""
    chain = as_chain(chain)
    values = chain_inputs(chain, inputs)
    preflight.refuse(preflight.input_problems(chain, values, config.model, "inputs: "))
    if config.max_cost is not None:
        refuse_unpriced(chain, config.model, config.prices)
    choice = choose_strategy(chain, strategy, objective, config.prices, config.profile_endpoint,
                             config.model)
    return run_job(chain, choice.strategy, values, choice.applied(config), run_id=run_id)
