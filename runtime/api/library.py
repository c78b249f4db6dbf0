"""The Python API's runs: ``chainray.run``, ``arun``, ``bench`` and ``Session``.

A ``Session`` holds what is costly to start (Ray, the embedded simulator, the Coordinator and
the shared RateLimiters) and runs any number of chains on it; ``run`` and ``bench`` open one
for a single call. Options are ``SessionConfig``'s fields (``chainray run --help`` names the
same ones as flags). Runs keep a journal, so ``resume=`` finishes one whose process died.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from chainray.api import options as opts
from chainray.api.batch import batch_forecast, bench_batch_api, run_batch_api, uses_batch_api
from chainray.api.cluster import name_job
from chainray.api.config import SessionConfig, configure
from chainray.api.options import Objective, RunSpec, StrategyName
from chainray.api.planning import batch_api_advice
from chainray.api.resume import PreparedBatch, PreparedRun, prepare_batch, prepare_run
from chainray.api.runs import RunList, run_in_order
from chainray.api.session import Driver
from chainray.plan.schedule import STRATEGIES
from chainray.results import RunResult
from chainray.runner.jobs import RunJob, step_models
from chainray.spec.chain import Chain

__all__ = ["Session", "RunList", "run", "arun", "bench", "prepare_run", "prepare_batch"]

class Session:
    """Ray, the endpoint and the shared rate limit, kept open for many runs.

    ``Session(config=None, **overrides)``: a ``chainray.SessionConfig``, and/or its fields
    as keywords (they override the config's). With no ``base_url`` (and no
    ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``) it starts the embedded simulator, as
    ``chainray run`` does. ``address`` joins a running Ray cluster (``"auto"``: the one
    ``ray start`` started); else a local Ray starts, and stays up in this process for later
    sessions (``ray.shutdown()`` ends it).

        >>> import chainray
        >>> with chainray.Session(sim_speed=50, rpm=5000) as session:
        ...     results = session.run_many(["quantum_research", "code_review"])
        >>> [r.status for r in results]
        ['ok', 'ok']

    Every option is a ``SessionConfig`` field (``help(chainray.SessionConfig)``; the
    manual's Python API and Limits pages explain the spend cap, cache and hedging). A batch
    cut short (a spend cap, a Ctrl-C) is finished by ``run_many(..., resume=runs.batch_id)``,
    which sends only what did not finish.
    """

    def __init__(self, config: SessionConfig | None = None, **overrides: Any) -> None:
        self.config = configure(config, **overrides)
        self._closed, self._batch_spend = False, None
        # batch_api: batches need no Ray; it starts only for online work (bench's rows)
        self._driver: Driver | None = None if self.config.batch_api else Driver(self.config)

    @property
    def base_url(self) -> str:
        """The endpoint this session calls (the embedded simulator's loopback URL if any)."""
        return self._open().endpoint.base_url

    def _open(self) -> Driver:
        if self._closed:
            raise RuntimeError("this Session is closed; open a new one")
        if self._driver is None:
            self._driver = Driver(self.config)
        return self._driver

    def _run_jobs(self, jobs: Sequence[RunJob], window: int, label: str = "runs",
                  **kwargs: Any) -> RunList:
        """Run prepared jobs (at most ``window`` at once); one result per job, in order."""
        return run_in_order(self._open(), jobs, window, label, **kwargs)

    def run(self, chain: Chain | str, strategy: StrategyName = "hybrid",
            inputs: Mapping[str, Any] | None = None, *, objective: Objective = "latency",
            resume: str | None = None, run_id: str | None = None,
            journal: bool = True) -> RunResult:
        """Run ``chain`` (a ``Chain``, bundled name or file path) once; its ``RunResult``.

        ``inputs`` override the chain's defaults. A failed step does not raise: check
        ``result.status`` (``ok``, ``partial`` or ``failed``) and ``result.error``. Under a
        ``max_cost`` that earlier runs used up, the run does not start: its steps are all
        ``skipped`` and ``result.error`` starts with ``not started:``.

        The run journals its finished steps (``$CHAINRAY_HOME/runs``; ``journal=False``: no
        journal) under ``run_id`` (default: a fresh one, ``result.run_id``).
        ``resume=RUN_ID`` finishes that run (same chain, strategy, inputs and ``model``),
        sending only the steps its journal does not hold as finished; a run another process
        is executing is refused (``InputError``) before anything is sent.
        """
        with prepare_run(chain, strategy, inputs, objective=objective, config=self.config,
                         resume=resume, run_id=run_id, journal=journal) as prepared:
            return self.run_prepared(prepared)

    def run_prepared(self, prepared: PreparedRun) -> RunResult:
        """Run what ``prepare_run`` prepared (the command line prepares before a session
        opens, so that bad input never waits for Ray)."""
        job = prepared.job
        result = self._run_jobs([job], 1, label=f"{job.chain.name}:{job.strategy}")[0]
        prepared.finish(result)
        return result

    def run_many(self, runs: Iterable[RunSpec], strategy: StrategyName = "hybrid", *,
                 objective: Objective = "latency", window: int = 64,
                 resume: str | None = None, batch_id: str | None = None,
                 journal: bool = True,
                 on_result: Callable[[RunResult], object] | None = None) -> RunList:
        """Run many chains concurrently under the one rate limit; results in the given order.

        Each item is a chain (or name/path), or ``(chain, inputs)``. Every item is checked
        before the first run starts; at most ``window`` runs are in flight at once. The list
        holds one result per item, including those a ``max_cost`` kept from starting
        (``RunList.not_started`` names them, ``RunList.spend`` says what was spent).
        ``on_result`` is called with each result as its run finishes.

        The runs are a batch (``RunList.batch_id``; ``batch_id=`` names a new one) whose
        folder under ``$CHAINRAY_HOME/runs`` keeps each run's journal and result
        (``journal=False``: none). ``resume=BATCH_ID`` finishes that batch, given the same
        items: runs that finished ``ok`` are not run again (``RunList.resumed``), the others
        send only the steps their journals do not hold as finished.
        """
        with prepare_batch(runs, strategy, objective=objective, config=self.config,
                           resume=resume, batch_id=batch_id, journal=journal) as prepared:
            return self.run_prepared_batch(prepared, window, on_result)

    def run_prepared_batch(self, prepared: PreparedBatch, window: int = 64,
                           on_result: Callable[[RunResult], object] | None = None,
                           label: str = "runs") -> RunList:
        """Run what ``prepare_batch`` prepared; see ``run_many``. With ``batch_api`` the
        provider's Batch API runs it: one job per phase and model, at batch prices (with
        ``deadline`` alone, if the advisor picks it)."""
        if uses_batch_api(prepared, self.config) or self._batch_advised(prepared):
            ran = run_batch_api(prepared, self.config, on_result or (lambda _: None))
            self._batch_spend = ran.spend
            return RunList(ran.results, spend=ran.spend, batch_id=prepared.batch_id,
                           resumed=list(prepared.finished))
        def finished(result: RunResult) -> None:
            prepared.finish(result)
            if on_result is not None:
                on_result(result)

        todo = prepared.todo
        forecast = None
        # One chain object and strategy for all (a chain is not hashable: it holds dicts).
        if self.config.progress and todo and len({(id(j.chain), j.strategy) for j in todo}) == 1:
            forecast = batch_forecast(self.config, todo[0].chain, todo[0].strategy,
                                      [job.inputs for job in todo], window)
        ran = self._run_jobs(todo, window, label, on_result=finished,
                             forecast_s=forecast.makespan_s if forecast else None)
        by_id = {**prepared.finished, **{r.run_id: r for r in ran}}
        return RunList([by_id[job.run_id] for job in prepared.jobs],
                       not_started=ran.not_started, spend=ran.spend,
                       batch_id=prepared.batch_id, resumed=list(prepared.finished))

    def _batch_advised(self, prepared: PreparedBatch) -> bool:
        """With ``deadline`` (and no ``batch_api``): the advisor's pick, its reasons logged."""
        todo = prepared.todo
        if self.config.deadline is None or not todo or len(
                {(j.chain, j.strategy) for j in todo}) != 1:
            return False
        use, reasons = batch_api_advice(self.config, todo[0].chain, todo[0].strategy,
                                        [job.inputs for job in todo], 64)
        logging.getLogger("chainray").info("deadline: %s, because: %s",
                                           "the Batch API" if use else "online calls",
                                           "; ".join(reasons))
        return use

    def bench(self, chain: Chain | str, strategies: Sequence[str] = STRATEGIES,
              repeat: int = 1, inputs: Mapping[str, Any] | None = None) -> RunList:
        """Run ``chain`` under each strategy, ``repeat`` times, one run at a time (so that
        strategies never share the rate-limit budget), on identical inputs. With
        ``batch_api`` each strategy also runs through the Batch API (rows ``STRATEGY+batch``)
        on the same chain and inputs, to compare time and cost."""
        online = self._run_jobs(_bench_jobs(chain, strategies, repeat, inputs, self.config), 1)
        if not self.config.batch_api:
            return online
        rows = bench_batch_api(opts.as_chain(chain), strategies, repeat, inputs, self.config)
        return RunList([*online, *rows], online.not_started, online.spend)

    async def arun(self, chain: Chain | str, strategy: StrategyName = "hybrid",
                   inputs: Mapping[str, Any] | None = None, *,
                   objective: Objective = "latency", resume: str | None = None,
                   run_id: str | None = None, journal: bool = True) -> RunResult:
        """``run`` for async code: the event loop keeps serving while the chain runs."""
        return await asyncio.to_thread(self.run, chain, strategy, inputs, objective=objective,
                                       resume=resume, run_id=run_id, journal=journal)

    @property
    def interrupted(self) -> bool:
        """Whether a Ctrl-C (or SIGTERM) stopped this session: its runs may be partial, and
        a ``resume`` finishes them without paying again for what they received."""
        return self._driver is not None and self._driver.interrupted

    def spend_state(self) -> dict | None:
        """What the ``max_cost`` cap allowed so far: ``cap_usd``, ``spent_usd`` (real usage
        at the price table), ``refused`` calls and whether it ``stopped`` admission; ``None``
        without a cap."""
        if self._driver is None and not self._closed:
            return self._batch_spend
        return self._open().spend_state()

    def limiter_stats(self) -> list[dict]:
        """Each shared RateLimiter's counters (permits granted, 429s, tokens, its limits)."""
        return self._open().limiter_stats()

    def close(self) -> None:
        """Stop the embedded simulator and this session's actors (Ray itself stays up)."""
        self._closed = True
        if self._driver is not None:
            self._driver.close()
            self._driver = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _bench_jobs(chain: Chain | str, strategies: Sequence[str], repeat: int,
                inputs: Mapping[str, Any] | None, config: SessionConfig) -> list[RunJob]:
    if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
        raise opts.InputError(f"repeat must be a whole number of at least 1, got {repeat!r}")
    chain = opts.as_chain(chain)
    return [opts.prepare_job(chain, strategy, inputs, "latency", config)
            for _ in range(repeat) for strategy in strategies]


def run(chain: Chain | str, strategy: StrategyName = "hybrid",
        inputs: Mapping[str, Any] | None = None, *, objective: Objective = "latency",
        resume: str | None = None, run_id: str | None = None, journal: bool = True,
        config: SessionConfig | None = None, **overrides: Any) -> RunResult:
    """Run a chain once and return its ``RunResult``; the embedded simulator by default.

        >>> import chainray
        >>> result = chainray.run("quantum_research", strategy="hybrid", sim_speed=50)
        >>> result.status, len(result.steps)
        ('ok', 6)

    ``overrides`` are ``SessionConfig``'s fields (``base_url``, ``model``, ``rpm``, ``tpm``,
    ``max_concurrency``, ``address``, ``sim_speed``, ``on_error``, ``max_cost``, ``cache``,
    ``hedge_after``, ...), over ``config``. The chain, its inputs and the options are all
    checked before anything starts. ``resume``, ``run_id`` and ``journal`` are
    ``Session.run``'s: ``chainray.run(chain, resume=result.run_id)`` finishes a run whose
    process died, sending only its unfinished steps. For many runs, open a ``Session`` once
    instead: it keeps Ray, the simulator and the limiter between runs.

        result = chainray.run(chain, max_cost=0.05)      # never spends more than 5 cents
        result = chainray.run(chain, cache=True)         # a rerun is answered from disk
        result = chainray.run(chain, hedge_after=0.9)    # duplicate stragglers
    """
    config = configure(config, **overrides)
    with prepare_run(chain, strategy, inputs, objective=objective, config=config,
                     resume=resume, run_id=run_id, journal=journal) as prepared:
        name_job(prepared.job.chain.name, run_id=prepared.job.run_id)  # if this starts Ray
        # The run's limiters start with the session, as chainray run's do.
        opened = configure(config, models=step_models(prepared.job))
        with Session(opened) as session:
            return session.run_prepared(prepared)


async def arun(chain: Chain | str, strategy: StrategyName = "hybrid",
               inputs: Mapping[str, Any] | None = None, *, objective: Objective = "latency",
               resume: str | None = None, run_id: str | None = None, journal: bool = True,
               config: SessionConfig | None = None, **overrides: Any) -> RunResult:
    """``run`` from async code (a web handler): awaits the run without blocking the loop.

        result = await chainray.arun(chain, inputs={"topic": "tea"}, base_url=URL)
        result = await chainray.arun(chain, max_cost=0.05, cache="/srv/cache")
    """
    config = configure(config, **overrides)  # a typo is refused here, before the thread
    return await asyncio.to_thread(run, chain, strategy, inputs, objective=objective,
                                   resume=resume, run_id=run_id, journal=journal,
                                   config=config)


def bench(chain: Chain | str, strategies: Sequence[str] = STRATEGIES, repeat: int = 1,
          inputs: Mapping[str, Any] | None = None, *, config: SessionConfig | None = None,
          **overrides: Any) -> RunList:
    """Compare strategies on identical inputs: ``repeat`` runs of each, one at a time.

        runs = chainray.bench(chain, strategies=["parallel", "hybrid"], repeat=3)
        fastest = runs.fastest()     # the quickest ok run; runs.verdicts(): ties, failures

    Like ``chainray bench``, it bypasses the response cache unless ``cache=`` is given (a
    cached reply takes no time, so timings would not compare strategies). Bench runs keep
    no journal.
    """
    config = configure(config, **overrides)
    jobs = _bench_jobs(chain, strategies, repeat, inputs, config)
    with Session(config) as session:
        return session._run_jobs(jobs, 1)
