"""The driver side of a run: connect to Ray, pick the endpoint (the embedded simulator unless
told otherwise), get the shared RateLimiters, and hand runs to the Coordinator."""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path

import ray
from pydantic import SecretStr
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from chainray.actors.adaptations import AdaptationsRef
from chainray.actors.cache import CacheKeeper
from chainray.actors.coordinator import Coordinator, coordinator_name, start_step_runners
from chainray.actors.durations import Durations
from chainray.actors.rate_limiter import get_rate_limiter, limiter_name
from chainray.actors.spend import Spend
from chainray.actors.standby import Crew, keep_crew, take_crew
from chainray.actors.step_runner import GuardHandles
from chainray.api.cluster import connect_ray
from chainray.api.config import SessionConfig, simulator_settings, stated_limits
from chainray.api.warm import WarmSimulator, WarmState, read_warm, warm_simulator
from chainray.call.endpoint import Endpoint, check_reachable
from chainray.errors import InputError
from chainray.limit.limits import Limits
from chainray.limit.machine_budget import claim_budget
from chainray.plan.learn import Learner
from chainray.plan.profiles import OPENAI_URL, endpoint_label
from chainray.report.progress import ProgressView, result_counts
from chainray.results import RunResult
from chainray.runner.jobs import RunJob, step_models
from chainray.sim.config import SimConfig
from chainray.sim.embedded import EmbeddedSimulator, start_simulator
from chainray.telemetry import run_trace, trace_settings

__all__ = ["Driver", "StopAborted"]


class StopAborted(KeyboardInterrupt):
    """A stop that could not wait for the requests in flight (a second interrupt, or the
    grace time ran out)."""


_joined_warm: dict[str, int] = {}  # the daemon whose warm Ray this process joined


