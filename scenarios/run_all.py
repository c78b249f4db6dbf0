"""Run every bundled scenario under every strategy on one Ray session and write a summary.

    python scenarios/run_all.py [--out summary.md] [--sim-speed 1] [--address RAY_ADDRESS]

Uses the embedded simulator unless OPENAI_BASE_URL or OPENAI_API_KEY is set, exactly as
``chainray run`` does. Exit status 1 when any run failed.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

from chainray.api.session import Session, SessionConfig
from chainray.exec.jobs import RunJob
from chainray.plan.schedule import STRATEGIES
from chainray.spec.chain import SCENARIO_DIR, load_chain


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="scenario_summary.md", help="markdown summary file")
    parser.add_argument("--sim-speed", type=float, default=1.0)
    parser.add_argument("--address", help="Ray cluster to join")
    args = parser.parse_args()
    rows = ["| scenario | strategy | status | latency s | critical path s | tokens | calls "
            "| retries | cost $ | output chars |", "|" + "---|" * 10]
    failed = 0
    config = SessionConfig(address=args.address, sim_speed=args.sim_speed, dashboard=False)
    with Session(config) as session:
        for path in sorted(SCENARIO_DIR.glob("*.yaml")):
            chain = load_chain(str(path))
            for strategy in STRATEGIES:
                result = session.run(RunJob(run_id=uuid.uuid4().hex[:12], chain=chain,
                                            strategy=strategy, inputs=dict(chain.inputs)))
                failed += result.status != "ok"
                row = (f"| {chain.name} | {strategy} | {result.status} | "
                       f"{result.latency_ms / 1000:.2f} | {result.critical_path_ms / 1000:.2f} "
                       f"| {result.total_tokens} | {result.api_calls} | {result.retries} | "
                       f"{result.estimated_cost:.5f} | {result.output_length} |")
                rows.append(row)
                print(row, flush=True)
    Path(args.out).write_text("\n".join(rows) + "\n", encoding="utf-8")
    print(f"summary written to {args.out}; {failed} run(s) failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
