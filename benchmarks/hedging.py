"""Hedged stragglers: a batch against the simulator with 5 % of requests 4x slow, run without
and with ``hedge_after``. Prints the p95 run latency of each (target: >= 30 % lower with
hedging) and the tokens the server counted (target: <= 6 % more with hedging).

    python benchmarks/hedging.py [--runs 120] [--quantile 0.95] [--window 8]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

from _common import machine, start_ray

from chainray.api.session import Session, SessionConfig
from chainray.exec.jobs import RunJob
from chainray.sim import start_simulator
from chainray.spec.chain import load_chain


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def batch(args: argparse.Namespace, hedge: float | None) -> tuple[list[float], dict, int]:
    chain = load_chain(args.scenario)
    with start_simulator("--rpm", "100000", "--tpm", "10000000", "--speed", str(args.speed),
                         "--seed", "11") as sim:
        sim.configure(faults={"slow": args.slow, "slow_factor": args.factor})
        config = SessionConfig(base_url=sim.base_url, env={"OPENAI_API_KEY": "sim"},
                               rpm=100_000, tpm=10_000_000, max_concurrency=256,
                               progress=False, hedge_after=hedge)
        with Session(config) as session:
            jobs = [RunJob(run_id=uuid.uuid4().hex[:12], chain=chain, strategy="hybrid",
                           inputs=dict(chain.inputs)) for _ in range(args.runs)]
            results = list(session.run_many(jobs, window=args.window, total=args.runs))
        stats = sim.stats(requests=False)
    hedged = sum(s.hedged for r in results for s in r.steps)
    assert all(r.status == "ok" for r in results), "every run should succeed"
    return [r.latency_ms for r in results], stats, hedged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="quantum_research")
    parser.add_argument("--runs", type=int, default=120)
    parser.add_argument("--window", type=int, default=8, help="runs in flight at once")
    parser.add_argument("--quantile", type=float, default=0.95, help="--hedge-after Q")
    parser.add_argument("--slow", type=float, default=0.05, help="share of slow requests")
    parser.add_argument("--factor", type=float, default=4.0, help="how much slower")
    parser.add_argument("--speed", type=float, default=5.0, help="simulator latency speed-up")
    args = parser.parse_args()
    start_ray()
    started = time.perf_counter()
    plain, plain_stats, _ = batch(args, None)
    hedged, hedged_stats, count = batch(args, args.quantile)
    drop = 1 - p95(hedged) / p95(plain)
    extra = hedged_stats["total_tokens"] / plain_stats["total_tokens"] - 1
    took = time.perf_counter() - started
    print(f"{args.runs} runs of {args.scenario} (hybrid, window {args.window}); "
          f"{args.slow:.0%} of requests {args.factor:g}x slow; {took:.0f}s")
    print(f"p95 run latency: {p95(plain):.0f} ms without hedging, {p95(hedged):.0f} ms with "
          f"--hedge-after {args.quantile:g}: {drop:.0%} lower (target >= 30%): "
          f"{'PASS' if drop >= 0.30 else 'FAIL'}")
    print(f"tokens the server counted: {plain_stats['total_tokens']} vs "
          f"{hedged_stats['total_tokens']} = {extra:+.1%} (target <= 6%): "
          f"{'PASS' if extra <= 0.06 else 'FAIL'}; requests {plain_stats['requests']} vs "
          f"{hedged_stats['requests']}; {count} steps hedged")
    print(f"median run latency: {statistics.median(plain):.0f} vs "
          f"{statistics.median(hedged):.0f} ms")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
