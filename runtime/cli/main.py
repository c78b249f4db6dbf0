"""The ``chainray`` command line. Exit status: 0 success, 1 a run failed, 2 bad input."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import textwrap
from collections.abc import Callable

from chainray.errors import ChainrayError, InputError, SpecError
from chainray.text import one_line, terminal_safe

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_RUN_FAILED, EXIT_BAD_INPUT = 0, 1, 2

_EPILOG = """\
examples:
  chainray scenarios                                  list the bundled scenarios
  chainray plan quantum_research                      schedules, critical paths, advice
  chainray run quantum_research --strategy hybrid --json out.json
  chainray bench quantum_research --repeat 3          compare the three strategies
  chainray sim --port 8000 --rpm 500 --tpm 200000     the simulated LLM server, foreground
  chainray up                                         keep Ray warm: runs start in ~1 s
  chainray schema > chain.schema.json                 JSON Schema for editors

SCENARIO is a bundled scenario name or a path to a chain YAML file. Without --base-url and
OPENAI_API_KEY, run and bench start the embedded simulator on a free loopback port.
exit status: 0 success, 1 a run failed, 2 bad input (nothing was sent to any endpoint),
130 interrupted (Ctrl-C or SIGTERM: what was received is kept; --resume sends the rest)."""


def _sigterm_stops_like_ctrl_c() -> Callable[[], None]:
    """SIGTERM (a job scheduler, ``kill``) stops a run as a Ctrl-C does, cleanly; returns
    what puts the previous handler back (``main`` may be called in-process)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    return lambda: signal.signal(signal.SIGTERM, previous)


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad flags already; keep its message, on one line that points at
    --help (not the whole usage block above it)."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


_HEAVY = {  # commands whose parsers live in modules that import pydantic models, rich, aiohttp
    "run": "run a chain once under one strategy",
    "bench": "compare strategies on identical inputs",
    "sim": "run the simulated LLM server in the foreground",
    "up": "start a warm Ray that run and bench use while it is up",
    "status": "show the warm Ray of chainray up",
    "down": "stop what chainray up started, and nothing else",
}
_WARM = ("up", "status", "down")


