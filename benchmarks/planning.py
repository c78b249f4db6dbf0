"""How well `plan` predicts from what it learned, against a server that is not the simulator.

For each server profile (tests/profile_server.py: ttft, tokens/s, replies whose length ignores
max_tokens, optionally N slots sharing their throughput beyond), with a fresh profile store:

1. bench chain A (every strategy once, after one warm-up run of it): the runs are learned
   into the endpoint's profile;
2. plan chain B (never run there) and run B under every strategy: predicted vs measured;
3. plan B again (its own runs are now in the profile) and run B again: predicted vs
   measured.

    python benchmarks/planning.py [--chain-a quantum_research]
                                  [--chain-b benchmarks/chains/diamonds.yaml] [--only NAME]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from _common import machine, start_ray

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import chainray  # noqa: E402
from chainray.plan.schedule import STRATEGIES  # noqa: E402
from tests.profile_server import ProfileServer  # noqa: E402

PROFILES = {
    # the measured case of issue 23: about 300 tokens whatever max_tokens says, 150 tokens/s
    "steady-300": dict(ttft_s=0.3, tokens_per_s=150.0, reply_tokens=280, reply_spread=40),
    "slow-short": dict(ttft_s=0.8, tokens_per_s=60.0, reply_tokens=110, reply_spread=20,
                       prefill_s_per_token=0.0004),
    "3-slot": dict(ttft_s=0.2, tokens_per_s=120.0, reply_tokens=200, reply_spread=30, slots=3),
}


def _session(base_url: str, learn: bool) -> chainray.Session:
    return chainray.Session(base_url=base_url, api_key="none", learn=learn, progress=False,
                            timeout=120)


def _compare(label: str, name: str, predicted, measured) -> list[tuple[float, float]]:
    errors = []
    for strategy in STRATEGIES:
        guess, real = predicted.predictions[strategy], measured[strategy]
        real_s = real.latency_ms / 1000
        dt, dn = guess.makespan_s / real_s - 1, guess.total_tokens / real.total_tokens - 1
        errors.append((dt, dn))
        print(f"{name:<11} {label:<18} {strategy:<10} makespan {guess.makespan_s:6.1f}s "
              f"(range {guess.makespan_range[0]:.1f}-{guess.makespan_range[1]:.1f}) measured "
              f"{real_s:6.1f}s {dt:+6.1%}   tokens {guess.total_tokens:6d} measured "
              f"{real.total_tokens:6d} {dn:+6.1%}", flush=True)
    return errors


def bench_profile(name: str, settings: dict, chain_a, chain_b) -> None:
    os.environ["CHAINRAY_HOME"] = tempfile.mkdtemp(prefix=f"chainray-planning-{name}-")
    server = ProfileServer(**settings)
    with server.running() as base_url, _session(base_url, learn=True) as session:
        session.run(chain_a, "parallel")  # warms the session's workers up (learned too)
        session.bench(chain_a)
        before = chainray.plan(chain_b, base_url=base_url, strict=True)
        print(f"{name}: {before.latency_model.source}; slots {before.latency_model.slots}",
              flush=True)
        # each prediction is made before the runs it is compared with are learned
        first = {s: session.run(chain_b, s) for s in STRATEGIES}
        _compare(f"after bench of {chain_a.name}"[:18], name, before, first)
        after = chainray.plan(chain_b, base_url=base_url, strict=True)
        second = {s: session.run(chain_b, s) for s in STRATEGIES}
        _compare(f"after a run of {chain_b.name}"[:18], name, after, second)
        for reason in after.reasons[2:]:
            print(f"{name:<11} advice: {reason}")
        print(f"{name:<11} server counted {server.counts()['requests']} requests", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chain-a", default="quantum_research")
    parser.add_argument("--chain-b", default=str(Path(__file__).parent / "chains" /
                                                 "diamonds.yaml"))
    parser.add_argument("--only", choices=sorted(PROFILES))
    args = parser.parse_args()
    chain_a, chain_b = (chainray.load_chain(args.chain_a), chainray.load_chain(args.chain_b))
    print(machine(), flush=True)
    start_ray()
    for name, settings in PROFILES.items():
        if args.only in (None, name):
            bench_profile(name, settings, chain_a, chain_b)


if __name__ == "__main__":
    main()
