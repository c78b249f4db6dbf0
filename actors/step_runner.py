"""Steps on Ray: llm steps as calls on async step-runner actors, python steps as remote tasks.

An LLM call waits on the network, so a blocking task per call would hold a whole worker
process; one async actor (Ray's ``async def`` actor methods) keeps hundreds of calls in
flight.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial

import ray

from chainray.actors.adaptations import AdaptationsRef, RemoteAdaptations
from chainray.actors.cache import RemoteCache
from chainray.actors.durations import SharedLatencies
from chainray.actors.lifeline import watch_parent
from chainray.actors.rate_limiter import RemoteLimiter
from chainray.actors.spend import RemoteBudget
from chainray.call.endpoint import CallServices, Endpoint, NoStore, make_client
from chainray.guards.call_guards import CallGuards, Latencies
from chainray.limit.stoppable import StoppableLimiter
from chainray.results import StepResult
from chainray.runner.step_exec import StepRequest, execute_llm_step, execute_python_step

__all__ = ["StepRunner", "GuardHandles", "run_python_step", "keep_debug_log"]

CLIENTS_KEPT = 8  # endpoints a runner keeps a client (a connection pool) for
STOPS_KEPT = 10_000  # stopped run ids a runner remembers


def keep_debug_log() -> None:
    """Send chainray's debug detail (full errors behind one-line step errors) to this worker's
    stderr, which Ray keeps in its session logs (worker-*.err) and does not show the user."""
    logger = logging.getLogger("chainray")
    if not any(getattr(h, "chainray", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        handler.chainray = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)


def _where() -> tuple[str, str]:
    context = ray.get_runtime_context()
    return context.get_node_id(), context.get_task_id()


@dataclass(frozen=True)
class GuardHandles:
    """An invocation's optional guards as they travel to the runners (None: not in use)."""

    spend: ray.actor.ActorHandle | None = None
    cache: ray.actor.ActorHandle | None = None
    hedge_after: float | None = None
    durations: ray.actor.ActorHandle | None = None  # the invocation's finished requests