def _command_in(argv: list[str]) -> str | None:
    return next((arg for arg in argv if not arg.startswith("-")), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser for ``command``; the others that cost imports get a one-line stub
    (enough for ``chainray --help`` and to reject a typo), so ``--help`` starts at once."""
    parser = _Parser(prog="chainray", description="Run LLM prompt chains sequentially, in "
                     "parallel or as a hybrid DAG on Ray, under one shared rate limit, and "
                     "measure which schedule to pick.", epilog=_EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=_Parser)
    commands.add_parser("scenarios", help="list the bundled scenarios",
                        description="List the bundled scenarios with their steps.")
    plan = commands.add_parser(
        "plan", help="schedules, critical paths, predictions and advice (no network)",
        description="Show, for each strategy, the phases, the critical path and predicted "
        "makespan, tokens and cost, then the recommended strategy. Sends nothing anywhere.")
    plan.add_argument("scenario", metavar="SCENARIO", help="bundled name or chain YAML path")
    _add_prediction_flags(plan)
    _add_forecast_flags(plan)
    commands.add_parser(
        "schema", help="print the chain file's JSON Schema (editor validation)",
        description="Print the JSON Schema of chain files. Save it and name it in a chain "
        "file's first line so that editors check the file as you type:\n"
        "  chainray schema > chain.schema.json\n"
        "  # yaml-language-server: $schema=./chain.schema.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    cache = commands.add_parser("cache", help="the response cache: stats or clear",
                                description="Show or empty the response cache run --cache "
                                "uses (no Ray, no network).")
    cache.add_argument("action", choices=("stats", "clear"))
    cache.add_argument("--dir", metavar="DIR", help="cache folder (default "
                       "$CHAINRAY_HOME/cache)")
    for name, help_text in _HEAVY.items():
        if name != command:
            commands.add_parser(name, help=help_text, add_help=False)
        elif name in _WARM:
            from chainray.cli.warm import add_warm_parsers

            add_warm_parsers(commands, _positive_int, only=name)
        elif name == "sim":
            from chainray.cli import sim as cli_sim

            cli_sim.add_sim_parser(commands, _positive_int, _positive_float)
        else:
            from chainray.cli import run as cli_run

            adder = cli_run.add_run_parser if name == "run" else cli_run.add_bench_parser
            adder(commands, _positive_int, _positive_float)
    return parser


def _add_prediction_flags(parser: argparse.ArgumentParser) -> None:
    from chainray.cli.flags import add_objective_flag

    add_objective_flag(parser, "the advice")
    parser.add_argument("--calibrate", metavar="JSON", action="append", default=[],
                        help="earlier run/bench JSON results to add to the endpoint's "
                        "profile (repeatable)")
    parser.add_argument("--base-url", metavar="URL", help="predict from this endpoint's "
                        "profile, learned from every run there (default: the endpoint run "
                        "would call)")
    parser.add_argument("--sim-speed", type=_positive_float, metavar="N",
                        help="predict from the embedded simulator's profile at this speed "
                        "(what runs with --sim-speed N learned)")
    parser.add_argument("--model", help="the model whose profile to use (default: the "
                        "chain's)")
    parser.add_argument("--prices", metavar="PATH",
                        help="your own price table (JSON, same shape as the bundled one)")


def _add_forecast_flags(parser: argparse.ArgumentParser) -> None:
    forecast = parser.add_argument_group(
        "batch forecast", "with --runs or --inputs: how long and how much the batch takes "
        "under these limits, which limit binds and the utilisation to expect")
    forecast.add_argument("--runs", type=_positive_int, metavar="N", help="forecast N runs")
    forecast.add_argument("--inputs", metavar="FILE.jsonl",
                          help="forecast one run per line (the file run --inputs takes)")
    forecast.add_argument("--strategy", default="hybrid",
                          choices=("sequential", "parallel", "hybrid", "auto"),
                          help="strategy of the batch (default hybrid)")
    forecast.add_argument("--rpm", type=_positive_int,
                          help="requests/min budget (default: none, so not a bound; the "
                          "embedded simulator enforces 500)")
    forecast.add_argument("--tpm", type=_positive_int,
                          help="tokens/min budget (default: none, so not a bound; the "
                          "embedded simulator enforces 200000)")
    forecast.add_argument("--max-concurrency", type=_positive_int, default=64,
                          help="most calls in flight at once (default 64)")
    forecast.add_argument("--batch-window", type=_positive_int, default=64, metavar="N",
                          help="runs in flight at once (default 64)")


def _cmd_scenarios(args: argparse.Namespace) -> int:
    from chainray.spec.bundled import bundled_scenarios
    from chainray.spec.chain import load_chain

    width = max(60, shutil.get_terminal_size((100, 24)).columns)
    indent = " " * 25
    for name in bundled_scenarios():
        chain = load_chain(name)
        steps = ", ".join(step.id for step in chain.steps)
        # Wrapped at word boundaries, never cut: the text is for reading, not for a column.
        print(textwrap.fill(f"{len(chain.steps)} steps: {steps}", width,
                            initial_indent=f"{chain.name:<24} ", subsequent_indent=indent,
                            break_long_words=False, break_on_hyphens=False))
        if chain.description:
            print(textwrap.fill(" ".join(chain.description.split()), width,
                                initial_indent=indent, subsequent_indent=indent,
                                break_long_words=False, break_on_hyphens=False))
    return EXIT_OK


def _cmd_schema(args: argparse.Namespace) -> int:
    import json

    from chainray.spec.schema import chain_schema

    print(json.dumps(chain_schema(), indent=2))
    return EXIT_OK


def _cmd_plan(args: argparse.Namespace) -> int:
    from chainray.api.planning import profile_endpoint
    from chainray.cli.plan import print_forecast, print_plan

    args.base_url = profile_endpoint(args.base_url, args.sim_speed)
    if args.runs or args.inputs:
        print_forecast(args.scenario, strategy=args.strategy, objective=args.objective,
                       runs=args.runs, inputs_path=args.inputs, rpm=args.rpm, tpm=args.tpm,
                       max_concurrency=args.max_concurrency, window=args.batch_window,
                       calibrate_from=args.calibrate, prices_path=args.prices,
                       base_url=args.base_url, model=args.model)
        return EXIT_OK
    print_plan(args.scenario, objective=args.objective, calibrate_from=args.calibrate,
               prices_path=args.prices, base_url=args.base_url, model=args.model)
    return EXIT_OK


def _cmd_cache(args: argparse.Namespace) -> int:
    from pathlib import Path

    from chainray.guards.cache import ResponseCache, cache_dir

    cache = ResponseCache(Path(args.dir) if args.dir else cache_dir())
    if args.action == "clear":
        print(f"removed {cache.clear()} cached replies from {cache.directory}")
    else:
        stats = cache.stats()
        print(f"{cache.directory}: {stats['entries']} cached replies, {stats['bytes']} bytes")
    return EXIT_OK


def _quiet_closed_pipe() -> int:
    """The reader went away (``chainray scenarios | head -1``): that is not an error, and
    Python must not complain while flushing stdout at exit either."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_OK


def _ray_is_up() -> bool:
    ray = sys.modules.get("ray")  # never imported here: --help, plan, sim stay Ray-free
    return ray is not None and ray.is_initialized()


def _leave_ray() -> None:
    """Disconnect (and stop a Ray this command started) now rather than in Ray's exit hook,
    which first sleeps 0.5 s for worker logs that chainray does not forward anyway."""
    if _ray_is_up():
        from chainray.api.cluster import leave_ray

        leave_ray()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(_command_in(argv)).parse_args(argv)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "scenarios": _cmd_scenarios, "plan": _cmd_plan, "schema": _cmd_schema,
        "cache": _cmd_cache}
    if args.command in ("run", "bench"):
        from chainray.cli import run as cli_run

        handlers.update(run=cli_run.cmd_run, bench=cli_run.cmd_bench)
    elif args.command == "sim":
        from chainray.cli import sim as cli_sim

        handlers["sim"] = cli_sim.cmd_sim
    elif args.command in _WARM:
        from chainray.cli import warm as cli_warm

        handlers.update(up=cli_warm.cmd_up, status=cli_warm.cmd_status, down=cli_warm.cmd_down)
    ray_was_up = _ray_is_up()  # called in-process by someone with Ray up: leave it up
    restore_sigterm = _sigterm_stops_like_ctrl_c()
    try:
        code = handlers[args.command](args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return code
    except BrokenPipeError:
        return _quiet_closed_pipe()
    except (SpecError, InputError) as exc:
        print(f"chainray: error: {terminal_safe(str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ChainrayError as exc:
        print(f"chainray: run failed: {one_line(str(exc), 1000)}", file=sys.stderr)
        return EXIT_RUN_FAILED
    except KeyboardInterrupt:
        print("chainray: interrupted", file=sys.stderr)
        return 130
    finally:
        restore_sigterm()
        if not ray_was_up:
            _leave_ray()


if __name__ == "__main__":
    sys.exit(main())
