"""One translation of user options into a ``SessionConfig`` and ``RunJob``s, shared by the Python
API (``chainray.run``, ``chainray.Session``) and the command line, so both mean the same thing.

Nothing here imports Ray: ``SessionConfig`` is imported where a session is actually built.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from chainray.errors import InputError
from chainray.guards.cache import cache_dir
from chainray.plan.cost import load_prices
from chainray.plan.schedule import STRATEGIES
from chainray.results import StepResult
from chainray.runner.jobs import RunJob, models_of
from chainray.spec.chain import Chain, load_chain

if TYPE_CHECKING:
    from chainray.api.session import SessionConfig

__all__ = ["session_config", "run_job", "chain_inputs", "as_chain", "choose_strategy",
           "new_run_id", "cache_folder", "refuse_unpriced", "cap_summary", "OnError",
           "StrategyName", "Objective", "CacheOption"]

OnError = Literal["fail", "continue", "isolate"]
CacheOption = str | os.PathLike[str] | bool | None
StrategyName = Literal["sequential", "parallel", "hybrid", "auto"]
Objective = Literal["latency", "cost", "quality"]


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_limits(rpm: int | None, tpm: int | None, max_concurrency: int, max_attempts: int,
                  sim_speed: float, timeout: float, target_share: float,
                  max_cost: float | None, hedge_after: float | None) -> None:
    for name, value in (("rpm", rpm), ("tpm", tpm), ("max_concurrency", max_concurrency),
                        ("max_attempts", max_attempts)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value <= 0):
            raise InputError(f"{name} must be a whole number greater than 0, got {value!r}")
    for name, value in (("sim_speed", sim_speed), ("timeout", timeout),
                        ("max_cost", max_cost)):
        if value is not None and not (_is_number(value) and value > 0):
            unit = " (USD)" if name == "max_cost" else ""
            raise InputError(f"{name} must be a number greater than 0{unit}, got {value!r}")
    for name, value in (("target_share", target_share), ("hedge_after", hedge_after)):
        if value is not None and not (_is_number(value) and 0 < value <= 1):
            raise InputError(f"{name} must lie in (0, 1], got {value!r}")


def cache_folder(cache: CacheOption) -> str | None:
    """The response-cache folder ``cache`` names: ``True`` is the default folder
    (``$CHAINRAY_HOME/cache``, as a bare ``--cache``), a path is that folder, ``None`` or
    ``False`` no cache."""
    if cache is None or cache is False:
        return None
    if cache is True:
        return str(cache_dir())
    if not isinstance(cache, (str, os.PathLike)) or not os.fspath(cache):
        raise InputError(f"cache must be a folder or True (the default folder "
                         f"{cache_dir()}), got {cache!r}")
    folder = os.path.expanduser(os.fspath(cache))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise InputError(f"cache: {folder} is a file, not a folder")
    return folder


def session_config(*, address: str | None = None, base_url: str | None = None,
                   api_key: str | None = None, rpm: int | None = None, tpm: int | None = None,
                   max_concurrency: int = 64, target_share: float = 0.95,
                   priority: bool = True, dashboard: bool = False, sim_speed: float = 1.0,
                   timeout: float = 60.0, max_attempts: int = 6,
                   progress: bool = False, api_version: str | None = None,
                   max_cost: float | None = None, prices: str | None = None,
                   hedge_after: float | None = None, cache: CacheOption = None,
                   models: Iterable[str] = (), learn: bool = True) -> SessionConfig:
    """How to reach Ray and the endpoint, from the options ``chainray run`` also takes.

    ``api_version`` is Azure OpenAI's (``base_url`` is then the resource endpoint).
    ``max_cost`` (USD) is a hard cap on what the session's calls may spend (kept with the
    ``prices`` table), ``cache`` a response-cache folder (``True``: ``$CHAINRAY_HOME/cache``),
    ``hedge_after`` the quantile (0..1] after which a straggling request gets one duplicate.
    ``api_key`` replaces ``OPENAI_API_KEY`` for this session only (the key never leaves the
    session's environment copy: not logged, not in results). ``models``: those whose rate
    limiters open with the session, beside the Coordinator's processes (else at first use).
    ``learn``: add what the runs measure to the endpoint's profile (``chainray plan``).
    """
    from chainray.api.session import SessionConfig

    _check_limits(rpm, tpm, max_concurrency, max_attempts, sim_speed, timeout, target_share,
                  max_cost, hedge_after)
    folder = cache_folder(cache)
    if prices is not None:
        load_prices(prices)  # an unreadable price table is refused before anything starts
    env = dict(os.environ)
    if api_key is not None:
        env["OPENAI_API_KEY"] = api_key
    return SessionConfig(address=address, base_url=base_url, rpm=rpm, tpm=tpm,
                         max_concurrency=max_concurrency, target_share=target_share,
                         priority=priority, dashboard=dashboard, sim_speed=sim_speed,
                         timeout_s=timeout, max_attempts=max_attempts, progress=progress,
                         api_version=api_version, max_cost=max_cost, prices=prices,
                         hedge_after=hedge_after, cache=folder,
                         models=tuple(sorted(set(models))), env=env, learn=learn)


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
                    prices: str | None = None, base_url: str | None = None,
                    model: str | None = None) -> tuple[str, tuple[str, ...]]:
    """The strategy to run and, for ``auto``, the advisor's reasons for it (from the profile
    of the endpoint and model the run calls, as ``chainray plan`` predicts)."""
    if strategy != "auto":
        if strategy not in STRATEGIES:
            raise InputError(f"unknown strategy {strategy!r}; choose from "
                             f"{', '.join(STRATEGIES)} or auto")
        return strategy, ()
    from chainray.api.planning import plan

    advice = plan(chain, objective=objective, prices=prices, base_url=base_url, model=model)
    return advice.strategy, advice.reasons


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


def run_job(chain: Chain, strategy: str, inputs: Mapping[str, str | None], *,
            on_error: OnError | None = None, model: str | None = None, priority: bool = True,
            prices: str | None = None, run_id: str | None = None,
            resumed: Mapping[str, StepResult] | None = None, journal_dir: str | None = None,
            journal_key: str | None = None) -> RunJob:
    """One run to hand to a session (``strategy`` already resolved: not ``auto``).

    ``resumed`` holds the steps an earlier invocation finished (not sent again), and
    ``journal_dir``/``journal_key`` where this run journals its finished steps.
    """
    if on_error not in (None, "fail", "continue", "isolate"):
        raise InputError(f"on_error must be fail, continue or isolate, got {on_error!r}")
    return RunJob(run_id=run_id or new_run_id(), chain=chain, strategy=strategy,
                  inputs=dict(inputs), on_error=on_error, model=model, priority=priority,
                  prices=prices, resumed=dict(resumed or {}), journal_dir=journal_dir,
                  journal_key=journal_key)
