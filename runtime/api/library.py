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
from chainray.api.options import CacheOption, Objective, OnError, StrategyName
from chainray.api.runs import RunList, run_in_order
from chainray.api.session import Session as _Driver
from chainray.plan.schedule import STRATEGIES
from chainray.results import RunResult
from chainray.runner.jobs import RunJob, step_models
from chainray.spec.chain import Chain

__all__ = ["Session", "RunList", "run", "arun", "bench"]

RunSpec = Chain | str | tuple[Chain | str, Mapping[str, Any]]


def _prepare_job(chain: Chain | str, strategy: StrategyName, inputs: Mapping | None,
                 objective: Objective, job_options: Mapping[str, Any], capped: bool) -> RunJob:
    """The run ``chain`` asks for, every input checked (and, under a spend cap, every model's
    price) before anything starts: the translation ``chainray run`` uses too."""
    chain = opts.as_chain(chain)
    values = opts.chain_inputs(chain, inputs)
    if capped:
        opts.refuse_unpriced(chain, job_options["model"], job_options["prices"])
    chosen, _ = opts.choose_strategy(chain, strategy, objective, job_options["prices"],
                                     job_options.get("base_url"), job_options["model"])
    return opts.run_job(chain, chosen, values,
                        **{k: v for k, v in job_options.items() if k != "base_url"})


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

    Options (``chainray run``'s flags): ``base_url``, ``api_key``, ``model`` (every llm
    step), ``rpm``, ``tpm``, ``max_concurrency``, ``target_share``, ``address``, ``on_error``
    (``fail``/``continue``/``isolate``), ``priority``, ``timeout`` (per request, s),
    ``max_attempts``, ``sim_speed``, ``prices``, ``dashboard`` (start Ray's dashboard with a
    local Ray), ``progress`` (live progress), ``api_version`` (Azure OpenAI), and:

    - ``max_cost``: a hard cap in USD on everything the session sends (``--max-cost``). A
      call starts only if its worst case (prompt plus ``max_tokens`` at the ``prices``
      table) fits what is left, so real spend never passes the cap; once one does not fit,
      nothing new starts. A model with no price is refused (``InputError``) before anything
      is sent. ``spend_state()`` says what was spent; ``run_many`` marks the runs the cap
      kept from starting (see ``RunList``).
    - ``cache``: answer repeated requests from a response cache (``--cache``): ``True`` for
      ``$CHAINRAY_HOME/cache``, or a folder. Hits send nothing, cost $0 and are marked
      ``cached`` per step.
    - ``learn``: add what the runs measure to the endpoint's profile, from which
      ``chainray.plan`` predicts (default ``True``; ``False``: nothing is written).
    - ``hedge_after``: a quantile in (0, 1] (``--hedge-after``). A request in flight longer
      than that quantile of this session's finished requests of its model gets one
      duplicate; the first answer wins, the duplicate's tokens are counted and priced.

          with chainray.Session(max_cost=0.50, cache=True, hedge_after=0.9) as session:
              runs = session.run_many([(chain, {"topic": t}) for t in topics])
          print(runs.spend["spent_usd"], "USD;", len(runs.not_started), "never started")
    """

    def __init__(self, *, base_url: str | None = None, api_key: str | None = None,
                 model: str | None = None, rpm: int | None = None, tpm: int | None = None,
                 max_concurrency: int = 64, target_share: float = 0.95,
                 address: str | None = None, on_error: OnError | None = None,
                 priority: bool = True, timeout: float = 60.0, max_attempts: int = 6,
                 sim_speed: float = 1.0, prices: str | None = None, dashboard: bool = False,
                 progress: bool = False, api_version: str | None = None,
                 max_cost: float | None = None, cache: CacheOption = None,
                 hedge_after: float | None = None, learn: bool = True,
                 _models: Iterable[str] = ()) -> None:
        config = opts.session_config(
            address=address, base_url=base_url, api_key=api_key, rpm=rpm, tpm=tpm,
            max_concurrency=max_concurrency, target_share=target_share, priority=priority,
            dashboard=dashboard, sim_speed=sim_speed, timeout=timeout,
            max_attempts=max_attempts, progress=progress, api_version=api_version,
            max_cost=max_cost, prices=prices, hedge_after=hedge_after, cache=cache,
            models=_models, learn=learn)  # _models: run() knows its run's models before opening
        self._job_options = {"on_error": on_error, "model": model, "priority": priority,
                             "prices": prices, "base_url": base_url}
        self._capped = max_cost is not None
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
             objective: Objective) -> RunJob:
        return _prepare_job(chain, strategy, inputs, objective, self._job_options,
                            self._capped)

    def _run_jobs(self, jobs: Sequence[RunJob], window: int, label: str = "runs") -> RunList:
        """Run prepared jobs (at most ``window`` at once); one result per job, in order."""
        return run_in_order(self._open(), jobs, window, label)

    def run(self, chain: Chain | str, strategy: StrategyName = "hybrid",
            inputs: Mapping[str, Any] | None = None, *,
            objective: Objective = "latency") -> RunResult:
        """Run ``chain`` (a ``Chain``, bundled name or file path) once; its ``RunResult``.

        ``inputs`` override the chain's defaults. A failed step does not raise: check
        ``result.status`` (``ok``, ``partial`` or ``failed``) and ``result.error``. Under a
        ``max_cost`` that earlier runs used up, the run does not start: its steps are all
        ``skipped`` and ``result.error`` starts with ``not started:``.
        """
        job = self._job(chain, strategy, inputs, objective)
        return self._run_jobs([job], 1, label=f"{job.chain.name}:{job.strategy}")[0]

    def run_many(self, runs: Iterable[RunSpec], strategy: StrategyName = "hybrid", *,
                 objective: Objective = "latency", window: int = 64) -> RunList:
        """Run many chains concurrently under the one rate limit; results in the given order.

        Each item is a chain (or name/path), or ``(chain, inputs)``. Every item is checked
        before the first run starts; at most ``window`` runs are in flight at once. The list
        holds one result per item, including those a ``max_cost`` kept from starting
        (``RunList.not_started`` names them, ``RunList.spend`` says what was spent).
        """
        pairs = [item if isinstance(item, tuple) else (item, None) for item in runs]
        jobs = [self._job(chain, strategy, inputs, objective) for chain, inputs in pairs]
        return self._run_jobs(jobs, window)

    def bench(self, chain: Chain | str, strategies: Sequence[str] = STRATEGIES,
              repeat: int = 1, inputs: Mapping[str, Any] | None = None) -> RunList:
        """Run ``chain`` under each strategy, ``repeat`` times, one run at a time (so that
        strategies never share the rate-limit budget), on identical inputs."""
        return self._run_jobs(_bench_jobs(chain, strategies, repeat, inputs,
                                          self._job_options, self._capped), 1)

    async def arun(self, chain: Chain | str, strategy: StrategyName = "hybrid",
                   inputs: Mapping[str, Any] | None = None, *,
                   objective: Objective = "latency") -> RunResult:
        """``run`` for async code: the event loop keeps serving while the chain runs."""
        return await asyncio.to_thread(self.run, chain, strategy, inputs, objective=objective)

    def spend_state(self) -> dict | None:
        """What the ``max_cost`` cap allowed so far: ``cap_usd``, ``spent_usd`` (real usage
        at the price table), ``refused`` calls and whether it ``stopped`` admission; ``None``
        without a cap."""
        return self._open().spend_state()

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


def _bench_jobs(chain: Chain | str, strategies: Sequence[str], repeat: int,
                inputs: Mapping[str, Any] | None, job_options: Mapping[str, Any],
                capped: bool) -> list[RunJob]:
    if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
        raise opts.InputError(f"repeat must be a whole number of at least 1, got {repeat!r}")
    chain = opts.as_chain(chain)
    return [_prepare_job(chain, strategy, inputs, "latency", job_options, capped)
            for _ in range(repeat) for strategy in strategies]


_SESSION_OPTIONS = {name: parameter for name, parameter
                    in inspect.signature(Session).parameters.items()
                    if not name.startswith("_")}


def _split(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """The session's options (unknown names refused), the per-run ones among them with
    ``Session``'s defaults, and whether a spend cap is set."""
    unknown = sorted(set(options) - set(_SESSION_OPTIONS))
    if unknown:
        raise TypeError(f"unknown option {unknown[0]!r}; options: "
                        f"{', '.join(sorted(_SESSION_OPTIONS))}")
    job_options = {name: options.get(name, _SESSION_OPTIONS[name].default)
                   for name in ("on_error", "model", "priority", "prices", "base_url")}
    return options, job_options, options.get("max_cost") is not None


