"""Overhead: warm-cluster hybrid makespan / critical path of the server-side latencies.

Target <= 1.05. Also checks that the run's token counts equal the simulator's /stats.

    python benchmarks/overhead.py [--runs 5] [--speed 1] [--scenario quantum_research]
"""

from __future__ import annotations

import argparse
import statistics
import uuid

from _common import machine, start_ray

from chainray.api.config import SessionConfig
from chainray.api.session import Driver
from chainray.plan.schedule import longest_path, resolve
from chainray.runner.jobs import RunJob
from chainray.sim import start_simulator
from chainray.spec.chain import load_chain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--speed", type=float, default=1.0, help="simulator latency speed-up")
    parser.add_argument("--scenario", default="quantum_research")
    args = parser.parse_args()
    chain = load_chain(args.scenario)
    schedule = resolve(chain, "hybrid")
    start_ray()
    ratios = []
    with start_simulator("--speed", str(args.speed)) as sim:
        config = SessionConfig(base_url=sim.base_url, env={"OPENAI_API_KEY": "sim"},
                               progress=False)
        with Driver(config) as session:
            session.run(RunJob(run_id="warm-up", chain=chain, strategy="hybrid",
                               inputs=dict(chain.inputs)))
            for _ in range(args.runs):
                sim.reset()
                result = session.run(RunJob(run_id=uuid.uuid4().hex[:12], chain=chain,
                                            strategy="hybrid", inputs=dict(chain.inputs)))
                stats = sim.stats()
                server_ms = {r["tag"].rsplit(":", 1)[1]: (r["end"] - r["start"]) * 1000
                             for r in stats["request_log"] if r["status"] == 200}
                _, critical = longest_path({p.id: p.depends_on for p in schedule.steps},
                                           server_ms.__getitem__)
                ratio = result.latency_ms / critical
                ratios.append(ratio)
                tokens_match = result.total_tokens == stats["total_tokens"]
                print(f"run {result.run_id}: latency {result.latency_ms:.0f} ms, server "
                      f"critical path {critical:.0f} ms, ratio {ratio:.3f}, tokens "
                      f"{result.total_tokens} (server {stats['total_tokens']}, "
                      f"{'equal' if tokens_match else 'DIFFERENT'}), calls {result.api_calls}")
    print(f"overhead ratio (makespan / server critical path): median "
          f"{statistics.median(ratios):.3f}, max {max(ratios):.3f} over {len(ratios)} runs "
          f"(target <= 1.05)")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
