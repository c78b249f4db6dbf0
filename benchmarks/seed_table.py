"""The seed's table next to ours: `chainray bench quantum_research` on the embedded simulator
with its default knobs, medians of --repeat runs per strategy, and the ratios the seed's story
rests on (parallel/sequential latency and tokens, the order of strategies, the longest output).

    python benchmarks/seed_table.py [--repeat 3] [--speed 1] [--seed 0]

--speed makes the simulator's latency N times faster: tokens do not change, latency ratios
barely do (fixed per-step overheads weigh more at high speed). --seed is the simulator's seed:
it changes the text and so every step's length; tokens are fixed per seed, latency varies
per repeat. The margin lines say how far each ordering is from flipping (worst case over the
repeats).
"""

from __future__ import annotations

import argparse
import statistics
import uuid

from _common import machine, start_ray

from chainray.api.config import SessionConfig
from chainray.api.session import Driver
from chainray.report.bench import summarize_bench
from chainray.runner.jobs import RunJob
from chainray.spec.chain import load_chain

# The seed's published figures: tokens per strategy, and the latency ratio it reports.
SEED_TOKENS = {"sequential": 8400, "parallel": 9200}
SEED_LATENCY_RATIO = 0.29  # parallel / sequential
STRATEGIES = ("sequential", "parallel", "hybrid")


def _check(name: str, ours: float, seed: float) -> str:
    off = ours / seed - 1
    return f"{name:<34} ours {ours:6.3f}  seed {seed:6.3f}  {off:+6.1%}  " + (
        "within 15 %" if abs(off) <= 0.15 else "OUTSIDE 15 %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    chain = load_chain("quantum_research")
    start_ray()
    results = []
    with Driver(SessionConfig(progress=False, sim_speed=args.speed,
                                sim_flags=("--seed", str(args.seed)))) as session:
        for _ in range(args.repeat):
            for strategy in STRATEGIES:
                results.append(session.run(RunJob(run_id=uuid.uuid4().hex[:12], chain=chain,
                                                  strategy=strategy,
                                                  inputs=dict(chain.inputs))))
    assert all(r.status == "ok" for r in results), [r.error for r in results]
    rows = {row.strategy: row for row in summarize_bench(results)}
    print(f"quantum_research on the embedded simulator, default knobs, medians of "
          f"{args.repeat} runs, speed {args.speed:g}, seed {args.seed}")
    print(f"{'strategy':<11} {'latency':>9} {'(min-max)':>15} {'tokens':>7} {'seed':>6} "
          f"{'output':>7} {'redundancy':>10}")
    for strategy in STRATEGIES:
        row = rows[strategy]
        seed = SEED_TOKENS.get(strategy)
        print(f"{strategy:<11} {row.latency_ms / 1000:8.2f}s "
              f"({row.latency_min_ms / 1000:5.2f}-{row.latency_max_ms / 1000:5.2f}s) "
              f"{row.total_tokens:7.0f} {seed if seed else '-':>6} "
              f"{row.output_length:6.0f}c {row.redundancy:9.0%}")
    seq, par, hyb = (rows[s] for s in STRATEGIES)
    print(_check("latency parallel/sequential", par.latency_ms / seq.latency_ms,
                 SEED_LATENCY_RATIO))
    print(_check("tokens parallel/sequential", par.total_tokens / seq.total_tokens,
                 SEED_TOKENS["parallel"] / SEED_TOKENS["sequential"]))
    ok = par.latency_ms < hyb.latency_ms < seq.latency_ms
    print(f"latency order parallel < hybrid < sequential: {'yes' if ok else 'NO'}")
    ok = seq.total_tokens < hyb.total_tokens < par.total_tokens
    print(f"tokens order sequential < hybrid < parallel:  {'yes' if ok else 'NO'}")
    longest = max(rows.values(), key=lambda r: r.output_length).strategy
    print(f"longest output: {longest} (seed: hybrid)")
    print("margins (worst case over the repeats; > 0 keeps the order):")
    print(f"  latency hybrid over parallel      "
          f"{hyb.latency_min_ms / par.latency_max_ms - 1:+6.1%}")
    print(f"  latency sequential over hybrid    "
          f"{seq.latency_min_ms / hyb.latency_max_ms - 1:+6.1%}")
    print(f"  tokens hybrid over sequential     "
          f"{hyb.total_tokens_min / seq.total_tokens_max - 1:+6.1%}")
    print(f"  tokens parallel over hybrid       "
          f"{par.total_tokens_min / hyb.total_tokens_max - 1:+6.1%}")
    runner_up = max(seq.output_length_max, par.output_length_max)
    print(f"  output hybrid over the next       {hyb.output_length_min / runner_up - 1:+6.1%}")
    per_run = statistics.median(r.latency_ms for r in results if r.strategy == "sequential")
    print(f"absolute tokens: sequential {seq.total_tokens:.0f} (seed 8400), parallel "
          f"{par.total_tokens:.0f} (seed 9200); sequential median run {per_run / 1000:.1f}s")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
