"""``chainray sim``: the simulated OpenAI-compatible server in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import sys

from aiohttp import web
from pydantic import ValidationError

from chainray.errors import InputError
from chainray.sim.config import FaultConfig, SimConfig
from chainray.sim.server import Simulator

__all__ = ["add_sim_parser", "cmd_sim", "config_from_args", "serve"]

READY_PREFIX = "chainray sim listening on "


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"a share lies between 0 and 1, got {text}")
    return value


def add_sim_parser(commands, positive_int, positive_float) -> None:
    sim = commands.add_parser(
        "sim", help="run the simulated LLM server in the foreground",
        description="Serve an OpenAI-compatible chat completions API on loopback with "
        "realistic latency, OpenAI's rate-limit headers and 429s, and faults on demand. "
        "GET /stats shows what it saw; POST /sim/config changes settings while it runs.",
        epilog="example: chainray sim --port 8000 --rpm 60 --tpm 20000 --error-500 0.2\n"
        "then: OPENAI_BASE_URL=http://127.0.0.1:8000/v1 chainray run quantum_research",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sim.add_argument("--host", default="127.0.0.1",
                     help="address to bind (default 127.0.0.1; others are reachable from the "
                     "network)")
    sim.add_argument("--port", type=int, default=8000, help="port (0 picks a free one)")
    sim.add_argument("--rpm", type=positive_int, default=500, help="requests per minute")
    sim.add_argument("--tpm", type=positive_int, default=200_000, help="tokens per minute")
    sim.add_argument("--speed", type=positive_float, default=1.0,
                     help="make latency N times faster (rate limits stay per real minute)")
    sim.add_argument("--seed", type=int, default=0, help="seed for content, latency, faults")
    sim.add_argument("--ttft-median", type=float, default=0.5, metavar="S",
                     help="median time to first token in seconds (default 0.5)")
    sim.add_argument("--tokens-per-s", type=positive_float, default=70.0,
                     help="decode speed (default 70)")
    sim.add_argument("--slots", type=positive_int, default=None, metavar="N",
                     help="answer as a self-hosted engine (vLLM, Ollama, llama.cpp, TGI): N "
                     "requests decode at full speed, k > N share it (each at N/k)")
    sim.add_argument("--reply-tokens", type=positive_int, default=None, metavar="N",
                     help="every reply wants N tokens (default: the length model)")
    sim.add_argument("--ignore-max-tokens", action="store_true",
                     help="replies are as long as they want whatever max_tokens says, "
                     "finish_reason stop")
    sim.add_argument("--api-key-env", metavar="VAR",
                     help="require the API key held in this environment variable (401 else)")
    for name, what in (("error-500", "answer 500"), ("error-429", "answer a spurious 429"),
                       ("slow", "are slow"), ("hang", "never answer"),
                       ("drop", "lose the connection")):
        sim.add_argument(f"--{name}", type=_share, default=0.0, metavar="SHARE",
                         help=f"share of requests that {what} (0..1)")
    sim.add_argument("--quota-exhausted", action="store_true",
                     help="answer every call 429 insufficient_quota")
    sim.add_argument("--no-retry-after", action="store_true",
                     help="send 429s without retry-after headers")
    sim.add_argument("--batch-turnaround", type=float, default=2.0, metavar="S",
                     help="Batch API: a job ends S seconds after its creation, divided by "
                     "--speed (default 2)")
    sim.add_argument("--batch-fail-every", type=int, default=0, metavar="N",
                     help="Batch API: each Nth line answers 500 (default 0: none)")
    sim.add_argument("--batch-expire-every", type=int, default=0, metavar="N",
                     help="Batch API: each Nth job expires with half its lines done")
    sim.add_argument("--no-prompt-cache", action="store_true",
                     help="no automatic prefix caching (default: as OpenAI's, prefixes of "
                     "--cache-min-tokens or more, reported as cached_tokens)")
    sim.add_argument("--cache-min-tokens", type=positive_int, default=1024, metavar="N",
                     help="smallest cached prompt prefix (default 1024, OpenAI's)")


def config_from_args(args: argparse.Namespace) -> SimConfig:
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise InputError(f"--api-key-env: environment variable {args.api_key_env} is "
                             "empty or unset")
    try:
        faults = FaultConfig(error_500=args.error_500, error_429=args.error_429,
                             slow=args.slow, hang=args.hang, drop=args.drop,
                             quota_exhausted=args.quota_exhausted)
        if faults.error_500 + faults.error_429 + faults.slow + faults.hang + faults.drop > 1:
            raise InputError("the fault shares add up to more than 1")
        return SimConfig(host=args.host, port=args.port, rpm=args.rpm, tpm=args.tpm,
                         speed=args.speed, seed=args.seed, ttft_median_s=args.ttft_median,
                         tokens_per_s=args.tokens_per_s, api_key=api_key, faults=faults,
                         retry_after_headers=not args.no_retry_after, slots=args.slots,
                         reply_tokens=args.reply_tokens,
                         ignore_max_tokens=args.ignore_max_tokens,
                         batch_turnaround_s=args.batch_turnaround,
                         batch_fail_every=args.batch_fail_every,
                         batch_expire_every=args.batch_expire_every,
                         prompt_cache=not args.no_prompt_cache,
                         prompt_cache_min_tokens=args.cache_min_tokens)
    except ValidationError as exc:
        error = exc.errors()[0]
        flag = "--" + str(error["loc"][-1]).replace("_", "-")
        raise InputError(f"{flag}: {error['msg']}") from None


async def serve(config: SimConfig) -> None:
    """Serve until cancelled; print one line with the base URL once listening."""
    simulator = Simulator(config)
    runner = web.AppRunner(simulator.app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    host, port = runner.addresses[0][:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"{READY_PREFIX}http://{shown}:{port}/v1", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def cmd_sim(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if not ipaddress.ip_address(_resolve(config.host)).is_loopback:
        print(f"chainray sim: warning: binding {config.host}, reachable beyond this machine",
              file=sys.stderr)
    try:
        asyncio.run(serve(config))
    except KeyboardInterrupt:
        pass
    return 0


def _resolve(host: str) -> str:
    return "127.0.0.1" if host == "localhost" else host
