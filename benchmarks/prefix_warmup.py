"""Prefix warm-up (issue 24): four reviews of one ~3,500-token codebase, then a combined report,
against tests/cache_server.py (OpenAI-style automatic prefix caching of its own, not the
simulator) at gpt-4.1-mini's prices ($0.40 per 1M input, $0.10 cached, $1.60 output).

Each run starts with a cold cache; runs with and without warm-up alternate, streamed and not.
Prints the cost and latency of warm-up over ``--no-prefix-warmup`` (medians) and how far the
cached tokens and cost chainray reports are from the server's bill.

Targets: cost <= 0.70x and latency <= 1.35x with warm-up (streamed, the default: without a
stream the others wait for the first review's whole reply, so latency is not a target there);
reported cached tokens and cost within 1 % of the bill, with and without warm-up, streamed and
not.

    python benchmarks/prefix_warmup.py [--repeat 3] [--ttft 0.5] [--reply-tokens 300]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from _common import machine, start_ray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import chainray  # noqa: E402
from chainray.plan.cost import load_prices  # noqa: E402
from chainray.spec.chain import chain_from_dict  # noqa: E402
from tests.cache_server import CacheServer  # noqa: E402  (the in-repo caching server)

MODEL = "gpt-4.1-mini"
CODE = "def handler(request):\n    return process(request.body)  # noqa\n" * 222  # ~3,500 tokens
REVIEWS = ("security", "performance", "style", "tests")


def review_chain(stream: bool, reply_tokens: int):
    return chain_from_dict({
        "name": "reviews", "inputs": {"code": CODE},
        "defaults": {"model": MODEL, "max_tokens": reply_tokens, "stream": stream},
        "steps": [*({"id": a, "prompt": f"{{code}}\n\nReview the code above for {a}."}
                    for a in REVIEWS),
                  {"id": "report", "after": list(REVIEWS),
                   "prompt": "Combine: " + " ".join(f"{{{a}}}" for a in REVIEWS)}]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ttft", type=float, default=0.5, help="server time to first token")
    parser.add_argument("--reply-tokens", type=int, default=300)
    args = parser.parse_args()
    start_ray()
    price = load_prices().models[MODEL]
    server = CacheServer(ttft_s=args.ttft, prefill_s_per_token=0.0001, tokens_per_s=100.0,
                         completion_tokens=args.reply_tokens)
    print(f"machine: {machine()}")
    print(f"server: ttft {args.ttft}s + 0.1 ms/uncached prompt token, 100 tokens/s, "
          f"{args.reply_tokens}-token replies; {args.repeat} runs of each")
    worst_tokens = worst_cost = 0.0
    with server.running() as base_url:
        sessions = {warm: chainray.Session(base_url=base_url, rpm=100_000, tpm=10_000_000,
                                           learn=False, prefix_warmup=warm)
                    for warm in (True, False)}
        try:
            for stream in (True, False):
                chain = review_chain(stream, args.reply_tokens)
                costs, latencies = {True: [], False: []}, {True: [], False: []}
                for _ in range(args.repeat):
                    for warm in (True, False):
                        server.reset()
                        run = sessions[warm].run(chain, journal=False)
                        assert run.status == "ok", run.error
                        bill = server.bill.cost(price.input, price.cached_input, price.output)
                        worst_tokens = max(worst_tokens, abs(
                            run.cached_tokens - server.bill.cached_tokens)
                            / max(1, server.bill.cached_tokens))
                        worst_cost = max(worst_cost, abs(run.estimated_cost - bill) / bill)
                        costs[warm].append(run.estimated_cost)
                        latencies[warm].append(run.latency_ms / 1000)
                cost = statistics.median(costs[True]) / statistics.median(costs[False])
                latency = statistics.median(latencies[True]) / statistics.median(latencies[False])
                print(f"{'streamed' if stream else 'not streamed'}: warm-up cost "
                      f"${statistics.median(costs[True]):.5f} vs "
                      f"${statistics.median(costs[False]):.5f} = {cost:.2f}x (target <= 0.70), "
                      f"latency {statistics.median(latencies[True]):.2f}s vs "
                      f"{statistics.median(latencies[False]):.2f}s = {latency:.2f}x "
                      + ("(target <= 1.35)" if stream else "(no first token to wait for: "
                         "the others leave when the first review has finished)"))
        finally:
            for session in sessions.values():
                session.close()
    print(f"bill agreement: cached tokens within {worst_tokens:.2%}, cost within "
          f"{worst_cost:.2%} of the server's bill (target <= 1 %)")


if __name__ == "__main__":
    main()
