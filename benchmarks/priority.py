"""Critical-path priority vs FIFO: a hybrid batch under a tight request limit.

With priority, the RateLimiter grants permits to the step with the longest remaining path to
its run's end first, so the runs' sequential tails overlap the queue instead of following it.
Prints both batch makespans and the reduction (target >= 15 %).

    python benchmarks/priority.py [--runs 8] [--rpm 120] [--speed 1]
"""

from __future__ import annotations

import argparse
import time
import uuid

from _common import machine, start_ray

from chainray.api.config import SessionConfig
from chainray.api.session import Driver
from chainray.runner.jobs import RunJob
from chainray.sim import start_simulator
from chainray.spec.chain import load_chain


def batch_makespan(sim, chain, runs: int, rpm: int, priority: bool) -> float:
    sim.reset()
    config = SessionConfig(base_url=sim.base_url, env={"OPENAI_API_KEY": "sim"}, rpm=rpm,
                           tpm=10_000_000, priority=priority, progress=False,
                           limiter_namespace=f"prio-{uuid.uuid4().hex[:6]}")
    with Driver(config) as session:
        jobs = [RunJob(run_id=uuid.uuid4().hex[:12], chain=chain, strategy="hybrid",
                       inputs={"topic": f"topic {i}"}, priority=priority) for i in range(runs)]
        started = time.perf_counter()
        failed = sum(r.status != "ok" for r in session.run_many(jobs, window=runs))
        assert failed == 0, f"{failed} runs failed"
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--rpm", type=int, default=120)
    parser.add_argument("--speed", type=float, default=1.0)
    args = parser.parse_args()
    chain = load_chain("quantum_research")
    start_ray()
    with start_simulator("--speed", str(args.speed), "--rpm", "100000",
                         "--tpm", "10000000") as sim:
        fifo = batch_makespan(sim, chain, args.runs, args.rpm, priority=False)
        prio = batch_makespan(sim, chain, args.runs, args.rpm, priority=True)
    print(f"{args.runs} hybrid runs of {chain.name} ({args.runs * 6} calls) at {args.rpm} RPM, "
          f"simulator {args.speed}x: FIFO {fifo:.1f}s, critical-path priority {prio:.1f}s")
    print(f"makespan reduction: {1 - prio / fifo:.1%} (target >= 15%); ratio {prio / fifo:.3f}")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
