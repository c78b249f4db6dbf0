"""Throughput under a binding limit: a batch of headline_ensemble runs (6 calls each) through a
simulator that enforces its limits, and chainray given the same limits (or none, to learn
them). Prints the achieved share of the binding limit over the steady window (target >= 95 %;
>= 90 % when learning with no flags) and the share of 429s (target <= 0.5 %).

Cases (``--case``):
  rpm    --rpm given; the server's rpm binds (its tpm is huge)
  tpm    --tpm given; the server's tpm binds (its rpm is huge)
  learn  no flags: the server's rpm binds and its headers state it

``--enforce minute`` is a minute bucket (the server admits a minute's budget at once, so the
steady window can show more than 100 % while it drains); ``--enforce second`` enforces the
minute's limit per second (OpenAI's quantized limits).

    python benchmarks/throughput.py --case rpm --enforce second [--runs 300] [--rpm 900]
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

HUGE = 100_000_000


def steady_window(starts: list[float], trim: float = 0.1) -> tuple[float, float]:
    """The time span between the first and last ``trim`` of the run (ramps excluded)."""
    first, last = starts[0], starts[-1]
    return first + trim * (last - first), last - trim * (last - first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=("rpm", "tpm", "learn"), default="rpm")
    parser.add_argument("--enforce", choices=("minute", "second"), default="second")
    parser.add_argument("--scenario", default="headline_ensemble")
    parser.add_argument("--runs", type=int, default=300, help="chain runs (6 calls each)")
    parser.add_argument("--rpm", type=int, default=900)
    parser.add_argument("--tpm", type=int, default=60_000)
    parser.add_argument("--share", type=float, default=0.98, help="chainray's target share")
    parser.add_argument("--speed", type=float, default=10.0, help="simulator latency speed-up")
    args = parser.parse_args()
    chain = load_chain(args.scenario)
    server_rpm = HUGE if args.case == "tpm" else args.rpm
    server_tpm = args.tpm if args.case == "tpm" else HUGE
    flags = {"tpm": args.tpm} if args.case == "tpm" else {} if args.case == "learn" else \
        {"rpm": args.rpm}
    start_ray()
    with start_simulator("--rpm", str(server_rpm), "--tpm", str(server_tpm), "--speed",
                         str(args.speed)) as sim:
        sim.configure(enforce=args.enforce)
        config = SessionConfig(base_url=sim.base_url, env={"OPENAI_API_KEY": "sim"},
                               target_share=args.share, max_concurrency=256, progress=False,
                               limiter_namespace=f"tp-{uuid.uuid4().hex[:6]}", **flags)
        with Driver(config) as session:
            jobs = (RunJob(run_id=uuid.uuid4().hex[:12], chain=chain, strategy="parallel",
                           inputs=dict(chain.inputs)) for _ in range(args.runs))
            started = time.perf_counter()
            calls = failed = 0
            for result in session.run_many(jobs, window=128, total=args.runs):
                calls += result.api_calls
                failed += result.status != "ok"
            wall = time.perf_counter() - started
            [limiter] = session.limiter_stats()
        stats = sim.stats()
    log = [r for r in stats["request_log"] if r["status"] == 200]
    low, high = steady_window(sorted(r["start"] for r in log))
    steady = [r for r in log if low <= r["start"] <= high]
    minutes = (high - low) / 60
    rpm = len(steady) / minutes
    tpm = sum(r["prompt_tokens"] + r["completion_tokens"] for r in steady) / minutes
    achieved, limit, unit = (tpm, args.tpm, "TPM") if args.case == "tpm" else \
        (rpm, args.rpm, "RPM")
    rejected = stats["by_status"].get("429", 0)
    flag_text = " ".join(f"--{k} {v}" for k, v in flags.items()) or "no flags"
    print(f"case {args.case}, {args.enforce} enforcement, chainray with {flag_text} "
          f"(share {args.share}); limiter: {limiter['described']}")
    print(f"{args.runs} runs of {chain.name} ({failed} failed), {stats['requests']} requests "
          f"({calls} counted by chainray) in {wall:.1f}s")
    target = 0.90 if args.case == "learn" else 0.95
    print(f"steady window {high - low:.1f}s: {rpm:.0f} requests/min, {tpm:.0f} tokens/min = "
          f"{achieved / limit:.1%} of the {limit} {unit} limit (target >= {target:.0%})")
    print(f"429s: {rejected} of {stats['requests']} = {rejected / stats['requests']:.2%} "
          "(target <= 0.5%)")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
