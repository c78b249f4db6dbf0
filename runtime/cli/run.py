"""``chainray run`` and ``chainray bench``: execute chains on Ray and report what happened."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

from pydantic import TypeAdapter

from chainray.api import options as opts
from chainray.api.batch import BatchRecord
from chainray.api.runs import run_in_order
from chainray.errors import InputError
from chainray.plan.schedule import STRATEGIES
from chainray.report.bench import bench_summary
from chainray.report.bench_table import print_bench
from chainray.report.run_table import print_run
from chainray.report.timeline import write_timeline, write_trace
from chainray.results import RunResult
from chainray.runner.jobs import step_models
from chainray.runner.journal import Journal, check_run_id, journal_dir, run_key, run_parts
from chainray.spec.chain import Chain

__all__ = ["add_run_parser", "add_bench_parser", "cmd_run", "cmd_bench", "parse_inputs",
           "prepare", "pick_strategy", "session_config", "job_options", "resume_hint",
           "cap_message"]

_RESULTS = TypeAdapter(list[RunResult])


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1], got {text}")
    return value


def _add_session_flags(parser: argparse.ArgumentParser, positive_int, positive_float) -> None:
    parser.add_argument("scenario", metavar="SCENARIO", help="bundled name or chain YAML path")
    parser.add_argument("--json", metavar="PATH", help="write the result as JSON here")
    parser.add_argument("--set", metavar="NAME=VALUE", action="append", default=[],
                        help="override one of the chain's inputs (repeatable)")
    parser.add_argument("--base-url", metavar="URL",
                        help="OpenAI-compatible endpoint (default: OPENAI_BASE_URL, else the "
                        "real API when OPENAI_API_KEY is set, else the embedded simulator)")
    parser.add_argument("--model", help="use this model for every llm step")
    parser.add_argument("--api-version", metavar="V",
                        help="Azure OpenAI: the api-version to send; --base-url is then the "
                        "resource endpoint (https://NAME.openai.azure.com) and models name "
                        "deployments")
    parser.add_argument("--rpm", type=positive_int, help="requests/min budget (default: the "
                        "simulator's settings, else learned from the server's headers)")
    parser.add_argument("--tpm", type=positive_int, help="tokens/min budget (default: as --rpm)")
    parser.add_argument("--max-concurrency", type=positive_int, default=64,
                        help="most calls in flight at once across the cluster (default 64)")
    parser.add_argument("--target-share", type=_share, default=0.95, metavar="F",
                        help="pace at this share of --rpm/--tpm, keeping headroom (default "
                        "0.95)")
    parser.add_argument("--address", metavar="RAY_ADDRESS",
                        help="join this Ray cluster (default: RAY_ADDRESS, else start one)")
    parser.add_argument("--on-error", choices=("fail", "continue", "isolate"),
                        help="stop at the first failed step; hand failures to the final "
                        "step marked as such; or isolate: skip only the failed step's "
                        "descendants (default: the chain's on_error, else fail)")
    parser.add_argument("--max-cost", type=positive_float, metavar="USD",
                        help="hard spend cap for everything this command sends: a call "
                        "starts only if its worst case (prompt + max_tokens at --prices) "
                        "fits what is left; when it does not, nothing new starts")
    parser.add_argument("--cache", nargs="?", const="", default=None, metavar="DIR",
                        help="answer repeated requests from a response cache (default DIR: "
                        "$CHAINRAY_HOME/cache); hits send nothing and cost $0")
    parser.add_argument("--hedge-after", type=_share, metavar="Q",
                        help="send one duplicate of a request in flight longer than the "
                        "Q-quantile (e.g. 0.9) of this invocation's finished requests of "
                        "the same model; the first answer wins (default: off)")
    parser.add_argument("--no-priority", action="store_true",
                        help="grant permits first come, first served instead of longest "
                        "remaining path first")
    parser.add_argument("--timeout", type=positive_float, default=60.0, metavar="S",
                        help="per-request timeout in seconds (default 60)")
    parser.add_argument("--max-attempts", type=positive_int, default=6,
                        help="attempts per call, retries included (default 6)")
    parser.add_argument("--sim-speed", type=positive_float, default=1.0, metavar="N",
                        help="embedded simulator only: latency N times faster")
    parser.add_argument("--dashboard", action="store_true",
                        help="start a local Ray with its dashboard (about 2 s slower to start)")
    parser.add_argument("--no-dashboard", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--timeline", metavar="PATH",
                        help="write a Gantt chart of the steps as self-contained HTML")
    parser.add_argument("--trace", metavar="PATH",
                        help="write the steps as Chrome Trace Event JSON (open in Perfetto)")
    parser.add_argument("--prices", metavar="PATH",
                        help="your own price table (JSON shaped as chainray/plan/prices.json)")
    parser.add_argument("--quiet", action="store_true", help="no live progress")
    parser.add_argument("--no-learn", action="store_true", help="do not add what this "
                        "measures to the endpoint's profile (which chainray plan predicts from)")


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
                     choices=("sequential", "parallel", "hybrid", "auto"),
                     help="how to schedule the steps (default hybrid: as declared; auto: "
                     "the advisor picks for --objective and says why)")
    run.add_argument("--objective", choices=("latency", "cost", "quality"), default="latency",
                     help="what --strategy auto optimises (default latency)")
    run.add_argument("--resume", metavar="RUN|BATCH",
                     help="finish run RUN (or batch BATCH) whose driver stopped: steps its "
                     "journal holds as finished are not sent again (same chain, strategy, "
                     "inputs and --model)")
    run.add_argument("--inputs", metavar="FILE.jsonl",
                     help="a batch: run the chain once per line (a JSON object of inputs), "
                     "all under the one rate limit; a bad line refuses the whole batch before "
                     "anything is sent; --json then streams JSON Lines: one run result per "
                     "finished run, then a {\"batch\": {...}} summary line")
    run.add_argument("--batch-window", type=positive_int, default=64, metavar="N",
                     help="runs of a batch in flight at once (default 64)")
    run.add_argument("--no-journal", action="store_true",
                     help="keep no journal of finished steps (then --resume cannot help)")


def _strategy_list(text: str) -> list[str]:
    strategies = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in strategies if s not in STRATEGIES]
    if bad or not strategies:
        raise argparse.ArgumentTypeError(f"unknown strategy {bad[0] if bad else text!r}; "
                                         f"choose from {','.join(STRATEGIES)}")
    return list(dict.fromkeys(strategies))


def add_bench_parser(commands, positive_int, positive_float) -> None:
    bench = commands.add_parser(
        "bench", help="compare strategies on identical inputs",
        description="Run the chain under each strategy on identical inputs, one strategy "
        "after another (so they never share the rate-limit budget and distort each other), "
        "and print Strategy, Latency, Tokens, Calls, Cost and Output side by side, then the "
        "fastest, cheapest and longest-output strategies.",
        epilog="examples:\n  chainray bench quantum_research\n"
        "  chainray bench code_review --strategies parallel,hybrid --repeat 5 --json b.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_session_flags(bench, positive_int, positive_float)
    bench.add_argument("--strategies", type=_strategy_list, default=list(STRATEGIES),
                       help="comma-separated (default sequential,parallel,hybrid)")
    bench.add_argument("--repeat", type=positive_int, default=1,
                       help="runs per strategy; the table shows medians and spread")
    bench.add_argument("--summary-json", metavar="PATH",
                       help="write the table as JSON: per strategy medians, min-max, retries, "
                       "429s, queued time, redundancy; and the verdict lines")


def parse_inputs(chain: Chain, assignments: list[str]) -> dict[str, str | None]:
    """The chain's inputs with ``--set NAME=VALUE`` applied; every input must end up set."""
    overrides = {}
    for assignment in assignments:
        name, sep, value = assignment.partition("=")
        if not sep or not name:
            raise InputError(f"--set {assignment!r}: write NAME=VALUE")
        overrides[name] = value
    return opts.chain_inputs(chain, overrides)


