"""What `plan` costs as a chain grows: a fan-in chain of N steps (N-1 independent research
steps, then one synthesis after all of them), planned under every strategy. Each size runs in
its own process, so the peak memory is that size's alone; CPU seconds beside the wall clock tell
a busy machine's waiting from plan's own work.

    python benchmarks/plan_size.py [--sizes 500,1000,2000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def fan_in(n: int):
    from chainray.spec.chain import chain_from_dict

    steps = [{"id": f"s{i}", "prompt": f"Research {{topic}}: angle {i} of the question."}
             for i in range(n - 1)]
    steps.append({"id": "synthesis", "after": [s["id"] for s in steps], "final": True,
                  "prompt": "Synthesize the research reports on {topic} into one summary."})
    return chain_from_dict({"name": f"fan_in_{n}", "inputs": {"topic": "tea"},
                            "steps": steps})


def one(n: int) -> dict:
    import chainray

    chain = fan_in(n)
    started, cpu = time.perf_counter(), time.process_time()
    found = chainray.plan(chain)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"steps": n, "seconds": round(seconds, 2), "cpu_s": round(cpu, 2),
            "peak_mib": round(peak_mib),
            "strategy": found.strategy,
            "infeasible": {s: p.infeasible for s, p in found.predictions.items()
                           if p.infeasible}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500,1000,2000")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one)))
        return
    for n in (int(x) for x in args.sizes.split(",")):
        out = subprocess.run([sys.executable, __file__, "--one", str(n)], capture_output=True,
                             text=True, timeout=3600)
        if out.returncode:
            print(f"{n} steps: failed: {out.stderr.strip().splitlines()[-1:]}")
            continue
        row = json.loads(out.stdout)
        print(f"{row['steps']:>6} steps: plan {row['seconds']:6.2f} s ({row['cpu_s']:.2f} s of "
              f"CPU), peak {row['peak_mib']} "
              f"MiB, recommended {row['strategy']}; infeasible: "
              + ("; ".join(f"{k}: {v}" for k, v in row["infeasible"].items()) or "none"),
              flush=True)


if __name__ == "__main__":
    main()
