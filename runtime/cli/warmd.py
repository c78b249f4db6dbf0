"""The daemon of ``chainray up`` (``python -m chainray.cli.warmd``): it owns a local Ray (whose
processes are its children and die with it), the embedded simulator, chainray's Coordinator
with its step runners and the simulator's default rate limiters; writes ``warm.json`` once
they answer and refreshes the actors' state in it every few seconds; and on SIGTERM (or
SIGINT) ends them, stops its Ray and removes the file. ``chainray.cli.warm`` starts it."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from chainray.api.warm import (
    WARM_COORDINATOR,
    WARM_NAMESPACE,
    WARM_SESSION,
    WarmState,
    remove_warm,
    write_warm,
)
from chainray.home import chainray_home

__all__ = ["serve", "REFRESH_S"]

REFRESH_S = 2.0  # how often the daemon writes its actors' state into warm.json


def _actors(coordinator) -> list[dict]:
    """The warm actors' state, asked of the Coordinator (which asks its runners)."""
    import ray

    try:
        state = ray.get(coordinator.state.remote(), timeout=10)
    except (ray.exceptions.RayError, TimeoutError) as exc:
        return [{"name": WARM_COORDINATOR, "kind": "Coordinator",
                 "state": f"not answering ({type(exc).__name__})"}]
    actors = [{"name": WARM_COORDINATOR, "kind": "Coordinator", "pid": state["pid"],
               "state": "alive", "runs_running": state["runs_running"],
               "runs_done": state["runs_done"]}]
    for runner in state["runners"]:
        if "error" in runner:
            actors.append({"name": "step runner", "kind": "StepRunner",
                           "state": f"not answering ({runner['error']})"})
        else:
            actors.append({"name": runner["name"], "kind": "StepRunner", "pid": runner["pid"],
                           "state": "alive", "steps_running": runner["running"],
                           "steps_done": runner["done"]})
    return actors


def _open_limiters(sim_url: str, models: list[str]) -> list:
    """The simulator's limiters of ``models``, as a default driver would open them (shared
    and named: every driver on this Ray gets the same ones)."""
    import ray

    from chainray.actors.rate_limiter import get_rate_limiter, limiter_name
    from chainray.api.config import SessionConfig, stated_limits

    config = SessionConfig()
    limits = stated_limits(config, simulated=True)
    handles = [get_rate_limiter(limiter_name(sim_url, model), limits,
                                config.limiter_namespace, detached=True) for model in models]
    ray.get([handle.stats.remote() for handle in handles], timeout=120)
    return handles


def _start_ray() -> None:
    import logging

    import ray

    ray.init(address="local", include_dashboard=False, namespace=WARM_NAMESPACE,
             logging_level=logging.ERROR, log_to_driver=False)


def serve(runners: int, models: list[str]) -> int:
    """Run the warm Ray until SIGTERM (or SIGINT); see the module's docstring."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import ray

    from chainray.actors.coordinator import Coordinator, start_step_runners
    from chainray.api.cluster import leave_ray
    from chainray.sim.embedded import start_simulator

    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    started, simulator, handles = time.time(), None, []
    try:
        with ThreadPoolExecutor(1) as pool:  # the simulator starts while Ray does
            starting = pool.submit(start_simulator)
            try:
                _start_ray()
            finally:
                simulator = starting.result(timeout=120)
        for sig in (signal.SIGTERM, signal.SIGINT):  # ray.init put in handlers of its own
            signal.signal(sig, lambda *_: stopping.set())
        handles = start_step_runners(None, runners, WARM_SESSION, namespace=WARM_NAMESPACE,
                                     lifetime="detached")
        coordinator = Coordinator.options(name=WARM_COORDINATOR, namespace=WARM_NAMESPACE,
                                          lifetime="detached").remote(handles)
        handles.insert(0, coordinator)
        ray.get(coordinator.ready.remote(), timeout=120)
        handles += _open_limiters(simulator.base_url, models)
        node = ray._private.worker._global_node
        state = WarmState(
            # Ray names the node by its interface; its GCS answers on loopback too.
            address=f"127.0.0.1:{node.gcs_address.rsplit(':', 1)[1]}", pid=os.getpid(),
            started=started,
            sim_url=simulator.base_url, sim_pid=simulator.process.pid,
            ray_pids={kind: [info.process.pid for info in infos]
                      for kind, infos in node.all_processes.items() if infos},
            log=str(chainray_home() / "warm.log"))
        while True:
            write_warm(state.model_copy(update={"actors": _actors(coordinator),
                                                "updated": time.time()}))
            if stopping.wait(REFRESH_S):
                break
        print("chainray warm: stopping", flush=True)
        return 0
    finally:
        if ray.is_initialized():
            for handle in handles:
                ray.kill(handle, no_restart=True)
        if simulator is not None:
            simulator.stop()
        leave_ray()
        remove_warm(os.getpid())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m chainray.cli.warmd",
                                     description="the daemon of `chainray up`")
    parser.add_argument("--runners", type=int, default=2)
    parser.add_argument("--models", default="gpt-4o-mini")
    options = parser.parse_args()
    sys.exit(serve(options.runners, [m for m in options.models.split(",") if m.strip()]))
