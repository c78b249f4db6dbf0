"""The RateLimiter under load: permits/s and p99 grant latency with 10,000 callers waiting at
once, then a 64-run x 21-step fan-out batch under a binding rpm (it must complete; the old
limiter stalled once about 1,000 acquires waited).

    python benchmarks/limiter.py [--waiters 10000] [--callers 4] [--runs 64] [--rpm 1500]

Grant latency is the time from the limiter granting a permit to the caller holding it (the
actor round trip under load), measured on one host's wall clock.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import ray
from _common import machine, start_ray

from chainray.actors.rate_limiter import RateLimiter, RemoteLimiter
from chainray.api.config import SessionConfig
from chainray.api.session import Driver
from chainray.limit.permit_book import Limits
from chainray.runner.jobs import RunJob
from chainray.sim import start_simulator
from chainray.spec.chain import chain_from_dict


@ray.remote(num_cpus=0, max_concurrency=2)
class Caller:
    """Starts ``n`` concurrent acquire -> release cycles against the limiter."""

    async def run(self, handle, n: int) -> list[float]:
        limiter = RemoteLimiter(handle)  # what step runners use

        async def one() -> float:
            permit = await limiter.acquire(100, 0.0, 600.0)
            delivered = time.time() - permit.granted_at
            await limiter.release(permit.id, 50, None)
            return delivered

        return list(await asyncio.gather(*(one() for _ in range(n))))


def waiters_case(waiters: int, callers: int, concurrency: int) -> None:
    name = f"bench-limiter-{uuid.uuid4().hex[:6]}"
    limiter = RateLimiter.options(name=name).remote(name, Limits(max_concurrency=concurrency))
    ray.get(limiter.stats.remote())
    pool = [Caller.remote() for _ in range(callers)]
    ray.get([c.run.remote(limiter, 1) for c in pool])  # warm up the callers
    started = time.perf_counter()
    latencies = sorted(x for part in ray.get([c.run.remote(limiter, waiters // callers)
                                              for c in pool]) for x in part)
    wall = time.perf_counter() - started
    p50, p99 = statistics.median(latencies), latencies[int(0.99 * (len(latencies) - 1))]
    print(f"{len(latencies)} waiters from {callers} caller actors, concurrency cap "
          f"{concurrency}: {len(latencies) / wall:.0f} permits/s (acquire + release each); "
          f"grant delivery p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms; {wall:.1f} s")
    time.sleep(0.5)  # let the last batched releases land before the limiter goes
    ray.kill(limiter)


def fanout_case(runs: int, width: int, rpm: int, speed: float) -> None:
    steps = [{"id": f"s{i}", "prompt": f"angle {i} of {{topic}}"} for i in range(width)]
    steps.append({"id": "final", "after": [f"s{i}" for i in range(width)],
                  "prompt": "combine " + " ".join(f"{{s{i}:.40}}" for i in range(width))})
    chain = chain_from_dict({"name": "fanout", "inputs": {"topic": "tea"},
                             "defaults": {"max_tokens": 30}, "steps": steps})
    with start_simulator("--rpm", str(rpm), "--tpm", "10000000", "--speed", str(speed)) as sim:
        sim.configure(enforce="second")  # binding from the start: no minute of burst
        config = SessionConfig(base_url=sim.base_url, env={"OPENAI_API_KEY": "sim"}, rpm=rpm,
                               max_concurrency=256, progress=False, runners=2,
                               limiter_namespace=f"bench-{uuid.uuid4().hex[:6]}")
        with Driver(config) as session:
            jobs = [RunJob(run_id=uuid.uuid4().hex[:12], chain=chain, strategy="parallel",
                           inputs=dict(chain.inputs)) for _ in range(runs)]
            started = time.perf_counter()
            results = list(session.run_many(jobs, window=runs, total=runs))
            wall = time.perf_counter() - started
        stats = sim.stats(requests=False)
    calls = sum(r.api_calls for r in results)
    ok = sum(r.status == "ok" for r in results)
    print(f"{runs} runs x {width + 1} steps under --rpm {rpm}: {ok}/{runs} runs ok, {calls} "
          f"calls in {wall:.1f} s = {calls / wall * 60:.0f} requests/min "
          f"({calls / wall * 60 / rpm:.0%} of the limit, per-second enforcement, ramp "
          "included); "
          f"429s: {stats['by_status'].get('429', 0)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waiters", type=int, default=10_000)
    parser.add_argument("--callers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=64, help="the limiter's cap")
    parser.add_argument("--runs", type=int, default=64)
    parser.add_argument("--width", type=int, default=20, help="parallel steps per run")
    parser.add_argument("--rpm", type=int, default=1500)
    parser.add_argument("--speed", type=float, default=10.0)
    parser.add_argument("--skip-fanout", action="store_true")
    args = parser.parse_args()
    start_ray()
    waiters_case(args.waiters, args.callers, args.concurrency)
    if not args.skip_fanout:
        fanout_case(args.runs, args.width, args.rpm, args.speed)
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