@ray.remote(num_cpus=0, max_concurrency=1000, max_restarts=3, enable_task_events=False)
class StepRunner:
    """Runs llm steps; one ``openai.AsyncOpenAI`` client (its connection pool) per endpoint.

    The endpoint comes with each step (``run_step(..., endpoint=)``), so one runner serves
    any driver's endpoint (the warm runners of ``chainray up`` serve every driver on their
    Ray); the one given here is the default. A stop is scoped to the runs it names.

    Only ``run_step`` reports task events: its calls are the steps in the dashboard."""

    def __init__(self, endpoint: Endpoint | None = None, name: str = "StepRunner") -> None:
        keep_debug_log()
        self.name = name
        self.running = self.done = 0
        self.endpoint = endpoint
        self.clients: OrderedDict[tuple, object] = OrderedDict()  # the newest CLIENTS_KEPT
        self.stores: dict[str, RemoteAdaptations] = {}  # one copy per namespace
        self.latencies: dict[str, Latencies] = {}  # hedging's view, one per invocation
        self.stopped = asyncio.Event()  # set by stop() of every run: no new request at all
        self.run_stops: dict[str, list] = {}  # run id -> [its stop event, its steps running]
        self.stopped_runs: OrderedDict[str, None] = OrderedDict()  # stop(run_ids) named them
        self.lifeline: asyncio.Task | None = None  # exits when the raylet is gone
        if endpoint is not None:
            self._client(endpoint)
        else:  # a warm runner: the client library's import is paid now, not by a first step
            import openai  # noqa: F401

    def _client(self, endpoint: Endpoint):
        """The client of ``endpoint``, made once and kept while it is among the newest used."""
        key = (endpoint.base_url, endpoint.api_key.get_secret_value(), endpoint.timeout_s,
               endpoint.api_version)
        if key not in self.clients:
            self.clients[key] = make_client(endpoint)
            while len(self.clients) > CLIENTS_KEPT:
                self.clients.popitem(last=False)  # its requests in flight keep it alive
        self.clients.move_to_end(key)
        return self.clients[key]

    def _run_stop(self, run_id: str) -> list:
        """The stop event of ``run_id`` (set when that run, or every run, is stopped) and
        how many of its steps run here; forgotten when none does."""
        entry = self.run_stops.get(run_id)
        if entry is None:
            entry = self.run_stops[run_id] = [asyncio.Event(), 0]
            if self.stopped.is_set() or run_id in self.stopped_runs:
                entry[0].set()
        return entry

    def _guards(self, handles: GuardHandles | None) -> CallGuards | None:
        if handles is None:
            return None
        return CallGuards(
            budget=RemoteBudget(handles.spend) if handles.spend is not None else None,
            cache=RemoteCache(handles.cache) if handles.cache is not None else None,
            hedge_after=handles.hedge_after, latencies=self._latencies(handles))

    def _latencies(self, handles: GuardHandles) -> Latencies | None:
        """The invocation-wide view of finished requests (one per durations actor)."""
        if handles.hedge_after is None:
            return None
        if handles.durations is None:  # no actor: this runner's own requests
            return self.latencies.setdefault("", Latencies())
        key = handles.durations._actor_id.hex()
        if key not in self.latencies:
            self.latencies[key] = SharedLatencies(handles.durations)
        return self.latencies[key]

    def _store(self, ref: AdaptationsRef | None) -> RemoteAdaptations | None:
        if ref is None:
            return None
        if ref.namespace not in self.stores:
            self.stores[ref.namespace] = RemoteAdaptations(ref)
        return self.stores[ref.namespace]

    def __repr__(self) -> str:
        return f"StepRunner({self.name}: {self.running} steps running, {self.done} done)"

    @ray.method(enable_task_events=True)
    async def run_step(self, request: StepRequest,
                       limiters: dict[str, ray.actor.ActorHandle],
                       adaptations: AdaptationsRef | None,
                       *upstream: StepResult, guards: GuardHandles | None = None,
                       endpoint: Endpoint | None = None,
                       warmup: ray.actor.ActorHandle | None = None) -> StepResult:
        """``limiters`` holds the RateLimiter of the step's model and of each fallback;
        ``endpoint``: where to send it (default: the runner's own); ``warmup``: the
        Coordinator that holds steps back until this step's first token arrives."""
        if self.lifeline is None:
            self.lifeline = watch_parent()
        endpoint = endpoint or self.endpoint
        if endpoint is None:
            raise ValueError("run_step needs an endpoint: this runner was made without one")
        store, call_guards = self._store(adaptations), self._guards(guards)
        stop = self._run_stop(request.run_id)
        services = CallServices(
            self._client(endpoint), endpoint,
            {model: StoppableLimiter(RemoteLimiter(handle), stop[0])
             for model, handle in limiters.items()},
            NoStore() if store is None else store,
            CallGuards() if call_guards is None else call_guards,
            on_first_token=None if warmup is None else partial(
                warmup.first_token.remote, request.run_id, request.step.id))
        self.running += 1
        stop[1] += 1
        try:
            return await execute_llm_step(request, upstream, services, _where)
        finally:
            self.running -= 1
            self.done += 1
            stop[1] -= 1
            if stop[1] == 0:
                self.run_stops.pop(request.run_id, None)

    def _stop_all(self) -> None:
        self.stopped.set()
        for event, _ in self.run_stops.values():
            event.set()

    async def stop(self, run_ids: list[str] | None = None) -> None:
        """Send no new request for ``run_ids`` (default: every run; requests in flight
        finish): those runs are stopping. Other runs on this runner go on."""
        if run_ids is None:
            self._stop_all()
            return
        for run_id in run_ids:
            self.stopped_runs[run_id] = None
            if run_id in self.run_stops:
                self.run_stops[run_id][0].set()
        while len(self.stopped_runs) > STOPS_KEPT:
            self.stopped_runs.popitem(last=False)

    async def state(self) -> dict:
        """Name, process id, steps running and done (for ``chainray status``)."""
        import os

        return {"name": self.name, "pid": os.getpid(), "running": self.running,
                "done": self.done}

    async def pid(self) -> int:
        import os

        return os.getpid()


@ray.remote(num_cpus=0.25, max_retries=2)
def run_python_step(request: StepRequest, *upstream: StepResult) -> StepResult:
    keep_debug_log()
    return execute_python_step(request, upstream, _where)
