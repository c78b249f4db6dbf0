"""A run to execute, as the driver hands it to the Coordinator (pure data, no Ray)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from chainray.plan.schedule import Strategy
from chainray.results import StepResult
from chainray.spec.chain import DEFAULT_MODEL, Chain, ModelSettings

__all__ = ["RunJob", "step_models", "models_of"]


class RunJob(BaseModel):
    """One run to execute: a validated chain, a strategy and the inputs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    chain: Chain
    strategy: Strategy
    inputs: dict[str, str | None]
    on_error: Literal["fail", "continue", "isolate"] | None = None
    model: str | None = None  # overrides every llm step's model
    priority: bool = True
    prices: str | None = None
    journal_dir: str | None = None  # on the driver's node; None: no journal
    journal_key: str | None = None
    resumed: dict[str, StepResult] = {}  # finished before: not sent again

    def settings(self, step_id: str) -> ModelSettings:
        settings = self.chain.settings_for(self.chain.by_id[step_id])
        return settings.model_copy(update={"model": self.model}) if self.model else settings


def models_of(settings: ModelSettings) -> list[str]:
    """The model a step calls first, then its fallbacks in order."""
    return [settings.model or DEFAULT_MODEL, *(settings.fallback_models or ())]


def step_models(job: RunJob) -> set[str]:
    """The models the run's llm steps may call, fallbacks included (one RateLimiter each)."""
    return {model for s in job.chain.steps if s.kind == "llm"
            for model in models_of(job.settings(s.id))}
