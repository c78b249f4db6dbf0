"""A run to execute, as the driver hands it to the Coordinator (pure data, no Ray), and the
per-run options it carries, defined once for the Python API, the command line and the job."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from chainray.errors import InputError
from chainray.plan.cost import load_prices
from chainray.plan.prefix import MIN_PREFIX_TOKENS
from chainray.plan.schedule import Strategy
from chainray.results import StepResult
from chainray.spec.chain import DEFAULT_MODEL, Chain, ModelSettings
from chainray.telemetry import TraceContext

__all__ = ["RunOptions", "RunJob", "step_models", "models_of"]

OnError = Literal["fail", "continue", "isolate"]


class RunOptions(BaseModel):
    """How each run goes: ``model`` replaces every llm step's model; ``on_error`` is ``fail``
    (stop at the first failed step), ``continue`` (hand failures to the final step) or
    ``isolate`` (skip only a failed step's descendants), ``None`` the chain's own;
    ``priority`` grants permits longest remaining path first (else first come, first
    served); ``prices`` is a price table file (``None``: the bundled one);
    ``prefix_warmup`` sends one of the steps ready together that share a prompt prefix of at
    least ``cache_min_prefix_tokens`` first and the rest at its first token, so that they
    read the prefix from the provider's prompt cache."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | None = None
    on_error: OnError | None = None
    priority: bool = True
    prices: str | None = None
    prefix_warmup: bool = True
    # The endpoint's smallest cached prefix (OpenAI's and most Claude models' 1,024 tokens).
    cache_min_prefix_tokens: int = Field(MIN_PREFIX_TOKENS, gt=0)

    @field_validator("on_error", mode="before")
    @classmethod
    def _on_error(cls, value: Any) -> Any:
        if value not in (None, "fail", "continue", "isolate"):
            raise InputError(f"on_error must be fail, continue or isolate, got {value!r}")
        return value

    @field_validator("prices", mode="before")
    @classmethod
    def _prices(cls, value: Any) -> Any:
        if value is not None:
            load_prices(str(value))  # an unreadable price table is refused before anything starts
            return str(value)
        return value

    def run_options(self) -> RunOptions:
        """Just the per-run options (of a ``SessionConfig``, say)."""
        return RunOptions(**{name: getattr(self, name) for name in RunOptions.model_fields})


class RunJob(RunOptions):
    """One run to execute: a validated chain, a strategy, the inputs and the run options.

    ``resumed`` holds the steps an earlier invocation finished (not sent again);
    ``journal_dir`` the folder (on the driver's node) of the journal the run appends its
    finished steps to, already opened by the driver (None: no journal); ``trace`` the
    OpenTelemetry settings (and a caller's span) its spans go to (None: not traced)."""

    run_id: str
    chain: Chain
    strategy: Strategy
    inputs: dict[str, str | None]
    journal_dir: str | None = None
    resumed: dict[str, StepResult] = {}
    trace: TraceContext | None = None  # where its trace goes (None: not traced)
    driver_pid: int | None = None  # the driver's process, on the Coordinator's node

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
