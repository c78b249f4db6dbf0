"""``chainray run`` and ``chainray bench``: execute chains on Ray and report what happened.

Both are thin layers over the Python API: the flags become a ``SessionConfig``
(``cli/flags.py``), a run goes through ``prepare_run`` and ``Session.run_prepared`` (the same
journal and resume as ``chainray.run(..., resume=)``), a bench through ``Session.bench``.
"""

from __future__ import annotations

import argparse
import sys

from pydantic import TypeAdapter

from chainray.api import options as opts
from chainray.api.resume import is_batch, prepare_run
from chainray.api.runs import RunList
from chainray.cli.batch import cmd_batch
from chainray.cli.flags import (
    add_objective_flag,
    add_session_flags,
    cap_message,
    finish,
    pick_strategy,
    prepare,
    resume_hint,
    write_json,
)
from chainray.cli.plan import print_advice
from chainray.errors import InputError
from chainray.plan.schedule import STRATEGIES
from chainray.report.bench import bench_summary
from chainray.report.bench_table import print_bench
from chainray.report.run_table import print_run
from chainray.results import RunResult
from chainray.runner.jobs import step_models

__all__ = ["add_run_parser", "add_bench_parser", "cmd_run", "cmd_bench"]

_RESULTS = TypeAdapter(list[RunResult])


def add_run_parser(commands, positive_int, positive_float) -> None:
    run = commands.add_parser(
        "run", help="run a chain once under one strategy",
        description="Run a chain on Ray under one strategy and print each step, the totals "
        "and the output. Progress shows while it runs.",
        epilog="examples:\n  chainray run quantum_research --strategy parallel --json out.json"
        "\n  chainray run quantum_research --set topic='Fusion energy in 2026'"
        "\n  OPENAI_API_KEY=sk-... chainray run code_review --model gpt-4o-mini --rpm 500",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_session_flags(run, positive_int, positive_float)
    run.add_argument("--strategy", default="hybrid",
                     choices=("sequential", "parallel", "hybrid", "auto"),
                     help="how to schedule the steps (default hybrid: as declared; auto: "
                     "the advisor picks for --objective and says why)")
    add_objective_flag(run, "--strategy auto")
    run.add_argument("--resume", metavar="RUN|BATCH",
                     help="finish run RUN (a run of a batch too: BATCH-N) or batch BATCH "
                     "(its runs that are not ok run again): steps the journals hold as "
                     "finished are not sent again (same chain, strategy, inputs and "
                     "--model); refused while another process executes it")
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
        "fastest, cheapest and longest-output strategies, and the one to pick for --objective "
        "from what was measured (weighed as plan weighs its predictions: a strategy that "
        "withholds declared context from a step is named beside the pick, not picked, unless "
        "no strategy measured keeps every declared dependency).",
        epilog="examples:\n  chainray bench quantum_research\n"
        "  chainray bench code_review --strategies parallel,hybrid --repeat 5 --json b.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_session_flags(bench, positive_int, positive_float)
    bench.add_argument("--strategies", type=_strategy_list, default=list(STRATEGIES),
                       help="comma-separated (default sequential,parallel,hybrid)")
    bench.add_argument("--repeat", type=positive_int, default=1,
                       help="runs per strategy; the table shows medians and spread")
    add_objective_flag(bench, "the pick")
    bench.add_argument("--summary-json", metavar="PATH",
                       help="write the table as JSON: per strategy medians, min-max, retries, "
                       "429s, queued time, redundancy; and the verdict lines")


def cmd_run(args: argparse.Namespace) -> int:
    if args.inputs or (args.resume is not None and is_batch(args.resume)):
        return cmd_batch(args)
    if getattr(args, "batch_api", False):
        raise InputError("--batch-api runs a batch through the provider's Batch API: give "
                         "--inputs FILE.jsonl (one run per line); nothing was sent")
    chain, inputs, config = prepare(args)
    strategy, config = pick_strategy(chain, args, config)
    from chainray.api.config import configure

    run_id = args.resume or opts.new_run_id()
    with prepare_run(chain, strategy, inputs, config=config, resume=args.resume,
                     run_id=run_id, journal=not args.no_journal) as prepared:
        if prepared.path is not None:
            print(f"run {run_id} (journal {prepared.path}; if interrupted: "
                  f"{resume_hint(args, strategy, run_id)})", file=sys.stderr)
        if resumed := prepared.job.resumed:
            print(f"resuming: {len(resumed)} finished step(s) will not be sent again: "
                  f"{', '.join(resumed)}", file=sys.stderr)
        from chainray.api.cluster import name_job
        from chainray.api.library import Session  # Ray: only once the input is known good

        name_job(chain.name, run_id=run_id)  # the dashboard's Jobs view shows this name
        # The run's limiters start with the session, beside the Coordinator's processes.
        with Session(configure(config, models=step_models(prepared.job))) as session:
            result = session.run_prepared(prepared)
            spend, interrupted = session.spend_state(), session.interrupted
    finish(args, [result], result.model_dump_json(indent=2))
    print_run(result)
    if interrupted:
        print("chainray: interrupted; every reply received is kept. Resume with: "
              f"{resume_hint(args, strategy, run_id)}", file=sys.stderr)
        return 130
    if (message := cap_message(spend)) is not None:
        print(message, file=sys.stderr)
        return 1
    return 0 if result.status == "ok" else 1


def cmd_bench(args: argparse.Namespace) -> int:
    chain, inputs, config = prepare(args)
    from chainray.api.library import Session

    print(f"benchmarking {chain.name}: {', '.join(args.strategies)}, {args.repeat} run(s) "
          "each, one run at a time so strategies never share the rate-limit budget",
          file=sys.stderr)
    from chainray.api.cluster import name_job

    name_job(chain.name)
    with Session(config) as session:
        # A run the spend cap keeps from starting keeps its place, marked as such.
        results = list(session.bench(chain, args.strategies, args.repeat, inputs))
        spend = session.spend_state()
    finish(args, results, _RESULTS.dump_json(results, indent=2).decode())
    if args.summary_json:
        write_json(args.summary_json, bench_summary(chain.name, results).model_dump_json(
            indent=2))
        print(f"summary written to {args.summary_json}", file=sys.stderr)
    print_bench(chain.name, results)
    if (advice := RunList(results).advice(chain, args.objective)) is not None:
        print_advice(f"Pick for {args.objective}, from what was measured", advice.strategy,
                     advice.reasons, advice.withholding)
    if (message := cap_message(spend)) is not None:
        print(message, file=sys.stderr)
        return 1
    return 0 if all(r.status == "ok" for r in results) else 1
