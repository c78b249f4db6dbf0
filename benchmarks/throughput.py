"""Throughput: >= 3,000 calls through a simulator that enforces RPM/TPM strictly (1-second
buckets), with the same limits given to chainray. Prints the achieved share of the limit over
the steady window (target >= 95 %) and the share of 429s (target <= 0.5 %).

    python benchmarks/throughput.py [--runs 520] [--rpm 1200] [--tpm 150000] [--share 0.98]
"""

from __future__ import annotations

import argparse
import time
import uuid

from _common import machine, start_ray

from chainray.api.session import Session, SessionConfig
from chainray.exec.jobs import RunJob
from chainray.sim import start_simulator
from chainray.spec.chain import load_chain


def steady_rate(starts: list[float], trim: float = 0.1) -> tuple[float, float, float]:
    """Requests/min between the first and last ``trim`` of the time span (ramps excluded)."""
    first, last = starts[0], starts[-1]
    low, high = first + trim * (last - first), last - trim * (last - first)
    inside = [s for s in starts if low <= s <= high]
    return len(inside) / ((high - low) / 60), low, high


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="headline_ensemble")
    parser.add_argument("--runs", type=int, default=520, help="chain runs (6 calls each)")
    parser.add_argument("--rpm", type=int, default=1200)
    parser.add_argument("--tpm", type=int, default=400_000)
    parser.add_argument("--share", type=float, default=0.98, help="chainray's target share")
    parser.add_argument("--speed", type=float, default=10.0, help="simulator latency speed-up")
    args = parser.parse_args()
    chain = load_chain(args.scenario)
    start_ray()
    with start_simulator("--rpm", str(args.rpm), "--tpm", str(args.tpm), "--speed",
                         str(args.speed)) as sim:
        sim.configure(burst_s=1.0)  # strict: a 1-second burst, as quantized enforcement
        config = SessionConfig(base_url=sim.base_url, env={"OPENAI_API_KEY": "sim"},
                               rpm=args.rpm, tpm=args.tpm, target_share=args.share,
                               max_concurrency=256, progress=False)
        with Session(config) as session:
            jobs = (RunJob(run_id=uuid.uuid4().hex[:12], chain=chain, strategy="parallel",
                           inputs=dict(chain.inputs)) for _ in range(args.runs))
            started = time.perf_counter()
            calls = failed = 0
            for result in session.run_many(jobs, window=128, total=args.runs):
                calls += result.api_calls
                failed += result.status != "ok"
            wall = time.perf_counter() - started
        stats = sim.stats()
    log = [r for r in stats["request_log"] if r["status"] == 200]
    starts = sorted(r["start"] for r in log)
    rpm, low, high = steady_rate(starts)
    steady = [r for r in log if low <= r["start"] <= high]
    tpm = sum(r["prompt_tokens"] + r["completion_tokens"] for r in steady) / ((high - low) / 60)
    rejected = stats["by_status"].get("429", 0)
    print(f"{args.runs} runs of {chain.name} ({failed} failed), {stats['requests']} requests "
          f"({calls} counted by chainray) in {wall:.1f}s")
    print(f"steady window {high - low:.1f}s: {rpm:.0f} requests/min = {rpm / args.rpm:.1%} of "
          f"the {args.rpm} RPM limit (target >= 95%); {tpm:.0f} tokens/min = "
          f"{tpm / args.tpm:.1%} of the {args.tpm} TPM limit")
    print(f"429s: {rejected} of {stats['requests']} = {rejected / stats['requests']:.2%} "
          "(target <= 0.5%)")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
