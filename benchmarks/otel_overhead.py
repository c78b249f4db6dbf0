"""Tracing's cost: the same warm hybrid runs untraced and traced (OTLP/HTTP to a loopback
receiver that only counts), median latency of each, and what the collector received.

    python benchmarks/otel_overhead.py [--runs 5] [--speed 1] [--scenario quantum_research]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from _common import machine, start_ray

from chainray.api.config import SessionConfig
from chainray.api.session import Driver
from chainray.runner.jobs import RunJob
from chainray.sim import start_simulator
from chainray.spec.chain import load_chain

received = {"posts": 0, "bytes": 0}


class Collector(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        received["bytes"] += len(self.rfile.read(int(self.headers.get("content-length", 0))))
        received["posts"] += 1
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def latencies(config: SessionConfig, chain, runs: int) -> list[float]:
    with Driver(config) as driver:
        driver.run(RunJob(run_id="warm-up", chain=chain, strategy="hybrid",
                          inputs=dict(chain.inputs)))
        return [driver.run(RunJob(run_id=uuid.uuid4().hex[:12], chain=chain, strategy="hybrid",
                                  inputs=dict(chain.inputs))).latency_ms for _ in range(runs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--speed", type=float, default=1.0, help="simulator latency speed-up")
    parser.add_argument("--scenario", default="quantum_research")
    args = parser.parse_args()
    chain = load_chain(args.scenario)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    start_ray()
    with start_simulator("--speed", str(args.speed)) as sim:
        env = {"OPENAI_API_KEY": "sim",
               "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}"}
        base = dict(base_url=sim.base_url, env=env, progress=False, learn=False)
        untraced = latencies(SessionConfig(**base, otel=False), chain, args.runs)
        traced = latencies(SessionConfig(**base), chain, args.runs)
    server.shutdown()
    print(f"{args.scenario}, hybrid, {args.runs} runs each at simulator speed {args.speed}:")
    print(f"  untraced: median {statistics.median(untraced):.0f} ms "
          f"({', '.join(f'{x:.0f}' for x in untraced)})")
    print(f"  traced:   median {statistics.median(traced):.0f} ms "
          f"({', '.join(f'{x:.0f}' for x in traced)})")
    print(f"  collector received {received['posts']} exports, {received['bytes']:,} bytes "
          f"for {args.runs + 1} traced runs")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
