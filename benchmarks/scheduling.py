"""Per-step scheduling overhead of a 2,000-step chain: Coordinator dispatch, the step task and
the RateLimiter's acquire/release round trips, with the simulator answering in about 1 ms.

    python benchmarks/scheduling.py [--steps 2000]
"""

from __future__ import annotations

import argparse
import time
import uuid

from _common import machine, start_ray
from concurrency import wide_chain

from chainray.api.config import SessionConfig
from chainray.api.session import Driver
from chainray.runner.jobs import RunJob
from chainray.sim import start_simulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    chain = wide_chain(args.steps - 1)
    start_ray()
    with start_simulator("--rpm", "10000000", "--tpm", "1000000000", "--speed", "1000") as sim:
        config = SessionConfig(base_url=sim.base_url, env={"OPENAI_API_KEY": "sim"},
                               rpm=10_000_000, tpm=1_000_000_000, max_concurrency=10_000,
                               progress=False)
        with Driver(config) as session:
            job = RunJob(run_id=uuid.uuid4().hex[:12], chain=chain, strategy="hybrid",
                         inputs={})
            started = time.perf_counter()
            result = session.run(job)
            wall = time.perf_counter() - started
        stats = sim.stats()
    assert result.status == "ok", result.error
    server_s = sum(r["end"] - r["start"] for r in stats["request_log"])
    print(f"{args.steps}-step chain ({args.steps - 1} llm steps + a python join): wall "
          f"{wall:.1f}s, {wall / args.steps * 1000:.2f} ms per step end to end "
          f"({result.api_calls} calls, server time {server_s:.1f}s summed over calls)")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