def run(chain: Chain | str, strategy: StrategyName = "hybrid",
        inputs: Mapping[str, Any] | None = None, *, objective: Objective = "latency",
        **options: Any) -> RunResult:
    """Run a chain once and return its ``RunResult``; the embedded simulator by default.

        >>> import chainray
        >>> result = chainray.run("quantum_research", strategy="hybrid", sim_speed=50)
        >>> result.status, len(result.steps)
        ('ok', 6)

    ``options`` are ``Session``'s (``base_url``, ``model``, ``rpm``, ``tpm``,
    ``max_concurrency``, ``address``, ``sim_speed``, ``on_error``, ``max_cost``, ``cache``,
    ``hedge_after``, ...). The chain, its inputs and the options are all checked before
    anything starts. For many runs, open a ``Session`` once instead: it keeps Ray, the
    simulator and the limiter between runs.

        result = chainray.run(chain, max_cost=0.05)      # never spends more than 5 cents
        result = chainray.run(chain, cache=True)         # a rerun is answered from disk
        result = chainray.run(chain, hedge_after=0.9)    # duplicate stragglers
    """
    options, job_options, capped = _split(options)
    job = _prepare_job(chain, strategy, inputs, objective, job_options, capped)
    # The run's limiters start with the session, as chainray run's do.
    with Session(**options, _models=step_models(job)) as session:
        return session._run_jobs([job], 1, label=f"{job.chain.name}:{job.strategy}")[0]


