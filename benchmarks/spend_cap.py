"""Spend cap: a 30-run batch whose cost is about 10x the cap, under ``max_cost``. Prints the
real spend, priced from the simulator's own token counts at the price table (target: <= the
cap and >= 50 % of it), how many calls were refused and how many runs never started.

    python benchmarks/spend_cap.py [--runs 30] [--ratio 10] [--window 8]
"""

from __future__ import annotations

import argparse
import time
import uuid

from _common import machine, start_ray

from chainray.api.config import SessionConfig
from chainray.api.session import Driver
from chainray.plan.cost import load_prices
from chainray.plan.predict import predict
from chainray.runner.jobs import RunJob
from chainray.sim import start_simulator
from chainray.spec.chain import load_chain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="quantum_research")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--window", type=int, default=8, help="runs in flight at once")
    parser.add_argument("--ratio", type=float, default=10.0, help="batch cost / cap")
    parser.add_argument("--speed", type=float, default=10.0, help="simulator latency speed-up")
    args = parser.parse_args()
    chain, prices = load_chain(args.scenario), load_prices()
    forecast = predict(chain, "hybrid", prices).cost * args.runs
    cap = forecast / args.ratio
    start_ray()
    with start_simulator("--rpm", "100000", "--tpm", "10000000", "--speed",
                         str(args.speed)) as sim:
        config = SessionConfig(base_url=sim.base_url, env={"OPENAI_API_KEY": "sim"},
                               rpm=100_000, tpm=10_000_000, max_concurrency=256,
                               progress=False, max_cost=cap)
        with Driver(config) as session:
            jobs = [RunJob(run_id=uuid.uuid4().hex[:12], chain=chain, strategy="hybrid",
                           inputs=dict(chain.inputs)) for _ in range(args.runs)]
            started = time.perf_counter()
            results = list(session.run_many(jobs, window=args.window, total=args.runs))
            wall = time.perf_counter() - started
            state = session.spend_state() or {}
            not_started = len(session.not_started)
        log = [r for r in sim.stats()["request_log"] if r["status"] == 200]
    real = sum(prices.cost(r["model"], r["prompt_tokens"], r["completion_tokens"],
                           r["cached_tokens"]) for r in log)
    uncapped = sum(r.estimated_cost for r in results)
    ok = sum(r.status == "ok" for r in results)
    print(f"{args.runs} runs of {chain.name} (hybrid), forecast ${forecast:.5f}; cap "
          f"${cap:.5f} (1/{args.ratio:g} of the forecast); {wall:.1f}s")
    print(f"real spend from the server's token counts: ${real:.5f} = {real / cap:.1%} of the "
          f"cap (target <= 100% and >= 50%): {'PASS' if 0.5 * cap <= real <= cap else 'FAIL'}")
    print(f"chainray's own count ${uncapped:.5f}, the spend actor's "
          f"${state.get('spent_usd', 0):.5f}"
          f"; {len(log)} requests; {state.get('refused', 0)} calls refused; runs: {ok} ok, "
          f"{len(results) - ok} stopped part way, {not_started} never started")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
