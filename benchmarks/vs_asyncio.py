"""chainray vs a hand-written plain-asyncio script of quantum_research's three strategies, on
the same in-repo OpenAI-compatible server that sends NO rate-limit headers, with no limit
flags. Every step takes ``--latency`` seconds on the server except one phase-1 step
(``--slow-step``, default commercial) that takes 3x as long.

The script is what a user would write: one ``openai.AsyncOpenAI`` client, ``asyncio.gather``
for the steps that may run together, no limiter. Its hybrid runs the seed's three phases
(hardware+software+commercial; security; academic) then the synthesis; chainray's hybrid
starts each step the moment its own inputs are done.

Targets: chainray hybrid <= 0.90x the script's phased hybrid; sequential and parallel
<= 1.05x the script's.

    python benchmarks/vs_asyncio.py [--latency 0.5] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

import openai
from _common import machine, start_ray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from chainray.api.config import SessionConfig  # noqa: E402
from chainray.api.session import Driver  # noqa: E402
from chainray.runner.jobs import RunJob  # noqa: E402
from chainray.spec.chain import load_chain  # noqa: E402
from tests.plain_server import PlainServer  # noqa: E402  (the in-repo plain server)

PHASES = [["hardware", "software", "commercial"], ["security"], ["academic"], ["synthesis"]]
ORDER = ["hardware", "software", "commercial", "security", "academic", "synthesis"]


async def script(strategy: str, base_url: str, topic: str) -> float:
    """The hand-written version: prompts carry the upstream text, as a user would do."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="none", max_retries=2)
    done: dict[str, str] = {}

    async def ask(step: str) -> None:
        context = " ".join(text[:300] for text in done.values())
        reply = await client.chat.completions.create(
            model="gpt-4o-mini", max_tokens=400, extra_headers={"x-chainray-step": step},
            messages=[{"role": "user", "content": f"Research {topic}: {step}. {context}"}])
        done[step] = reply.choices[0].message.content or ""

    started = time.perf_counter()
    if strategy == "sequential":
        for step in ORDER:
            await ask(step)
    elif strategy == "parallel":
        await asyncio.gather(*(ask(step) for step in ORDER[:-1]))
        await ask("synthesis")
    else:
        for phase in PHASES:
            await asyncio.gather(*(ask(step) for step in phase))
    wall = time.perf_counter() - started
    await client.close()
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.5, help="seconds a step takes")
    parser.add_argument("--slow-step", default="commercial")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    chain = load_chain("quantum_research")
    server = PlainServer(latency_s=args.latency,
                         step_latency_s={args.slow_step: 3 * args.latency})
    start_ray()
    with server.running() as base_url:
        config = SessionConfig(base_url=base_url, env={"OPENAI_API_KEY": "none"},
                               progress=False, limiter_namespace=f"vs-{uuid.uuid4().hex[:6]}")
        with Driver(config) as session:
            session.run(RunJob(run_id="warm-up", chain=chain, strategy="parallel",
                               inputs=dict(chain.inputs)))  # workers, pools, limiter
            [stats] = session.limiter_stats()
            print(f"limits (no flags): {stats['described']}")
            rows = []
            for strategy in ("sequential", "parallel", "hybrid"):
                ours, theirs = [], []
                for _ in range(args.repeat):
                    theirs.append(asyncio.run(script(strategy, base_url, chain.inputs["topic"])))
                    job = RunJob(run_id=uuid.uuid4().hex[:12], chain=chain, strategy=strategy,
                                 inputs=dict(chain.inputs))
                    started = time.perf_counter()
                    result = session.run(job)
                    ours.append(time.perf_counter() - started)
                    assert result.status == "ok", result.error
                rows.append((strategy, statistics.median(theirs), statistics.median(ours)))
    targets = {"sequential": 1.05, "parallel": 1.05, "hybrid": 0.90}
    print(f"step latency {args.latency} s, {args.slow_step} {3 * args.latency} s; median of "
          f"{args.repeat}; chainray timed by the driver's wall clock around session.run")
    print(f"{'strategy':<11} {'asyncio s':>9} {'chainray s':>10} {'ratio':>6}  target")
    for strategy, theirs, ours in rows:
        against = "phased hybrid" if strategy == "hybrid" else strategy
        print(f"{strategy:<11} {theirs:9.3f} {ours:10.3f} {ours / theirs:6.2f}  "
              f"<= {targets[strategy]:.2f}x the asyncio {against}")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
