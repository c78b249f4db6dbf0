"""One translation of user options into a ``SessionConfig`` and ``RunJob``s, shared by the Python
API (``chainray.run``, ``chainray.Session``) and the command line, so both mean the same thing.

Nothing here imports Ray: ``SessionConfig`` is imported where a session is actually built.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from chainray.errors import InputError
from chainray.exec.jobs import RunJob
from chainray.plan.schedule import STRATEGIES
from chainray.spec.chain import Chain, load_chain

if TYPE_CHECKING:
    from chainray.api.session import SessionConfig

__all__ = ["session_config", "run_job", "chain_inputs", "as_chain", "choose_strategy",
           "new_run_id", "OnError", "StrategyName", "Objective"]

OnError = Literal["fail", "continue"]
StrategyName = Literal["sequential", "parallel", "hybrid", "auto"]
Objective = Literal["latency", "cost", "quality"]


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def session_config(*, address: str | None = None, base_url: str | None = None,
                   api_key: str | None = None, rpm: int | None = None, tpm: int | None = None,
                   max_concurrency: int = 64, target_share: float = 0.95,
                   priority: bool = True, dashboard: bool = False, sim_speed: float = 1.0,
                   timeout: float = 60.0, max_attempts: int = 6,
                   progress: bool = False, api_version: str | None = None,
                   max_cost: float | None = None, prices: str | None = None,
                   hedge_after: float | None = None, cache: str | None = None) -> SessionConfig:
    """How to reach Ray and the endpoint, from the options ``chainray run`` also takes.

    ``api_version`` is Azure OpenAI's (``base_url`` is then the resource endpoint).
    ``max_cost`` (USD) is a hard cap on what the session's calls may spend, ``cache`` a
    response-cache folder, ``hedge_after`` the quantile after which a straggling request gets
    one duplicate.
    ``api_key`` replaces ``OPENAI_API_KEY`` for this session only (the key never leaves the
    session's environment copy: not logged, not in results).
    """
    from chainray.api.session import SessionConfig

    for name, value in (("rpm", rpm), ("tpm", tpm), ("max_concurrency", max_concurrency),
                        ("max_attempts", max_attempts)):
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise InputError(f"{name} must be a whole number greater than 0, got {value!r}")
    for name, value in (("sim_speed", sim_speed), ("timeout", timeout)):
        if not value > 0:
            raise InputError(f"{name} must be greater than 0, got {value!r}")
    if not 0 < target_share <= 1:
        raise InputError(f"target_share must lie in (0, 1], got {target_share!r}")
    if max_cost is not None and not max_cost > 0:
        raise InputError(f"max_cost must be greater than 0 (USD), got {max_cost!r}")
    if hedge_after is not None and not 0 < hedge_after <= 1:
        raise InputError(f"hedge_after must lie in (0, 1], got {hedge_after!r}")
    env = dict(os.environ)
    if api_key is not None:
        env["OPENAI_API_KEY"] = api_key
    return SessionConfig(address=address, base_url=base_url, rpm=rpm, tpm=tpm,
                         max_concurrency=max_concurrency, target_share=target_share,
                         priority=priority, dashboard=dashboard, sim_speed=sim_speed,
                         timeout_s=timeout, max_attempts=max_attempts, progress=progress,
                         api_version=api_version, max_cost=max_cost, prices=prices,
                         hedge_after=hedge_after, cache=cache, env=env)


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


def choose_strategy(chain: Chain, strategy: StrategyName, objective: Objective = "latency",
                    prices: str | None = None) -> tuple[str, tuple[str, ...]]:
    """The strategy to run and, for ``auto``, the advisor's reasons for it."""
    if strategy != "auto":
        if strategy not in STRATEGIES:
            raise InputError(f"unknown strategy {strategy!r}; choose from "
                             f"{', '.join(STRATEGIES)} or auto")
        return strategy, ()
    from chainray.api.planning import plan

    advice = plan(chain, objective=objective, prices=prices)
    return advice.strategy, advice.reasons


def run_job(chain: Chain, strategy: str, inputs: Mapping[str, str], *,
            on_error: OnError | None = None, model: str | None = None, priority: bool = True,
            prices: str | None = None, run_id: str | None = None) -> RunJob:
    """One run to hand to a session (``strategy`` already resolved: not ``auto``)."""
    return RunJob(run_id=run_id or new_run_id(), chain=chain, strategy=strategy,
                  inputs=dict(inputs), on_error=on_error, model=model, priority=priority,
                  prices=prices)
