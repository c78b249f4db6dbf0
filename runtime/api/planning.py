"""``chainray.plan``: schedules, critical paths, predictions and the advice, as data (no Ray)."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

from chainray.errors import InputError
from chainray.plan.advisor import Objective, advise
from chainray.plan.cost import load_prices
from chainray.plan.predict import LatencyModel, Prediction, calibrate, predict
from chainray.plan.schedule import STRATEGIES, Schedule, Strategy, resolve
from chainray.spec.chain import Chain, load_chain

__all__ = ["Plan", "plan"]


class Plan(BaseModel):
    """What ``chainray.plan`` found: the recommended strategy, why, and every alternative."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    chain: str
    objective: Objective
    strategy: Strategy
    reasons: tuple[str, ...]
    schedules: dict[str, Schedule]
    predictions: dict[str, Prediction]
    latency_model: LatencyModel


def plan(chain: Chain | str, objective: Objective = "latency", *, prices: str | None = None,
         calibrate_from: Iterable[str] = ()) -> Plan:
    """Resolve every strategy's schedule, predict its makespan, tokens and cost, and advise.

    Sends nothing anywhere and needs no Ray.

        >>> import chainray
        >>> advice = chainray.plan("quantum_research", objective="cost")
        >>> advice.strategy in ("sequential", "parallel", "hybrid")
        True
        >>> len(advice.schedules["hybrid"].critical_path) >= 2
        True
    """
    if objective not in ("latency", "cost", "quality"):
        raise InputError(f"objective must be latency, cost or quality, got {objective!r}")
    chain = chain if isinstance(chain, Chain) else load_chain(str(chain))
    price_table = load_prices(prices)
    calibrate_from = list(calibrate_from)
    model = calibrate(calibrate_from) if calibrate_from else LatencyModel()
    predictions = {s: predict(chain, s, price_table, model) for s in STRATEGIES}
    advice = advise(chain, objective, predictions)
    return Plan(chain=chain.name, objective=objective, strategy=advice.strategy,
                reasons=advice.reasons, schedules={s: resolve(chain, s) for s in STRATEGIES},
                predictions=predictions, latency_model=model)
