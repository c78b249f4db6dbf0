"""How well `plan` predicts: (1) calibrate on one chain's measured steps, predict another chain
under all three strategies, compare with measured runs; (2) forecast a batch under a binding
rate limit, compare with the measured batch. The simulator runs a latency profile unlike its
default (faster decode, slower prefill, narrower time-to-first-token spread).

    python benchmarks/calibration.py [--speed 2] [--batch 40] [--rpm 600]
"""

from __future__ import annotations

import argparse
import time
import uuid

from _common import machine, start_ray

from chainray.api.config import SessionConfig
from chainray.api.session import Driver
from chainray.plan.cost import load_prices
from chainray.plan.forecast import forecast_batch
from chainray.plan.learn import fit_steps
from chainray.plan.predict import predict
from chainray.plan.schedule import STRATEGIES
from chainray.runner.jobs import RunJob
from chainray.sim import start_simulator
from chainray.spec.chain import chain_from_dict, load_chain


def job(chain, strategy: str = "hybrid") -> RunJob:
    return RunJob(run_id=uuid.uuid4().hex[:12], chain=chain, strategy=strategy,
                  inputs=dict(chain.inputs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed", type=float, default=2.0)
    parser.add_argument("--batch", type=int, default=40)
    parser.add_argument("--rpm", type=int, default=600)
    args = parser.parse_args()
    prices = load_prices()
    start_ray()
    with start_simulator("--speed", str(args.speed), "--rpm", "100000", "--tpm", "100000000",
                         "--seed", "11") as sim:
        sim.configure(ttft_median_s=0.3, ttft_sigma=0.3, tokens_per_s=150.0,
                      prefill_s_per_token=0.0002)
        config = SessionConfig(base_url=sim.base_url, env={"OPENAI_API_KEY": "sim"},
                               progress=False, rpm=100_000, tpm=100_000_000, timeout=60)
        seen, unseen = load_chain("code_review"), load_chain("quantum_research")
        with Driver(config) as session:
            calibration = [session.run(job(seen, s)) for s in STRATEGIES * 2]
            measured = {s: session.run(job(unseen, s)) for s in STRATEGIES}
        model = fit_steps([step for r in calibration for step in r.steps])
        print(f"profile: ttft median 0.3s sigma 0.3, 150 tok/s, prefill 0.2 ms/token, speed "
              f"{args.speed:g}; fitted on code_review: ttft {model.ttft_s:.3f}s, "
              f"{model.tokens_per_s:.0f} tok/s, prefill {model.prefill_s_per_token * 1000:.3f} "
              "ms/token")
        for strategy, result in measured.items():
            guess = predict(unseen, strategy, prices, model)
            real_s = result.latency_ms / 1000
            print(f"quantum_research {strategy:<10} makespan predicted {guess.makespan_s:6.2f}s "
                  f"measured {real_s:6.2f}s ({guess.makespan_s / real_s - 1:+.1%}); tokens "
                  f"predicted {guess.total_tokens} measured {result.total_tokens} "
                  f"({guess.total_tokens / result.total_tokens - 1:+.1%})")
        chain = chain_from_dict({"name": "fan", "inputs": {"topic": "tea"},
                                 "defaults": {"max_tokens": 40}, "steps": [
                                     {"id": f"s{i}", "prompt": f"angle {i} of {{topic}}"}
                                     for i in range(3)] + [
                                     {"id": "final", "after": ["s0", "s1", "s2"],
                                      "prompt": "combine {s0:.50} {s1:.50} {s2:.50}"}]})
        forecast = forecast_batch(chain, "hybrid", prices, runs=args.batch, rpm=args.rpm,
                                  tpm=100_000_000, max_concurrency=64, window=64, model=model)
        batch_config = SessionConfig(base_url=sim.base_url, env={"OPENAI_API_KEY": "sim"},
                                     progress=False, rpm=args.rpm, tpm=100_000_000,
                                     limiter_namespace=f"bench-{uuid.uuid4().hex[:8]}")
        with Driver(batch_config) as session:
            started = time.perf_counter()
            results = list(session.run_many([job(chain) for _ in range(args.batch)], window=64))
            elapsed = time.perf_counter() - started
        tokens = sum(r.total_tokens for r in results)
        print(f"batch of {args.batch} runs at --rpm {args.rpm}: forecast "
              f"{forecast.makespan_s:.1f}s (binding {forecast.binding}, rpm utilisation "
              f"{forecast.utilisation['rpm']:.0%}),"
              f" measured {elapsed:.1f}s ({forecast.makespan_s / elapsed - 1:+.1%}); tokens "
              f"forecast {forecast.total_tokens} measured {tokens} "
              f"({forecast.total_tokens / tokens - 1:+.1%}); 429s "
              f"{sum(r.rate_limited for r in results)}")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
