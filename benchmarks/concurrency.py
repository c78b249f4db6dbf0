"""Concurrency: 500 simulated calls in flight at once (5 s each), as llm steps on async step
runners, against one plain Ray task per call. Prints wall time and the peak memory of all Ray
processes (target <= 2 GiB for the 500).

    python benchmarks/concurrency.py [--calls 500] [--task-calls 50] [--latency 5]
"""

from __future__ import annotations

import argparse
import time
import uuid

import ray
from _common import PeakMemory, machine, start_ray

from chainray.api.config import SessionConfig
from chainray.api.session import Driver
from chainray.runner.jobs import RunJob
from chainray.sim import start_simulator
from chainray.spec.chain import chain_from_dict


def wide_chain(calls: int):
    steps = [{"id": f"s{i}", "prompt": f"call {i}"} for i in range(calls)]
    steps.append({"id": "gather", "kind": "python", "call": "chainray.builtin_steps:join",
                  "after": [f"s{i}" for i in range(calls)], "final": True})
    return chain_from_dict({"name": "wide", "defaults": {"max_tokens": 5}, "steps": steps})


@ray.remote(num_cpus=0)
def plain_task_call(base_url: str, i: int) -> int:
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="sim", max_retries=0, timeout=120)
    reply = client.chat.completions.create(model="gpt-4o-mini", max_tokens=5,
                                           messages=[{"role": "user", "content": f"call {i}"}])
    return reply.usage.total_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--task-calls", type=int, default=50,
                        help="calls for the plain-task variant (each holds a worker process)")
    parser.add_argument("--latency", type=float, default=5.0, help="seconds per call")
    args = parser.parse_args()
    start_ray()
    with start_simulator("--rpm", "1000000", "--tpm", "100000000") as sim:
        sim.configure(ttft_median_s=args.latency, ttft_sigma=0.0)
        config = SessionConfig(base_url=sim.base_url, env={"OPENAI_API_KEY": "sim"},
                               rpm=1_000_000, tpm=100_000_000, max_concurrency=args.calls * 2,
                               progress=False)
        with Driver(config) as session:
            job = RunJob(run_id=uuid.uuid4().hex[:12], chain=wide_chain(args.calls),
                         strategy="hybrid", inputs={})
            with PeakMemory() as memory:
                started = time.perf_counter()
                result = session.run(job)
                actor_wall = time.perf_counter() - started
            peak_in_flight = sim.stats(requests=False)["peak_in_flight"]
        assert result.status == "ok", result.error
        print(f"async step runners: {args.calls} calls of {args.latency:.0f}s, "
              f"{peak_in_flight} in flight at once, wall {actor_wall:.1f}s, peak memory of "
              f"all Ray processes RSS {memory.peak[0] / 1024:.2f} GiB / PSS "
              f"{memory.peak[1] / 1024:.2f} GiB (target <= 2 GiB)")
        sim.reset()
        with PeakMemory() as memory:
            started = time.perf_counter()
            ray.get([plain_task_call.remote(sim.base_url, i) for i in range(args.task_calls)])
            task_wall = time.perf_counter() - started
        peak_in_flight = sim.stats(requests=False)["peak_in_flight"]
        print(f"one plain task per call: {args.task_calls} calls of {args.latency:.0f}s, "
              f"{peak_in_flight} in flight at most, wall {task_wall:.1f}s, peak memory RSS "
              f"{memory.peak[0] / 1024:.2f} GiB / PSS {memory.peak[1] / 1024:.2f} GiB")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