def session_config(args: argparse.Namespace, models: Iterable[str] = ()):
    """The flags' session options, translated as the Python API translates its arguments
    (``models``: those whose limiters open with the session)."""
    return opts.session_config(address=args.address, base_url=args.base_url, rpm=args.rpm,
                               tpm=args.tpm, max_concurrency=args.max_concurrency,
                               target_share=args.target_share, priority=not args.no_priority,
                               dashboard=args.dashboard and not args.no_dashboard,
                               sim_speed=args.sim_speed, timeout=args.timeout,
                               max_attempts=args.max_attempts, progress=not args.quiet,
                               api_version=args.api_version, max_cost=args.max_cost,
                               prices=args.prices, hedge_after=args.hedge_after,
                               cache=True if args.cache == "" else args.cache,
                               models=models, learn=not args.no_learn)


def job_options(args: argparse.Namespace) -> dict:
    """The flags' per-run options, named as ``options.run_job`` (and ``chainray.Session``)
    name them."""
    return {"on_error": args.on_error, "model": args.model, "priority": not args.no_priority,
            "prices": args.prices}


def _write_json(path: str, text: str) -> None:
    try:
        Path(path).write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--json: cannot write {path}: {exc.strerror}") from None


def _check_writable(path: str | None) -> None:
    if path and not Path(path).resolve().parent.is_dir():
        raise InputError(f"--json: the folder of {path} does not exist")


def pick_strategy(chain: Chain, args: argparse.Namespace) -> str:
    """``--strategy``, or for ``auto`` the advisor's pick, with its reasons on stderr."""
    strategy, reasons = opts.choose_strategy(chain, args.strategy, args.objective, args.prices,
                                             args.base_url, args.model)
    if args.strategy == "auto":
        print(f"auto: {strategy} for {args.objective}, because:", file=sys.stderr)
        for reason in reasons:
            print(f"  - {reason}", file=sys.stderr)
    return strategy


