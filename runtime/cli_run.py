"""``chainray run`` and ``chainray bench``: execute chains on Ray and report what happened."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from actors.coordinator import RunJob
from runtime.errors import InputError
from runtime.report import print_run
from runtime.spec import Chain, load_chain

__all__ = ["add_run_parser", "add_bench_parser", "cmd_run", "cmd_bench", "parse_inputs"]


def _add_session_flags(parser: argparse.ArgumentParser, positive_int, positive_float) -> None:
    parser.add_argument("scenario", metavar="SCENARIO", help="bundled name or chain YAML path")
    parser.add_argument("--json", metavar="PATH", help="write the result as JSON here")
    parser.add_argument("--set", metavar="NAME=VALUE", action="append", default=[],
                        help="override one of the chain's inputs (repeatable)")
    parser.add_argument("--base-url", metavar="URL",
                        help="OpenAI-compatible endpoint (default: OPENAI_BASE_URL, else the "
                        "real API when OPENAI_API_KEY is set, else the embedded simulator)")
    parser.add_argument("--model", help="use this model for every llm step")
    parser.add_argument("--rpm", type=positive_int, help="requests/min budget (default 500)")
    parser.add_argument("--tpm", type=positive_int, help="tokens/min budget (default 200000)")
    parser.add_argument("--max-concurrency", type=positive_int, default=64,
                        help="most calls in flight at once across the cluster (default 64)")
    parser.add_argument("--address", metavar="RAY_ADDRESS",
                        help="join this Ray cluster (default: RAY_ADDRESS, else start one)")
    parser.add_argument("--on-error", choices=("fail", "continue"),
                        help="stop at the first failed step, or hand failures to the final "
                        "step marked as such (default: the chain's on_error, else fail)")
    parser.add_argument("--no-priority", action="store_true",
                        help="grant permits first come, first served instead of longest "
                        "remaining path first")
    parser.add_argument("--timeout", type=positive_float, default=60.0, metavar="S",
                        help="per-request timeout in seconds (default 60)")
    parser.add_argument("--max-attempts", type=positive_int, default=6,
                        help="attempts per call, retries included (default 6)")
    parser.add_argument("--sim-speed", type=positive_float, default=1.0, metavar="N",
                        help="embedded simulator only: latency N times faster")
    parser.add_argument("--no-dashboard", action="store_true",
                        help="start a local Ray without its dashboard (starts faster)")
    parser.add_argument("--quiet", action="store_true", help="no live progress")


def add_run_parser(commands, positive_int, positive_float) -> None:
    run = commands.add_parser(
        "run", help="run a chain once under one strategy",
        description="Run a chain on Ray under one strategy and print each step, the totals "
        "and the output. Progress shows while it runs.",
        epilog="examples:\n  chainray run quantum_research --strategy parallel --json out.json"
        "\n  chainray run quantum_research --set topic='Fusion energy in 2026'"
        "\n  OPENAI_API_KEY=sk-... chainray run code_review --model gpt-4o-mini --rpm 500",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_session_flags(run, positive_int, positive_float)
    run.add_argument("--strategy", default="hybrid",
                     choices=("sequential", "parallel", "hybrid"),
                     help="how to schedule the steps (default hybrid: as declared)")


def add_bench_parser(commands, positive_int, positive_float) -> None:
    del commands, positive_int, positive_float  # the bench command arrives with issue 5


def parse_inputs(chain: Chain, assignments: list[str]) -> dict[str, str | None]:
    """The chain's inputs with ``--set NAME=VALUE`` applied; every input must end up set."""
    inputs = dict(chain.inputs)
    for assignment in assignments:
        name, sep, value = assignment.partition("=")
        if not sep or not name:
            raise InputError(f"--set {assignment!r}: write NAME=VALUE")
        if name not in inputs:
            known = ", ".join(inputs) or "none"
            raise InputError(f"--set {name}: the chain has no input {name!r} (inputs: {known})")
        inputs[name] = value
    missing = [name for name, value in inputs.items() if value is None]
    if missing:
        raise InputError(f"input {missing[0]!r} has no value; give it with --set "
                         f"{missing[0]}=...")
    return inputs


def session_config(args: argparse.Namespace):
    from runtime.driver import SessionConfig

    return SessionConfig(address=args.address, base_url=args.base_url, rpm=args.rpm,
                         tpm=args.tpm, max_concurrency=args.max_concurrency,
                         priority=not args.no_priority, dashboard=not args.no_dashboard,
                         sim_speed=args.sim_speed, timeout_s=args.timeout,
                         max_attempts=args.max_attempts, progress=not args.quiet)


def _write_json(path: str, text: str) -> None:
    try:
        Path(path).write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--json: cannot write {path}: {exc.strerror}") from None


def _check_writable(path: str | None) -> None:
    if path and not Path(path).resolve().parent.is_dir():
        raise InputError(f"--json: the folder of {path} does not exist")


def cmd_run(args: argparse.Namespace) -> int:
    chain = load_chain(args.scenario)
    inputs = parse_inputs(chain, args.set)
    _check_writable(args.json)
    from runtime.driver import Session, new_run_id

    job = RunJob(run_id=new_run_id(), chain=chain, strategy=args.strategy, inputs=inputs,
                 on_error=args.on_error, model=args.model, priority=not args.no_priority)
    with Session(session_config(args)) as session:
        result = session.run(job)
    print_run(result)
    if args.json:
        _write_json(args.json, result.model_dump_json(indent=2))
        print(f"result written to {args.json}", file=sys.stderr)
    return 0 if result.status == "ok" else 1


def cmd_bench(args: argparse.Namespace) -> int:
    raise InputError("bench is not available yet")
