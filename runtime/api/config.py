"""The one configuration of a session: ``SessionConfig``, validated once when it is built.

``chainray.Session(config, **overrides)``, ``chainray.run(..., **overrides)`` and the command
line (``cli/flags.py`` maps each flag onto a field of the same name) all build it, so an option
is defined, defaulted, checked and documented here and nowhere else. A bad value raises
``InputError`` naming the field; an unknown name raises ``TypeError``. Nothing here imports Ray.

    >>> from chainray.api.config import SessionConfig
    >>> SessionConfig(rpm=500, model="gpt-4o-mini").rpm
    500
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator

from chainray.durations import parse_duration
from chainray.errors import InputError
from chainray.guards.cache import cache_dir
from chainray.limit.limits import Limits
from chainray.plan.profiles import endpoint_label
from chainray.runner.jobs import RunOptions
from chainray.sim.config import SimConfig

__all__ = ["SessionConfig", "configure", "cache_folder", "CacheOption", "simulator_settings",
           "stated_limits"]

CacheOption = str | os.PathLike[str] | bool | None


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _whole(name: str, value: Any) -> Any:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                              or value <= 0):
        raise InputError(f"{name} must be a whole number greater than 0, got {value!r}")
    return value


def _positive(name: str, value: Any) -> Any:
    if value is not None and not (_is_number(value) and value > 0):
        unit = " (USD)" if name == "max_cost" else ""
        raise InputError(f"{name} must be a number greater than 0{unit}, got {value!r}")
    return value


def _share(name: str, value: Any) -> Any:
    if value is not None and not (_is_number(value) and 0 < value <= 1):
        raise InputError(f"{name} must lie in (0, 1], got {value!r}")
    return value


def _duration(name: str, value: Any) -> float | None:
    """Seconds from a number or a duration such as ``30m``, ``2h``, ``1h30m``."""
    if value is None:
        return None
    try:
        seconds = float(value) if _is_number(value) else parse_duration(str(value))
    except ValueError:
        seconds = None
    if seconds is None or not seconds > 0 or seconds == float("inf"):
        raise InputError(f"{name} (--{name}) must be a duration greater than 0 such as 90s, "
                         f"30m or 2h, got {value!r}")
    return seconds


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


class SessionConfig(RunOptions):
    """How to reach Ray and the endpoint, the budget to keep under, the guards, and (from
    ``RunOptions``) how each run goes: ``model``, ``on_error``, ``priority``, ``prices``.

    ``rpm``/``tpm`` are explicit limits: they reconfigure the shared limiter. Left ``None``,
    the embedded simulator's own settings apply, or the limits another endpoint's headers
    state; a dimension nobody states is not paced. With no ``base_url``, ``api_key``,
    ``OPENAI_BASE_URL`` or ``OPENAI_API_KEY`` the session starts the embedded simulator.
    """

    address: str | None = Field(None, description="Ray cluster to join ('auto': the one "
                                "`ray start` started; default RAY_ADDRESS, else a local Ray)")
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint")
    api_key: SecretStr | None = Field(None, description="replaces OPENAI_API_KEY for this "
                                      "session only (never logged, never in results)")
    api_version: str | None = Field(None, description="Azure OpenAI's api-version; base_url "
                                    "is then the resource endpoint")
    rpm: int | None = Field(None, description="requests/min budget")
    tpm: int | None = Field(None, description="tokens/min budget")
    max_concurrency: int = Field(64, description="most calls in flight at once")
    target_share: float = Field(0.95, description="pace at this share of rpm/tpm")
    dashboard: bool = Field(False, description="start Ray's dashboard with a local Ray "
                            "(seconds and ~300 MiB: only when asked)")
    sim_speed: float = Field(1.0, description="embedded simulator only: N times faster")
    timeout: float = Field(60.0, description="per-request timeout, seconds")
    max_attempts: int = Field(6, description="attempts per call, retries included")
    backoff_s: float = Field(0.5, description="first retry's backoff, seconds")
    progress: bool = Field(False, description="live progress on stderr")
    max_cost: float | None = Field(None, description="hard cap in USD on everything the "
                                   "session sends, kept with the prices table")
    cache: str | None = Field(None, description="response cache folder (True: "
                              "$CHAINRAY_HOME/cache)")
    hedge_after: float | None = Field(None, description="quantile (0, 1] after which a "
                                      "straggling request gets one duplicate")
    otel: bool | None = Field(None, description="send each run's trace over OTLP/HTTP (None: "
                              "when OTEL_EXPORTER_OTLP_ENDPOINT or ..._TRACES_ENDPOINT is set; "
                              "needs chainray[otel])")
    learn: bool = Field(True, description="add what runs measure to the endpoint's profile "
                        "(which chainray.plan predicts from)")
    models: tuple[str, ...] = Field((), description="models whose rate limiters open with "
                                    "the session (else at first use)")
    sim_flags: tuple[str, ...] = Field((), description="extra embedded simulator flags")
    runners: int = Field(2, description="step-runner actors (two, so that a runner that "
                         "dies has a peer to take its steps while Ray restarts it)")
    batch_api: bool = Field(False, description="a batch (run_many, --inputs) goes through "
                            "the provider's Batch API (/v1/files, /v1/batches): one job per "
                            "phase and model, at batch prices")
    deadline: float | None = Field(None, description="seconds (or a duration: 30m, 2h) the "
                                   "results may take: the advisor picks the Batch API or "
                                   "online calls by it and cost, and says why")
    limiter_namespace: str = Field("chainray", description="Ray namespace of the shared "
                                   "RateLimiters (actors.rate_limiter.LIMITER_NAMESPACE)")
    env: dict[str, str] = Field(default_factory=lambda: dict(os.environ), repr=False,
                                description="the environment the session reads "
                                "(OPENAI_BASE_URL, OPENAI_API_KEY)")

    def __init__(self, **data: Any) -> None:
        unknown = sorted(set(data) - set(type(self).model_fields))
        if unknown:
            raise TypeError(f"unknown option {unknown[0]!r}; options: "
                            f"{', '.join(sorted(type(self).model_fields))}")
        try:
            super().__init__(**data)
        except ValidationError as exc:
            error = exc.errors()[0]
            name = ".".join(str(part) for part in error["loc"])
            shown = "" if name.split(".")[0] in ("env", "api_key") else \
                f", got {error.get('input')!r}"  # never echo the environment or a key
            raise InputError(f"{name}: {error['msg']}{shown}") from None

    @field_validator("rpm", "tpm", "max_concurrency", "max_attempts", "runners",
                     mode="before")
    @classmethod
    def _whole_numbers(cls, value: Any, info: Any) -> Any:
        return _whole(info.field_name, value)

    @field_validator("sim_speed", "timeout", "max_cost", mode="before")
    @classmethod
    def _positive_numbers(cls, value: Any, info: Any) -> Any:
        return _positive(info.field_name, value)

    @field_validator("target_share", "hedge_after", mode="before")
    @classmethod
    def _shares(cls, value: Any, info: Any) -> Any:
        return _share(info.field_name, value)

    @field_validator("deadline", mode="before")
    @classmethod
    def _deadline(cls, value: Any) -> float | None:
        return _duration("deadline", value)

    @field_validator("cache", mode="before")
    @classmethod
    def _cache(cls, value: Any) -> str | None:
        return cache_folder(value)

    @field_validator("models", mode="before")
    @classmethod
    def _models(cls, value: Any) -> tuple[str, ...]:
        return tuple(sorted(set(value or ())))

    @property
    def uses_simulator(self) -> bool:
        """True when nothing names an endpoint: the session starts the embedded simulator."""
        return not (self.base_url or self.env.get("OPENAI_BASE_URL") or self.api_key
                    or self.env.get("OPENAI_API_KEY"))

    @property
    def profile_endpoint(self) -> str | None:
        """The endpoint as learned profiles name it: the embedded simulator with its speed
        and flags when the session starts it (they change its latency), else ``base_url``
        (None: the one the environment names)."""
        if self.uses_simulator:
            return endpoint_label(None, simulated=True, sim_speed=self.sim_speed,
                                  sim_flags=self.sim_flags)
        return self.base_url

    def endpoint_key(self) -> str | None:
        """The API key to send: ``api_key``, else ``OPENAI_API_KEY``."""
        return self.api_key.get_secret_value() if self.api_key else self.env.get(
            "OPENAI_API_KEY")


def configure(config: SessionConfig | None = None, **overrides: Any) -> SessionConfig:
    """``config`` (default: every default) with ``overrides`` applied, validated again."""
    if config is not None and not isinstance(config, SessionConfig):
        raise TypeError(f"config must be a chainray.SessionConfig, got {type(config).__name__}")
    if config is None:
        return SessionConfig(**overrides)
    return SessionConfig(**{**dict(config), **overrides}) if overrides else config


def simulator_settings(config: SessionConfig) -> SimConfig:
    """The embedded simulator's limits: the flags if given, else its own defaults."""
    return SimConfig(rpm=config.rpm or SimConfig().rpm, tpm=config.tpm or SimConfig().tpm)


def stated_limits(config: SessionConfig, simulated: bool) -> Limits:
    """The limits a driver states: its flags, and the embedded simulator's settings (which
    are the simulator's real limits); nothing else."""
    stated = {"max_concurrency": config.max_concurrency, "priority": config.priority,
              "target_share": config.target_share}
    if simulated:
        sim = simulator_settings(config)
        stated.update(rpm=sim.rpm, tpm=sim.tpm, rpm_from="simulator",
                      tpm_from="simulator", burst_s=min(60.0, sim.burst_s))
    for name in ("rpm", "tpm"):
        if getattr(config, name):
            stated.update({name: getattr(config, name), f"{name}_from": "flag"})
    return Limits(**stated)