def prepare(args: argparse.Namespace) -> tuple[Chain, dict]:
    """Everything that can be wrong with the input is found here, before any connection."""
    chain = opts.as_chain(args.scenario)
    inputs = parse_inputs(chain, args.set)
    for path in (args.json, args.timeline, args.trace):
        _check_writable(path)
    session_config(args)  # the session's options, checked as the Python API checks them
    if args.max_cost is not None:
        opts.refuse_unpriced(chain, args.model, args.prices)
    return chain, inputs


def cap_message(state: dict | None) -> str | None:
    """The line that says the spend cap stopped admission, or None."""
    summary = opts.cap_summary(state)
    return None if summary is None else f"chainray: {summary}"


def _finish(args: argparse.Namespace, results: list[RunResult], json_text: str) -> None:
    """Write the results files; called before anything about the run is printed, so that a
    result that fails to print (or a killed terminal) never loses what was paid for."""
    if args.json:
        _write_json(args.json, json_text)
        print(f"results written to {args.json}", file=sys.stderr)
    if args.timeline:
        write_timeline(args.timeline, results)
        print(f"timeline written to {args.timeline}", file=sys.stderr)
    if args.trace:
        write_trace(args.trace, results)
        print(f"trace written to {args.trace} (open it in https://ui.perfetto.dev)",
              file=sys.stderr)


def resume_hint(args: argparse.Namespace, strategy: str, run_id: str) -> str:
    model = f" --model {args.model}" if args.model else ""
    return f"chainray run {args.scenario} --strategy {strategy}{model} --resume {run_id}"


def _is_batch(run_id: str) -> bool:
    return BatchRecord(journal_dir(), check_run_id(run_id)).exists()


def cmd_run(args: argparse.Namespace) -> int:
    if args.inputs or (args.resume is not None and _is_batch(args.resume)):
        from chainray.cli.batch import cmd_batch

        return cmd_batch(args)
    chain, inputs = prepare(args)
    strategy = pick_strategy(chain, args)
    from chainray.api.session import Session

    parts = run_parts(chain.model_dump_json(), strategy, inputs, args.model)
    key = run_key(parts)
    run_id = check_run_id(args.resume) if args.resume is not None else opts.new_run_id()
    journal = Journal(journal_dir(), run_id, key, parts)
    resumed = journal.finished_steps() if args.resume is not None else {}
    if not args.no_journal:
        journal.start()
    job = opts.run_job(chain, strategy, inputs, **job_options(args), run_id=run_id,
                       resumed=resumed, journal_key=key,
                       journal_dir=None if args.no_journal else str(journal_dir()))
    if not args.no_journal:
        print(f"run {run_id} (journal {journal.path}; if interrupted: "
              f"{resume_hint(args, strategy, run_id)})", file=sys.stderr)
    if resumed:
        print(f"resuming: {len(resumed)} finished step(s) will not be sent again: "
              f"{', '.join(resumed)}", file=sys.stderr)
    # The run's limiters start with the session, beside the Coordinator's processes.
    with Session(session_config(args, models=step_models(job))) as session:
        result = session.run(job)
        spend = session.spend_state()
    _finish(args, [result], result.model_dump_json(indent=2))
    print_run(result)
    if (message := cap_message(spend)) is not None:
        print(message, file=sys.stderr)
        return 1
    return 0 if result.status == "ok" else 1


def cmd_bench(args: argparse.Namespace) -> int:
    chain, inputs = prepare(args)
    _check_writable(args.summary_json)
    from chainray.api.session import Session

    results: list[RunResult] = []
    print(f"benchmarking {chain.name}: {', '.join(args.strategies)}, {args.repeat} run(s) "
          "each, one run at a time so strategies never share the rate-limit budget",
          file=sys.stderr)
    with Session(session_config(args)) as session:
        for _ in range(args.repeat):
            for strategy in args.strategies:
                strategy, _ = opts.choose_strategy(chain, strategy)
                job = opts.run_job(chain, strategy, inputs, **job_options(args))
                # A run the spend cap keeps from starting keeps its place, marked as such.
                results += run_in_order(session, [job], 1, label=f"{chain.name}:{strategy}")
        spend = session.spend_state()
    _finish(args, results, _RESULTS.dump_json(results, indent=2).decode())
    if args.summary_json:
        _write_json(args.summary_json, bench_summary(chain.name, results).model_dump_json(
            indent=2))
        print(f"summary written to {args.summary_json}", file=sys.stderr)
    print_bench(chain.name, results)
    if (message := cap_message(spend)) is not None:
        print(message, file=sys.stderr)
        return 1
    return 0 if all(r.status == "ok" for r in results) else 1