class Driver:
    """One driver's connection: endpoint, limiters and a Coordinator, reused for many runs.
    The engine under the public ``chainray.Session``, which prepares the jobs it runs.

        with Driver(SessionConfig()) as driver:
            result = driver.run(RunJob(run_id="r1", chain=chain, strategy="hybrid", inputs={}))
    """

    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self.simulator: EmbeddedSimulator | None = None
        self.limiters: dict[str, ray.actor.ActorHandle] = {}
        self.coordinator = None
        self.runners: list[ray.actor.ActorHandle] = []
        self.id = uuid.uuid4().hex[:8]  # names this session's actors in the dashboard
        self.trace = trace_settings(config.env, config.otel)  # None: runs are not traced
        self.warm = self._find_warm()  # `chainray up`'s Ray, actors and simulator, if up
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _find_warm(self) -> WarmState | None:
        """The warm Ray of ``chainray up``, unless told to use another Ray (an address,
        RAY_ADDRESS) or to start one with its dashboard, or connected to another Ray."""
        if self.config.address or os.environ.get("RAY_ADDRESS") or self.config.dashboard:
            return None
        warm = read_warm()
        if warm is not None and ray.is_initialized() and _joined_warm.get("pid") != warm.pid:
            return None  # this process is on another Ray
        return warm

    def _start(self) -> None:
        config, warm = self.config, self.warm
        # The simulator (a child process) starts while Ray does: they overlap, not add up.
        with ThreadPoolExecutor(1, thread_name_prefix="chainray-sim") as pool:
            simulator = pool.submit(self._start_simulator) if config.uses_simulator else None
            if simulator is None:
                self.endpoint = self._open_endpoint()  # unreachable: fail before Ray starts
            try:
                try:
                    connect_ray(warm.address if warm else config.address, config.dashboard,
                                self._say)
                except InputError as exc:
                    if warm is None:
                        raise
                    raise InputError(f"the warm Ray of `chainray up` (PID {warm.pid}) does not "
                                     f"answer ({exc}); `chainray down` stops it") from None
                if warm is not None:
                    _joined_warm["pid"] = warm.pid  # a later session of this process too
                    self._say(f"using the warm Ray at {warm.address} (`chainray up`, PID "
                              f"{warm.pid}; `chainray down` stops it)")
            finally:  # kept even when Ray failed, so that close() stops it
                if simulator is not None:
                    self.simulator = simulator.result(timeout=120)
            if simulator is not None:
                self.endpoint = self._open_endpoint()
        self._claim_budget()
        # On the driver's node, so that the run journal lands on the driver's disk.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        if warm is not None:  # shared: its runners are the Coordinator's, not this driver's
            self.coordinator = ray.get_actor(warm.coordinator, namespace=warm.namespace)
        elif (crew := take_crew(config.runners)) is not None:  # an earlier session's
            self.coordinator, self.runners = crew.coordinator, crew.runners
        else:
            self.runners = start_step_runners(self.endpoint, config.runners, self.id)
            self.coordinator = Coordinator.options(
                scheduling_strategy=here, name=coordinator_name(self.id)).remote(self.runners)
        self.adaptations = AdaptationsRef(config.limiter_namespace)
        self.notes_shown = 0
        self.described: dict[str, str] = {}
        self.open_limiters(config.models)  # their processes start beside the Coordinator's
        ray.get(self.coordinator.ready.remote(), timeout=120)  # open means ready to run
        self.guards = self._open_guards(here)
        self.not_started: list[str] = []  # run ids the spend cap kept from starting
        self.learner = Learner(endpoint_label(
            self.endpoint.base_url, simulated=self.simulator is not None,
            sim_speed=config.sim_speed, sim_flags=config.sim_flags), config.learn)
        self.stopping_until = 0.0  # monotonic deadline of a stop's grace (0: not stopping)

    def _claim_budget(self) -> None:
        """Say at once when another process on this machine paces the same endpoint with a
        Ray (so a budget) of its own: a Ray this process started shares its limiter with
        nobody else. The embedded simulator is private to its process."""
        started_here = getattr(ray._private.worker, "_global_node", None) is not None
        if self.simulator is None and started_here:
            claim = claim_budget(self.endpoint.base_url)
            if claim.holder_pid is not None:
                message = claim.not_shared_message()
                if self.config.progress:
                    print(f"chainray: {message}", file=sys.stderr, flush=True)
                else:
                    logging.getLogger("chainray").warning(message)

    def _start_simulator(self) -> EmbeddedSimulator:
        config = self.config
        sim = self._simulator_settings()
        if self.warm is not None and not config.sim_flags:  # flags: a simulator of its own
            return warm_simulator(self.warm, SimConfig(speed=config.sim_speed, rpm=sim.rpm,
                                                       tpm=sim.tpm))
        return start_simulator("--speed", str(config.sim_speed), "--rpm", str(sim.rpm),
                               "--tpm", str(sim.tpm), *config.sim_flags)

    def _open_guards(self, here: NodeAffinitySchedulingStrategy) -> GuardHandles | None:
        """One spend actor and one cache actor for this session, on the driver's node (the
        cache's files live on the driver's disk)."""
        config = self.config
        if config.max_cost is None and config.cache is None and config.hedge_after is None:
            return None
        spend = (Spend.options(scheduling_strategy=here, name=f"chainray-spend-{self.id}")
                 .remote(config.max_cost, config.prices) if config.max_cost is not None else None)
        cache = (CacheKeeper.options(scheduling_strategy=here, name=f"chainray-cache-{self.id}")
                 .remote(Path(config.cache)) if config.cache is not None else None)
        durations = (Durations.options(scheduling_strategy=here,
                                       name=f"chainray-durations-{self.id}").remote()
                     if config.hedge_after is not None else None)
        return GuardHandles(spend=spend, cache=cache, hedge_after=config.hedge_after,
                            durations=durations)

    def spend_state(self) -> dict | None:
        """Cap, spent, in flight, refused, stopped; None without a cap."""
        if self.guards is None or self.guards.spend is None:
            return None
        return ray.get(self.guards.spend.state.remote(), timeout=60)

    def _cap_stopped(self) -> bool:
        state = self.spend_state()
        return bool(state and state["stopped"])

    def _open_endpoint(self) -> Endpoint:
        config, env = self.config, self.config.env
        base_url = config.base_url or env.get("OPENAI_BASE_URL")
        api_key, identity = config.endpoint_key(), None
        if self.simulator is not None:
            base_url, api_key = self.simulator.base_url, "sim-no-key-needed"
            # Its replies depend on its version and content flags (seed, lengths), not on
            # its port or speed: a cached reply from an earlier simulator is one it could give.
            identity = " ".join(("chainray-simulator", version("chainray"), *config.sim_flags))
        check_reachable(base_url or OPENAI_URL)
        return Endpoint(base_url=base_url or OPENAI_URL, api_key=SecretStr(api_key or "none"),
                        timeout_s=config.timeout, max_attempts=config.max_attempts,
                        backoff_s=config.backoff_s, api_version=config.api_version,
                        identity=identity)

    def _simulator_settings(self) -> SimConfig:
        return simulator_settings(self.config)

    @property
    def limits(self) -> Limits:
        """The limits this driver states (see ``stated_limits``)."""
        return stated_limits(self.config, simulated=self.simulator is not None)

    def _say(self, line: str) -> None:
        if self.config.progress:
            print(f"chainray: {line}", file=sys.stderr, flush=True)

    def limiters_for(self, job: RunJob) -> dict[str, ray.actor.ActorHandle]:
        """The run's RateLimiters, started (and waited for) before its first step. Explicit
        limits reconfigure a shared limiter that exists already (the newest explicit value
        wins); the limits in force and where they came from are printed once."""
        return self.open_limiters(step_models(job))

    def open_limiters(self, models: Iterable[str]) -> dict[str, ray.actor.ActorHandle]:
        """The shared RateLimiters of ``models`` (see ``limiters_for``)."""
        limits, detached = self.limits, self.simulator is None or self._shared_simulator
        new = {model: get_rate_limiter(limiter_name(self.endpoint.base_url, model),
                                       limits, self.config.limiter_namespace, detached)
               for model in set(models) - self.limiters.keys()}
        if not new:
            return self.limiters
        changes = ray.get([handle.configure.remote(limits) for handle in new.values()],
                          timeout=120)
        stats = ray.get([handle.stats.remote() for handle in new.values()], timeout=120)
        for model, change, stat in zip(new, changes, stats, strict=True):
            self._say(f"{model}: reconfigured the shared limiter: {change}" if change else
                      f"{model}: {stat['described']}")
            self.described[model] = stat["described"]
        self.limiters.update(new)
        return self.limiters

    def submit(self, job: RunJob) -> ray.ObjectRef:
        self.learner.expect(job.run_id, job.chain, job.inputs)
        if not ray.util.client.ray.is_connected():  # a Ray Client driver is on another host
            job = job.model_copy(update={"driver_pid": os.getpid()})  # its death stops the run
        if self.trace is not None:
            job = job.model_copy(update={"trace": run_trace(self.trace)})
        return self.coordinator.run.options(name=f"run:{job.chain.name}:{job.strategy}").remote(
            job, self.limiters_for(job), self.adaptations, self.guards, self.endpoint)

    def run(self, job: RunJob, label: str | None = None) -> RunResult:
        """Run one chain to the end, showing progress."""
        return next(self.run_many([job], label=label or f"{job.chain.name}:{job.strategy}"))

    def run_many(self, jobs: Iterable[RunJob], window: int = 1,
                 label: str = "runs", total: int | None = None,
                 forecast_s: float | None = None) -> Iterator[RunResult]:
        """Run jobs with at most ``window`` at a time; yield results as they finish.

        Progress counts these runs only: live counters of the ones in flight plus the
        results of the finished ones (``forecast_s``: the batch's forecast, for the ETA)."""
        pending = iter(jobs)
        in_flight: dict[ray.ObjectRef, str] = {}
        finished = Counter()
        limits = {"rpm": self.limits.rpm, "tpm": self.limits.tpm}
        try:
            with ProgressView(label, self.config.progress, limits=limits,
                              forecast_s=forecast_s) as view:
                while True:
                    try:
                        results = self._next_results(pending, in_flight, window)
                    except KeyboardInterrupt:
                        self._stop(list(in_flight.values()))
                        continue
                    if results is None:
                        return
                    for result in results:
                        finished.update(result_counts(result))
                    live = ray.get(self.coordinator.progress.remote(list(in_flight.values())),
                                   timeout=60)
                    counts = dict(finished + Counter(live))
                    counts["runs_running"] = live.get("runs_running", 0)
                    view.show({**counts, "runs_total": total} if total else counts)
                    if results:
                        self._show_adaptations()
                        self.learner.add(results)
                    yield from results
        finally:  # what these runs taught is on disk when they end (plan reads it there)
            self.learner.flush()

    def _next_results(self, pending: Iterator[RunJob], in_flight: dict[ray.ObjectRef, str],
                      window: int) -> list[RunResult] | None:
        """Admit runs up to ``window`` (none once stopping), then the results finished within
        half a second; None when nothing is left. A result leaves ``in_flight`` only once it
        is in hand, so an interrupt anywhere here loses none."""
        while not self.stopping_until and len(in_flight) < window and (
                job := next(pending, None)) is not None:
            if self._cap_stopped():  # the cap stopped admission: start nothing new
                self.not_started += [job.run_id, *(j.run_id for j in pending)]
                break
            in_flight[self.submit(job)] = job.run_id
        if not in_flight:
            return None
        if self.stopping_until and time.monotonic() > self.stopping_until:
            raise StopAborted(f"{len(in_flight)} run(s) still had requests in flight when "
                              "the grace time ended")
        done, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
        results = [ray.get(ref, timeout=60) for ref in done]
        for ref in done:
            del in_flight[ref]
        return results

    @property
    def interrupted(self) -> bool:
        """Whether an interrupt stopped this session (its runs may be partial: resume them)."""
        return bool(self.stopping_until)

    def _stop(self, run_ids: list[str]) -> None:
        """The first interrupt: no new run and no new request of this driver's runs (a
        shared Coordinator's other runs go on); requests in flight finish (their replies are
        journaled) within the grace time. The second one aborts."""
        if self.stopping_until:
            raise StopAborted("interrupted twice: requests in flight were abandoned")
        grace = self.config.timeout
        self.stopping_until = time.monotonic() + grace
        steps = ray.get(self.coordinator.stop.remote(run_ids), timeout=10)
        print(f"chainray: stopping: nothing new is sent; {steps} step(s) of {len(run_ids)} "
              f"run(s) in flight finish within {grace:.0f}s and are kept. Ctrl-C again to "
              "abandon them (a resume would pay for them again)", file=sys.stderr, flush=True)

    def _show_adaptations(self) -> None:
        """Say once, on stderr, how a model's parameters were adapted."""
        if (handle := self.adaptations.find()) is None:
            return
        notes = ray.get(handle.notes_since.remote(self.notes_shown), timeout=30)
        self.notes_shown += len(notes)
        for note in notes:
            print(f"chainray: {note}", file=sys.stderr)

    def limiter_stats(self) -> list[dict]:
        return ray.get([handle.stats.remote() for handle in self.limiters.values()])

    def close(self) -> None:
        """Say what the limiters learned; leave the Coordinator and its step runners to this
        process's next session (``actors/standby.py``; Ray stays up for it too); stop the
        embedded simulator, with the limiters only it used."""
        if (learner := getattr(self, "learner", None)) is not None:
            learner.flush()
        if self.limiters and ray.is_initialized():
            try:
                stats = ray.get([h.stats.remote() for h in self.limiters.values()], timeout=10)
            except (ray.exceptions.RayError, TimeoutError):
                stats = []
            for model, stat in zip(self.limiters, stats, strict=False):
                if stat["described"] != self.described.get(model):
                    self._say(f"{model}: {stat['described']}")
        if ray.is_initialized() and self.warm is None and self.coordinator is not None:
            keep_crew(Crew(self.coordinator, self.runners))  # warm actors are the daemon's
        self.coordinator, self.runners = None, []
        guards = getattr(self, "guards", None)  # the guard actors are this session's
        for handle in (guards.spend, guards.cache, guards.durations) if guards else ():
            if handle is not None and ray.is_initialized():
                ray.kill(handle)
        if self.simulator is not None and not self._shared_simulator:
            # Nobody else can call a private simulator, so its limiters go with it.
            for handle in self.limiters.values() if ray.is_initialized() else ():
                ray.kill(handle, no_restart=True)
            self.simulator.stop()
            self.simulator = None
        self.limiters.clear()

    @property
    def _shared_simulator(self) -> bool:
        """The warm simulator: other drivers call it too, under the same limiters."""
        return isinstance(self.simulator, WarmSimulator)

    def __enter__(self) -> Driver:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


