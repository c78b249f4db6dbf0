"""Hedged stragglers: a batch against the simulator with 5 % of requests 4x slow, run without
and with ``hedge_after``. Prints the p95 run latency of each (target: >= 30 % lower with
hedging) and the extra tokens hedging costs (target: <= 6 %), per repeat and as medians.

    python benchmarks/hedging.py [--runs 100] [--window 16] [--speed 2] [--repeats 3]

Each arm is one session (one invocation): ``--warmup`` runs first (same faults; they fill the
session's view of finished requests and warm Ray's workers, and are left out of every figure),
then ``--runs`` measured runs. The arms alternate which goes first, with the same simulator
seed per repeat. Extra tokens are counted as chainray counts and prices them (a cancelled
stream is charged its prompt and the output it delivered, a cancelled request not streamed as
much as its winner); the server's own counts are printed beside them: of the requests it
answered, and of every request it started (a request the client left counts its prompt and
what was sent before it left).

``--quantile`` (0.9) is the ``--hedge-after`` it runs with. Measured on a quiet machine with
the defaults: p95 44/42/44 % lower for +2.1/+5.3/+3.4 % tokens (21-29 steps hedged of 600).
At 0.95 (1 repeat) 2 % lower for +1.5 %: with 5 % of requests slow, the 0.95-quantile of pace
lies among the slow ones, so a slow decoder is not slower than the quantile; a straggler is
caught only by a quantile below its share. Most of the extra tokens are the synthesis step's
~6,000-token prompt paid a second time; a late first token alone (which about one normal
request in twenty has past the 0.95-quantile) no longer sends a duplicate, which cost +7 %.
p95 of 100 runs is the fifth-worst run, so repeats spread.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from dataclasses import dataclass

from _common import machine, start_ray

from chainray.api.config import SessionConfig
from chainray.api.session import Driver
from chainray.runner.jobs import RunJob
from chainray.sim import start_simulator
from chainray.spec.chain import load_chain


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


@dataclass
class Arm:
    latencies: list[float]
    tokens: int  # as chainray counted them (duplicates included)
    answered_tokens: int  # the server's count of requests it answered
    started_tokens: int  # the server's count of every request it started (cancelled too)
    requests: int
    hedged: int


def server_log(sim, attempts: int = 3) -> list[dict]:
    """The simulator's request log (asked again if a loaded machine delays the answer)."""
    for attempt in range(attempts):
        try:
            return sim.stats()["request_log"]
        except OSError:
            if attempt == attempts - 1:
                raise
            time.sleep(5)
    return []


def jobs(chain, count: int) -> list[RunJob]:
    return [RunJob(run_id=uuid.uuid4().hex[:12], chain=chain, strategy="hybrid",
                   inputs=dict(chain.inputs)) for _ in range(count)]


def batch(args: argparse.Namespace, hedge: float | None, seed: int) -> Arm:
    chain = load_chain(args.scenario)
    with start_simulator("--rpm", "100000", "--tpm", "10000000", "--speed", str(args.speed),
                         "--seed", str(seed)) as sim:
        sim.configure(faults={"slow": args.slow, "slow_factor": args.factor})
        config = SessionConfig(base_url=sim.base_url, env={"OPENAI_API_KEY": "sim"},
                               rpm=100_000, tpm=10_000_000, max_concurrency=512,
                               progress=False, hedge_after=hedge)
        with Driver(config) as session:
            if args.warmup:
                list(session.run_many(jobs(chain, args.warmup), window=args.window,
                                      total=args.warmup))
            before = len(server_log(sim))
            results = list(session.run_many(jobs(chain, args.runs), window=args.window,
                                            total=args.runs))
        log = server_log(sim)[before:]
    assert all(r.status == "ok" for r in results), "every run should succeed"
    return Arm(latencies=[r.latency_ms for r in results],
               tokens=sum(r.total_tokens for r in results),
               answered_tokens=sum(r["prompt_tokens"] + r["completion_tokens"]
                                   for r in log if r["status"] == 200),
               started_tokens=sum(r["prompt_tokens"] + r["completion_tokens"] for r in log),
               requests=len(log), hedged=sum(s.hedged for r in results for s in r.steps))


def repeat(args: argparse.Namespace, index: int) -> tuple[float, float]:
    seed = 11 + index
    if index % 2:  # alternate which arm goes first
        hedged = batch(args, args.quantile, seed)
        plain = batch(args, None, seed)
    else:
        plain = batch(args, None, seed)
        hedged = batch(args, args.quantile, seed)
    drop = 1 - p95(hedged.latencies) / p95(plain.latencies)
    extra = hedged.tokens / plain.tokens - 1
    print(f"repeat {index + 1}: p95 {p95(plain.latencies):.0f} -> {p95(hedged.latencies):.0f} "
          f"ms ({drop:.0%} lower); median {statistics.median(plain.latencies):.0f} -> "
          f"{statistics.median(hedged.latencies):.0f} ms; tokens {plain.tokens} -> "
          f"{hedged.tokens} ({extra:+.1%}); server answered {plain.answered_tokens} -> "
          f"{hedged.answered_tokens}, started {plain.started_tokens} -> "
          f"{hedged.started_tokens} ({hedged.started_tokens / plain.started_tokens - 1:+.1%});"
          f" requests {plain.requests} -> {hedged.requests}; {hedged.hedged} steps hedged; "
          f"load average {os.getloadavg()[1]:.1f} (5 min)", flush=True)
    return drop, extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="quantum_research")
    parser.add_argument("--runs", type=int, default=100, help="measured runs per arm")
    parser.add_argument("--warmup", type=int, default=16, help="runs before measuring")
    parser.add_argument("--window", type=int, default=16, help="runs in flight at once")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quantile", type=float, default=0.9, help="--hedge-after Q")
    parser.add_argument("--slow", type=float, default=0.05, help="share of slow requests")
    parser.add_argument("--factor", type=float, default=4.0, help="how much slower")
    parser.add_argument("--speed", type=float, default=2.0, help="simulator latency speed-up")
    args = parser.parse_args()
    start_ray()
    started = time.perf_counter()
    print(f"{args.runs} runs of {args.scenario} (hybrid, window {args.window}, warm-up "
          f"{args.warmup}, speed {args.speed:g}); {args.slow:.0%} of requests "
          f"{args.factor:g}x slow; --hedge-after {args.quantile:g}", flush=True)
    figures = [repeat(args, i) for i in range(args.repeats)]
    drop = statistics.median(d for d, _ in figures)
    extra = statistics.median(e for _, e in figures)
    print(f"median of {args.repeats} repeats: p95 run latency {drop:.0%} lower (target >= "
          f"30%): {'PASS' if drop >= 0.30 else 'FAIL'}; tokens {extra:+.1%} (target <= 6%): "
          f"{'PASS' if extra <= 0.06 else 'FAIL'}; {time.perf_counter() - started:.0f}s")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
