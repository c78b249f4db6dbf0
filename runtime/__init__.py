"""chainray: run LLM prompt chains on Ray under one rate limit, and measure the schedules.

    >>> import chainray
    >>> chain = chainray.load_chain("quantum_research")      # bundled name or a path
    >>> chainray.plan(chain, objective="cost").strategy in ("sequential", "parallel", "hybrid")
    True

``import chainray`` is cheap: the names below load their modules (and Ray) on first use.
``chainray.plan`` is both the planning function and the ``chainray.plan`` subpackage.
"""

from __future__ import annotations

import importlib
import types
from typing import TYPE_CHECKING, Any

if __name__ != "chainray":  # the folder is not a package of its own; see pyproject.toml
    raise ImportError("runtime/ is installed as chainray: import chainray")

__all__ = ["load_chain", "Chain", "Step", "run", "arun", "bench", "plan", "Session",
           "SessionConfig", "Plan", "RunResult", "StepResult", "RunList", "bundled_scenarios",
           "ChainrayError", "SpecError", "InputError"]

_EXPORTS = {
    "load_chain": "chainray.spec.chain", "Chain": "chainray.spec.chain",
    "Step": "chainray.spec.chain", "run": "chainray.api.library",
    "arun": "chainray.api.library", "bench": "chainray.api.library",
    "Session": "chainray.api.library", "SessionConfig": "chainray.api.config",
    "RunList": "chainray.api.runs",
    "Plan": "chainray.api.planning",
    "RunResult": "chainray.results", "StepResult": "chainray.results",
    "ChainrayError": "chainray.errors", "SpecError": "chainray.errors",
    "InputError": "chainray.errors", "bundled_scenarios": "chainray.spec.bundled",
}

if TYPE_CHECKING:
    from chainray.api.config import SessionConfig
    from chainray.api.library import Session, arun, bench, run
    from chainray.api.planning import Plan
    from chainray.api.runs import RunList
    from chainray.errors import ChainrayError, InputError, SpecError
    from chainray.results import RunResult, StepResult
    from chainray.spec.bundled import bundled_scenarios
    from chainray.spec.chain import Chain, Step, load_chain


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'chainray' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _PlanPackage(types.ModuleType):
    """``chainray.plan(chain, objective=...)`` calls the planner; ``chainray.plan.schedule``
    and friends stay importable, as the subpackage and the function share the name."""

    def __call__(self, chain: Any, objective: str = "latency", **options: Any) -> Any:
        """Schedules, predictions and advice for ``chain``: see ``chainray.api.planning.plan``."""
        from chainray.api.planning import plan as plan_chain

        return plan_chain(chain, objective, **options)


def _install_plan() -> None:
    import chainray.plan as package  # an empty __init__: cheap

    package.__class__ = _PlanPackage


_install_plan()
