"""``chainray run`` and ``chainray bench``: execute chains on Ray and report what happened."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from pydantic import TypeAdapter

from chainray.api.batch import BatchRecord
from chainray.errors import InputError
from chainray.exec.cache import cache_dir
from chainray.exec.jobs import RunJob, models_of, step_models
from chainray.exec.journal import Journal, check_run_id, journal_dir, run_key, run_parts
from chainray.plan.cost import load_prices
from chainray.plan.schedule import STRATEGIES
from chainray.report.bench import bench_summary
from chainray.report.bench_table import print_bench
from chainray.report.run_table import print_run
from chainray.report.timeline import write_timeline, write_trace
from chainray.results import RunResult
from chainray.spec.chain import Chain, load_chain

__all__ = ["add_run_parser", "add_bench_parser", "cmd_run", "cmd_bench", "parse_inputs",
           "prepare", "pick_strategy", "session_config", "resume_hint", "cap_message"]

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
                        "Q-quantile (e.g. 0.95) of this invocation's finished requests of "
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
    """The flags' session options, translated as the Python API translates its arguments."""
    from chainray.api.options import session_config

    return session_config(address=args.address, base_url=args.base_url, rpm=args.rpm,
                          tpm=args.tpm, max_concurrency=args.max_concurrency,
                          target_share=args.target_share, priority=not args.no_priority,
                          dashboard=args.dashboard and not args.no_dashboard,
                          sim_speed=args.sim_speed, timeout=args.timeout,
                          max_attempts=args.max_attempts, progress=not args.quiet,
                          api_version=args.api_version, max_cost=args.max_cost,
                          prices=args.prices, hedge_after=args.hedge_after,
                          cache=None if args.cache is None else args.cache or str(cache_dir()))


def _write_json(path: str, text: str) -> None:
    try:
        Path(path).write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--json: cannot write {path}: {exc.strerror}") from None


def _check_writable(path: str | None) -> None:
    if path and not Path(path).resolve().parent.is_dir():
        raise InputError(f"--json: the folder of {path} does not exist")


def pick_strategy(chain: Chain, args: argparse.Namespace) -> str:
    if args.strategy != "auto":
        return args.strategy
    from chainray.plan.advisor import advise
    from chainray.plan.predict import predict

    prices = load_prices(args.prices)
    advice = advise(chain, args.objective, {s: predict(chain, s, prices) for s in STRATEGIES})
    print(f"auto: {advice.strategy} for {args.objective}, because:", file=sys.stderr)
    for reason in advice.reasons:
        print(f"  - {reason}", file=sys.stderr)
    return advice.strategy


def prepare(args: argparse.Namespace) -> tuple[Chain, dict]:
    """Everything that can be wrong with the input is found here, before any connection."""
    chain = load_chain(args.scenario)
    inputs = parse_inputs(chain, args.set)
    for path in (args.json, args.timeline, args.trace):
        _check_writable(path)
    prices = load_prices(args.prices)
    if args.max_cost is not None:
        unpriced = sorted({m for step in chain.steps if step.kind == "llm"
                           for m in models_of(chain.settings_for(step))
                           if (args.model or m) not in prices.models})
        if unpriced or (args.model and args.model not in prices.models):
            raise InputError(f"--max-cost: no price for model {(args.model or unpriced[0])!r}"
                             ", so its cost cannot be capped; add it to a price table and "
                             "pass --prices")
    return chain, inputs


def cap_message(state: dict | None) -> str | None:
    """The line that says the spend cap stopped admission, or None."""
    if not state or not state["stopped"]:
        return None
    return (f"chainray: spend cap ${state['cap_usd']:.4f} reached: spent "
            f"${state['spent_usd']:.4f}; calls that did not fit were not sent")


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
    from chainray.api.session import Session, new_run_id

    parts = run_parts(chain.model_dump_json(), strategy, inputs, args.model)
    key = run_key(parts)
    run_id = check_run_id(args.resume) if args.resume is not None else new_run_id()
    journal = Journal(journal_dir(), run_id, key, parts)
    resumed = journal.finished_steps() if args.resume is not None else {}
    if not args.no_journal:
        journal.start()
    job = RunJob(run_id=run_id, chain=chain, strategy=strategy, inputs=inputs,
                 on_error=args.on_error, model=args.model, priority=not args.no_priority,
                 prices=args.prices, resumed=resumed,
                 journal_dir=None if args.no_journal else str(journal_dir()), journal_key=key)
    if not args.no_journal:
        print(f"run {run_id} (journal {journal.path}; if interrupted: "
              f"{resume_hint(args, strategy, run_id)})", file=sys.stderr)
    if resumed:
        print(f"resuming: {len(resumed)} finished step(s) will not be sent again: "
              f"{', '.join(resumed)}", file=sys.stderr)
    # The run's limiters start with the session, beside the Coordinator's processes.
    config = replace(session_config(args), models=tuple(sorted(step_models(job))))
    with Session(config) as session:
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
    from chainray.api.session import Session, new_run_id

    results: list[RunResult] = []
    print(f"benchmarking {chain.name}: {', '.join(args.strategies)}, {args.repeat} run(s) "
          "each, one run at a time so strategies never share the rate-limit budget",
          file=sys.stderr)
    with Session(session_config(args)) as session:
        for _ in range(args.repeat):
            for strategy in args.strategies:
                job = RunJob(run_id=new_run_id(), chain=chain, strategy=strategy,
                             inputs=inputs, on_error=args.on_error, model=args.model,
                             priority=not args.no_priority, prices=args.prices)
                results.append(session.run(job))
    _finish(args, results, _RESULTS.dump_json(results, indent=2).decode())
    if args.summary_json:
        _write_json(args.summary_json, bench_summary(chain.name, results).model_dump_json(
            indent=2))
        print(f"summary written to {args.summary_json}", file=sys.stderr)
    print_bench(chain.name, results)
    return 0 if all(r.status == "ok" for r in results) else 1
