"""Run every bundled scenario under every strategy in one session and write a summary.

    python scenarios/run_all.py [--out summary.md] [--sim-speed 1] [--address RAY_ADDRESS]

Uses the embedded simulator unless OPENAI_BASE_URL or OPENAI_API_KEY is set, exactly as
``chainray run`` does. Exit status 1 when any run failed. Written on the public API only
(``import chainray``), as a user's own script would be.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import chainray

STRATEGIES = ("sequential", "parallel", "hybrid")
HEADER = ["| scenario | strategy | status | latency s | critical path s | tokens | calls "
          "| retries | cost $ | output chars |", "|" + "---|" * 10]


def row(result: chainray.RunResult) -> str:
    return (f"| {result.scenario} | {result.strategy} | {result.status} | "
            f"{result.latency_ms / 1000:.2f} | {result.critical_path_ms / 1000:.2f} | "
            f"{result.total_tokens} | {result.api_calls} | {result.retries} | "
            f"{result.estimated_cost:.5f} | {result.output_length} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="scenario_summary.md", help="markdown summary file")
    parser.add_argument("--sim-speed", type=float, default=1.0)
    parser.add_argument("--address", help="Ray cluster to join")
    args = parser.parse_args()
    rows, failed = list(HEADER), 0
    with chainray.Session(address=args.address, sim_speed=args.sim_speed) as session:
        for name in chainray.bundled_scenarios():
            chain = chainray.load_chain(name)
            for strategy in STRATEGIES:
                result = session.run(chain, strategy)
                failed += result.status != "ok"
                rows.append(row(result))
                print(rows[-1], flush=True)
    Path(args.out).write_text("\n".join(rows) + "\n", encoding="utf-8")
    print(f"summary written to {args.out}; {failed} run(s) failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