async def arun(chain: Chain | str, strategy: StrategyName = "hybrid",
               inputs: Mapping[str, Any] | None = None, *, objective: Objective = "latency",
               **options: Any) -> RunResult:
    """``run`` from async code (a web handler): awaits the run without blocking the loop.

        result = await chainray.arun(chain, inputs={"topic": "tea"}, base_url=URL)
        result = await chainray.arun(chain, max_cost=0.05, cache="/srv/cache")
    """
    _split(options)  # a typo is refused here, before the thread starts
    return await asyncio.to_thread(run, chain, strategy, inputs, objective=objective,
                                   **options)


def bench(chain: Chain | str, strategies: Sequence[str] = STRATEGIES, repeat: int = 1,
          inputs: Mapping[str, Any] | None = None, **options: Any) -> RunList:
    """Compare strategies on identical inputs: ``repeat`` runs of each, one at a time.

        runs = chainray.bench(chain, strategies=["parallel", "hybrid"], repeat=3)
        fastest = min(runs, key=lambda r: r.latency_ms).strategy

    Like ``chainray bench``, it bypasses the response cache unless ``cache=`` is given (a
    cached reply takes no time, so timings would not compare strategies).
    """
    options, job_options, capped = _split(options)
    jobs = _bench_jobs(chain, strategies, repeat, inputs, job_options, capped)
    with Session(**options) as session:
        return session._run_jobs(jobs, 1)
