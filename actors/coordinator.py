"""The Coordinator actor: resolves a chain's schedule, dispatches its steps as Ray tasks the
moment their dependencies finish, and gathers their results into a ``RunResult``.

One Coordinator serves every run a driver starts (a batch runs many at once); it owns a small
pool of async step-runner actors, spread over the cluster's nodes.

In the dashboard, a job's task table is its steps: the Coordinator's own calls and the
runners' bookkeeping report no task events, every actor is named after its session
(``chainray-coordinator-<session>``, ``chainray-runner-<n>-<session>``), and
``end_actors`` lets them exit gracefully so that the task events they hold reach Ray.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from chainray import telemetry
from chainray.actors.lifeline import watch_driver, watch_parent
from chainray.actors.step_runner import (
    GuardHandles,
    StepRunner,
    keep_debug_log,
    run_python_step,
)
from chainray.call.endpoint import Endpoint
from chainray.plan.cost import load_prices
from chainray.plan.schedule import resolve
from chainray.results import RunResult, StepResult
from chainray.runner.dispatch import dispatch
from chainray.runner.jobs import RunJob, models_of
from chainray.runner.journal import append_step
from chainray.runner.prefix_warmup import PrefixWarmup
from chainray.runner.step_exec import StepRequest, build_messages
from chainray.runner.summary import run_attributes, summarize_run

__all__ = ["Coordinator", "start_step_runners", "is_process_death", "coordinator_name",
           "end_actors"]

# A step's process (worker, actor or node) is gone: sending the step again may succeed.
_DEATHS = tuple(getattr(ray.exceptions, name) for name in (
    "RayActorError", "ActorDiedError", "ActorUnavailableError", "WorkerCrashedError",
    "NodeDiedError", "LocalRayletDiedError", "ObjectLostError", "OwnerDiedError",
    "ObjectReconstructionFailedError") if hasattr(ray.exceptions, name))


def _journal_of(job: RunJob) -> Path | None:
    return Path(job.journal_dir) / f"{job.run_id}.jsonl" if job.journal_dir else None


def coordinator_name(session_id: str) -> str:
    return f"chainray-coordinator-{session_id}"


def start_step_runners(endpoint: Endpoint | None, count: int, session_id: str,
                       **options) -> list[ray.actor.ActorHandle]:
    """``count`` step runners, one per node in turn. If a node leaves, its runner's steps are
    sent again to the next runner (dispatch resubmits), which lives on another node. The
    driver starts them beside the Coordinator: worker processes start a few at a time, and
    starting them from the Coordinator's constructor would queue them behind it. ``options``
    go to each runner's ``.options`` (a warm runner's namespace and lifetime)."""
    nodes = [node["NodeID"] for node in ray.nodes() if node["Alive"]]
    names = [f"chainray-runner-{i}-{session_id}" for i in range(count)]
    return [StepRunner.options(name=name, scheduling_strategy=NodeAffinitySchedulingStrategy(
        nodes[i % len(nodes)], soft=False), **options).remote(endpoint, name)
        for i, name in enumerate(names)]


def end_actors(handles: list[ray.actor.ActorHandle], timeout_s: float = 10.0) -> None:
    """Ask actors to exit (Ray's own graceful exit, ``__ray_terminate__``), then kill any still
    there after ``timeout_s``. A killed process loses the task events it has not sent yet
    (Ray sends them every second), and the dashboard then shows its finished steps as FAILED
    (WORKER_DIED); an actor that exits sends them first. End the owner of the step tasks
    (the Coordinator) before the runners: a runner that dies first is a worker death under
    open task records."""
    if not handles:
        return
    exits = [handle.__ray_terminate__.remote() for handle in handles]
    _, stuck = ray.wait(exits, num_returns=len(exits), timeout=timeout_s)
    for handle, ref in zip(handles, exits, strict=True):
        if ref in stuck:
            ray.kill(handle)


def is_process_death(exc: BaseException) -> bool:
    """True when the process running a step died; an error the step raised is not that."""
    return isinstance(exc, _DEATHS) and not isinstance(exc, ray.exceptions.RayTaskError)


def step_requests(job: RunJob, schedule, journal_node: str | None = None):
    """``step_id -> StepRequest`` of ``job`` under ``schedule`` (``journal_node``: the node
    whose disk holds the run's journal)."""
    remaining = schedule.remaining_path()
    plans = schedule.plan
    journal = _journal_of(job)

    def request(step_id: str) -> StepRequest:
        return StepRequest(
            run_id=job.run_id, task_name=f"{job.chain.name}:{job.strategy}:{step_id}",
            step=job.chain.by_id[step_id], settings=job.settings(step_id), inputs=job.inputs,
            sees=plans[step_id].sees, depends_on=plans[step_id].depends_on,
            priority=float(remaining[step_id]) if job.priority else 0.0,
            journal=None if journal is None else str(journal), journal_node=journal_node,
            trace=telemetry.child_trace(job.trace))

    return request


@ray.remote(num_cpus=0, max_concurrency=1000, enable_task_events=False)
class Coordinator:
    def __init__(self, runners: list[ray.actor.ActorHandle]) -> None:
        keep_debug_log()
        self.runners = runners  # from start_step_runners, started beside this actor
        self.turn = itertools.count()
        self.lost: set[str] = set()  # ids of runners whose process or node died
        self.live: dict[str, Counter] = {}
        self.finished = Counter()
        self.stopped = False  # every run stops (stop() named no run)
        self.stopped_runs: set[str] = set()  # stop(run_ids): runs still live that stop
        self.lifeline = None  # exits when the raylet (and so the driver) is gone
        self.node_id = ray.get_runtime_context().get_node_id()  # the driver's: its journals
        self.warmups: dict[str, PrefixWarmup] = {}  # run id -> its prefix warm-up
        self.handle = ray.get_runtime_context().current_actor  # warm-up leaders report here

    def __repr__(self) -> str:
        steps = sum(counts["running"] for counts in self.live.values())
        return (f"Coordinator({len(self.live)} runs running ({steps} steps), "
                f"{self.finished['runs']} runs done, {len(self.runners)} step runners)")

    def _start_step(self, job: RunJob, schedule, limiters: Mapping[str, Any],
                    adaptations: Any = None, guards: GuardHandles | None = None,
                    endpoint: Endpoint | None = None):
        requests = step_requests(job, schedule, self.node_id)
        warmup = self.warmups.get(job.run_id)

        def start(step_id: str, upstream: Mapping[str, Any]):
            if step_id in job.resumed:
                return ray.put(job.resumed[step_id])
            request, step = requests(step_id), job.chain.by_id[step_id]
            if step.kind == "python":
                return run_python_step.options(name=request.task_name).remote(
                    request, *upstream.values())
            runner = self._next_runner()
            own = {model: limiters[model] for model in models_of(request.settings)}
            leads = warmup is not None and step_id in warmup.first
            return runner.run_step.options(name=request.task_name).remote(
                request, own, adaptations, *upstream.values(), guards=guards,
                endpoint=endpoint, warmup=self.handle if leads else None)

        return start

    async def first_token(self, run_id: str, step_id: str) -> None:
        """A warm-up leader's first token arrived (its step runner says so): the steps it
        holds back may start."""
        if (warmup := self.warmups.get(run_id)) is not None:
            warmup.first_token(step_id)

    def _warmup(self, job: RunJob, schedule) -> PrefixWarmup | None:
        """The run's prefix warm-up (``job.prefix_warmup``), rendering a ready llm step's
        request from its upstream results as its runner will."""
        if not job.prefix_warmup:
            return None
        requests = step_requests(job, schedule)

        def prompt_of(step_id: str, results: Mapping[str, StepResult]):
            request = requests(step_id)
            if request.step.kind != "llm" or step_id in job.resumed \
                    or not set(request.sees) <= results.keys():
                return None
            messages = build_messages(request, [results[s] for s in request.sees])
            return models_of(request.settings)[0], messages

        return PrefixWarmup(prompt_of, job.cache_min_prefix_tokens)

    async def run(self, job: RunJob, limiters: Mapping[str, Any],
                  adaptations: Any = None, guards: GuardHandles | None = None,
                  endpoint: Endpoint | None = None) -> RunResult:
        """Run ``job``; its llm steps go to ``endpoint`` (default: each runner's own).
        Traced, the run's span holds its steps' and is exported before the result returns."""
        if self.lifeline is None:
            self.lifeline = watch_parent()
        with telemetry.run_span(job.trace, f"chainray.run {job.chain.name}", {
                "chainray.run.id": job.run_id, "chainray.scenario": job.chain.name,
                "chainray.strategy": job.strategy}) as span:
            # A driver that dies stops its run (on a warm Coordinator, which outlives it).
            driver = None if job.driver_pid is None else watch_driver(
                job.driver_pid, lambda: self.stop([job.run_id]))
            try:
                result = await self._run(job, limiters, adaptations, guards, endpoint)
            finally:
                if driver is not None:
                    driver.cancel()
            span.set(run_attributes(result))
            if result.status == "failed":
                span.fail(result.error_code or "failed", result.error)
        await telemetry.aflush(job.trace)
        return result

    async def _run(self, job: RunJob, limiters: Mapping[str, Any], adaptations: Any,
                   guards: GuardHandles | None, endpoint: Endpoint | None) -> RunResult:
        schedule = resolve(job.chain, job.strategy)
        counts = self.live[job.run_id] = Counter(pending=len(schedule.steps))
        # The driver opened the journal (header, lock); a step that ran on this node appended
        # its reply itself (``StepRequest.journal``); this appends those that ran elsewhere.
        journal = _journal_of(job)

        def update(step_id: str, state: str, result: StepResult | None) -> None:
            if state == "running":
                counts["pending"] -= 1
                counts["running"] += 1
            elif state == "resubmitted":
                counts["resubmitted"] += 1
            elif state == "skipped":
                counts["pending"] -= 1
                counts["skipped"] += 1
            else:
                counts["running"] -= 1
                counts["done" if state == "ok" else "failed"] += 1
            if (result is not None and journal is not None and step_id not in job.resumed
                    and result.node_id != self.node_id):
                append_step(journal, result)
            if result is not None and step_id not in job.resumed:  # sent by this invocation
                counts["tokens"] += result.prompt_tokens + result.completion_tokens
                counts["calls"] += result.attempts
                counts["retries"] += max(0, result.attempts - 1)
                counts["rate_limited"] += result.rate_limited

        started = time.perf_counter()
        warmup = self._warmup(job, schedule)
        if warmup is not None:
            self.warmups[job.run_id] = warmup
        try:
            start = self._start_step(job, schedule, limiters, adaptations, guards, endpoint)
            results = await dispatch(
                schedule, start, job.on_error or job.chain.on_error, update,
                is_process_death=self._runner_lost,
                stopped=lambda: self.stopped or job.run_id in self.stopped_runs,
                warmup=warmup)
        finally:
            self.warmups.pop(job.run_id, None)
            self.stopped_runs.discard(job.run_id)
            self.finished.update(self.live.pop(job.run_id))
            self.finished["runs"] += 1
        latency_ms = (time.perf_counter() - started) * 1000
        return summarize_run(job.chain, schedule, results, latency_ms, job.run_id,
                             load_prices(job.prices), resumed=job.resumed.keys(),
                             isolated=(job.on_error or job.chain.on_error) == "isolate")

    def _next_runner(self) -> ray.actor.ActorHandle:
        """The next runner in turn among those not lost (all of them again if every one
        was: a crashed runner restarts in place, a lost node's does not)."""
        live = [r for r in self.runners if r._actor_id.hex() not in self.lost] or self.runners
        return live[next(self.turn) % len(live)]

    def _runner_lost(self, exc: BaseException) -> bool:
        """A step's process died: its runner takes no further step (a node that died takes
        its runner with it), and dispatch sends the step again, to a live runner."""
        if not is_process_death(exc):
            return False
        if (actor_id := getattr(exc, "actor_id", None)) is not None:
            self.lost.add(actor_id)
        return True

    async def stop(self, run_ids: list[str] | None = None) -> int:
        """Start nothing new in ``run_ids`` (default: every run): no step of theirs starts
        and the step runners send no new request for them; requests in flight finish and
        their replies are journaled. Other runs (another driver's, on a shared Coordinator)
        go on. Returns how many steps of the stopping runs were running."""
        import asyncio

        if run_ids is None:
            self.stopped = True
        else:
            self.stopped_runs.update(r for r in run_ids if r in self.live)
        await asyncio.gather(*(runner.stop.remote(run_ids) for runner in self.runners),
                             return_exceptions=True)
        stopping = self.live if run_ids is None else {r: self.live[r] for r in run_ids
                                                      if r in self.live}
        return sum(counts["running"] for counts in stopping.values())

    async def progress(self, run_ids: list[str] | None = None) -> dict:
        """Steps pending, running, done, failed; calls, retries, 429s, tokens; runs done.

        With ``run_ids``: only those runs' live counters (a driver adds its finished runs from
        their results), so one run's line never counts another run's steps."""
        if run_ids is None:
            total = Counter(self.finished)
            live = list(self.live.values())
        else:
            total = Counter()
            live = [self.live[r] for r in run_ids if r in self.live]
        for counts in live:
            total.update(counts)
        total["runs_running"] = len(live)
        return dict(total)

    async def runner_pids(self) -> list[int]:
        """Process ids of the step runners (for operators and fault tests)."""
        import asyncio

        return list(await asyncio.gather(*(runner.pid.remote() for runner in self.runners)))

    async def state(self) -> dict:
        """This actor's and its runners' process ids and counts (``chainray status``)."""
        import asyncio
        import os

        runners = await asyncio.gather(*(runner.state.remote() for runner in self.runners),
                                       return_exceptions=True)
        return {"pid": os.getpid(), "runs_running": len(self.live),
                "runs_done": self.finished["runs"],
                "runners": [r if isinstance(r, dict) else {"error": type(r).__name__}
                            for r in runners]}

    async def fit(self) -> bool:
        """Whether this crew can serve another session: no global stop, no runner lost,
        every runner answering."""
        await self.ready()
        return not self.stopped and not self.lost

    async def ready(self) -> int:
        """Wait until the step runners are up; returns how many there are."""
        import asyncio

        await asyncio.gather(*(runner.pid.remote() for runner in self.runners))
        return len(self.runners)
