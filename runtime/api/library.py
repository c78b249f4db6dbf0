"""The Python API's runs: ``chainray.run``, ``arun``, ``bench`` and ``Session``.

A ``Session`` holds what is costly to start (Ray, the embedded simulator, the Coordinator and
the shared RateLimiters) and runs any number of chains on it; ``run`` and ``bench`` open one
for a single call. Options are the command line's (``chainray run --help``).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from chainray.api import options as opts
from chainray.api.options import Objective, OnError, StrategyName
from chainray.api.session import Session as _Driver
from chainray.plan.schedule import STRATEGIES
from chainray.results import RunResult
from chainray.spec.chain import Chain

__all__ = ["Session", "run", "arun", "bench"]

RunSpec = Chain | str | tuple[Chain | str, Mapping[str, Any]]


class Session:
    """Ray, the endpoint and the shared rate limit, kept open for many runs.

    With no ``base_url`` (and no ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` in the environment)
    it starts the embedded simulator, as ``chainray run`` does. ``address`` joins a running
    Ray cluster (``"auto"``: the one ``ray start`` started); else a local Ray starts, and
    stays up in this process for later sessions (``ray.shutdown()`` ends it).

        >>> import chainray
        >>> with chainray.Session(sim_speed=50, rpm=5000) as session:
        ...     results = session.run_many(["quantum_research", "code_review"])
        >>> [r.status for r in results]
        ['ok', 'ok']

    Options: ``base_url``, ``api_key``, ``model`` (every llm step), ``rpm``, ``tpm``,
    ``max_concurrency``, ``target_share``, ``address``, ``on_error`` (``fail``/``continue``),
    ``priority``, ``timeout`` (per request, s), ``max_attempts``, ``sim_speed``, ``prices``,
    ``dashboard`` (start Ray's dashboard with a local Ray), ``progress`` (live progress),
    ``api_version`` (Azure OpenAI).
    """

    def __init__(self, *, base_url: str | None = None, api_key: str | None = None,
                 model: str | None = None, rpm: int | None = None, tpm: int | None = None,
                 max_concurrency: int = 64, target_share: float = 0.95,
                 address: str | None = None, on_error: OnError | None = None,
                 priority: bool = True, timeout: float = 60.0, max_attempts: int = 6,
                 sim_speed: float = 1.0, prices: str | None = None, dashboard: bool = False,
                 progress: bool = False, api_version: str | None = None) -> None:
        config = opts.session_config(
            address=address, base_url=base_url, api_key=api_key, rpm=rpm, tpm=tpm,
            max_concurrency=max_concurrency, target_share=target_share, priority=priority,
            dashboard=dashboard, sim_speed=sim_speed, timeout=timeout,
            max_attempts=max_attempts, progress=progress, api_version=api_version)
        self._job_options = {"on_error": on_error, "model": model, "priority": priority,
                             "prices": prices}
        self._driver: _Driver | None = _Driver(config)

    @property
    def base_url(self) -> str:
        """The endpoint this session calls (the embedded simulator's loopback URL if any)."""
        return self._open().endpoint.base_url

    def _open(self) -> _Driver:
        if self._driver is None:
            raise RuntimeError("this Session is closed; open a new one")
        return self._driver

    def _job(self, chain: Chain | str, strategy: StrategyName, inputs: Mapping | None,
             objective: Objective):
        chain = opts.as_chain(chain)
        values = opts.chain_inputs(chain, inputs)
        chosen, _ = opts.choose_strategy(chain, strategy, objective,
                                         self._job_options["prices"])
        return opts.run_job(chain, chosen, values, **self._job_options)

    def run(self, chain: Chain | str, strategy: StrategyName = "hybrid",
            inputs: Mapping[str, Any] | None = None, *,
            objective: Objective = "latency") -> RunResult:
        """Run ``chain`` (a ``Chain``, bundled name or file path) once; its ``RunResult``.

        ``inputs`` override the chain's defaults. A failed step does not raise: check
        ``result.status`` (``ok``, ``partial`` or ``failed``) and ``result.error``.
        """
        job = self._job(chain, strategy, inputs, objective)
        return self._open().run(job)

    def run_many(self, runs: Iterable[RunSpec], strategy: StrategyName = "hybrid", *,
                 objective: Objective = "latency", window: int = 64) -> list[RunResult]:
        """Run many chains concurrently under the one rate limit; results in the given order.

        Each item is a chain (or name/path), or ``(chain, inputs)``. Every item is checked
        before the first run starts; at most ``window`` runs are in flight at once.
        """
        pairs = [item if isinstance(item, tuple) else (item, None) for item in runs]
        jobs = [self._job(chain, strategy, inputs, objective) for chain, inputs in pairs]
        order = {job.run_id: i for i, job in enumerate(jobs)}
        results: list[RunResult | None] = [None] * len(jobs)
        for result in self._open().run_many(jobs, window=window, total=len(jobs)):
            results[order[result.run_id]] = result
        return [r for r in results if r is not None]

    def bench(self, chain: Chain | str, strategies: Sequence[str] = STRATEGIES,
              repeat: int = 1, inputs: Mapping[str, Any] | None = None) -> list[RunResult]:
        """Run ``chain`` under each strategy, ``repeat`` times, one run at a time (so that
        strategies never share the rate-limit budget), on identical inputs."""
        if repeat < 1:
            raise opts.InputError(f"repeat must be at least 1, got {repeat}")
        jobs = [self._job(chain, strategy, inputs, "latency")
                for _ in range(repeat) for strategy in strategies]
        return [self._open().run(job) for job in jobs]

    async def arun(self, chain: Chain | str, strategy: StrategyName = "hybrid",
                   inputs: Mapping[str, Any] | None = None, *,
                   objective: Objective = "latency") -> RunResult:
        """``run`` for async code: the event loop keeps serving while the chain runs."""
        return await asyncio.to_thread(self.run, chain, strategy, inputs, objective=objective)

    def limiter_stats(self) -> list[dict]:
        """Each shared RateLimiter's counters (permits granted, 429s, tokens, its limits)."""
        return self._open().limiter_stats()

    def close(self) -> None:
        """Stop the embedded simulator and this session's actors (Ray itself stays up)."""
        if self._driver is not None:
            self._driver.close()
            self._driver = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_SESSION_OPTIONS = frozenset(inspect.signature(Session).parameters)


def _split(options: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - _SESSION_OPTIONS)
    if unknown:
        raise TypeError(f"unknown option {unknown[0]!r}; options: "
                        f"{', '.join(sorted(_SESSION_OPTIONS))}")
    return options


def run(chain: Chain | str, strategy: StrategyName = "hybrid",
        inputs: Mapping[str, Any] | None = None, *, objective: Objective = "latency",
        **options: Any) -> RunResult:
    """Run a chain once and return its ``RunResult``; the embedded simulator by default.

        >>> import chainray
        >>> result = chainray.run("quantum_research", strategy="hybrid", sim_speed=50)
        >>> result.status, len(result.steps)
        ('ok', 6)

    ``options`` are ``Session``'s (``base_url``, ``model``, ``rpm``, ``tpm``,
    ``max_concurrency``, ``address``, ``sim_speed``, ``on_error``, ...). For many runs, open a
    ``Session`` once instead: it keeps Ray, the simulator and the limiter between runs.
    """
    with Session(**_split(options)) as session:
        return session.run(chain, strategy, inputs, objective=objective)


async def arun(chain: Chain | str, strategy: StrategyName = "hybrid",
               inputs: Mapping[str, Any] | None = None, *, objective: Objective = "latency",
               **options: Any) -> RunResult:
    """``run`` from async code (a web handler): awaits the run without blocking the loop.

        result = await chainray.arun(chain, inputs={"topic": "tea"}, base_url=URL)
    """
    return await asyncio.to_thread(run, chain, strategy, inputs, objective=objective,
                                   **_split(options))


def bench(chain: Chain | str, strategies: Sequence[str] = STRATEGIES, repeat: int = 1,
          inputs: Mapping[str, Any] | None = None, **options: Any) -> list[RunResult]:
    """Compare strategies on identical inputs: ``repeat`` runs of each, one at a time.

        runs = chainray.bench(chain, strategies=["parallel", "hybrid"], repeat=3)
        fastest = min(runs, key=lambda r: r.latency_ms).strategy
    """
    with Session(**_split(options)) as session:
        return session.bench(chain, strategies, repeat, inputs)
