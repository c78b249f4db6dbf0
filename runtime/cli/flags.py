"""The flags ``run`` and ``bench`` share, mapped onto ``SessionConfig`` in one place, and the
steps both commands (and a batch) take before and after their runs.

Each session flag's argparse ``dest`` is the ``SessionConfig`` field it sets and its default
is absent (``argparse.SUPPRESS``), so a flag nobody gave leaves the config's own default:
``config_from_args`` is ``SessionConfig(**{field: value for each flag given})``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from chainray.api import options as opts
from chainray.api import preflight
from chainray.api.config import SessionConfig
from chainray.errors import InputError
from chainray.report.timeline import write_timeline, write_trace
from chainray.results import RunResult
from chainray.runner.journal import journal_dir
from chainray.spec.chain import Chain

__all__ = ["add_session_flags", "config_from_args", "prepare", "pick_strategy",
           "resume_hint", "cap_message", "finish", "write_json"]

_GIVEN = argparse.SUPPRESS  # absent unless given: SessionConfig's default applies


def _default(field: str) -> object:
    return SessionConfig.model_fields[field].default


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1], got {text}")
    return value


def add_session_flags(parser: argparse.ArgumentParser, positive_int, positive_float) -> None:
    parser.add_argument("scenario", metavar="SCENARIO", help="bundled name or chain YAML path")
    parser.add_argument("--json", metavar="PATH", help="write the result as JSON here")
    parser.add_argument("--set", metavar="NAME=VALUE", action="append", default=[],
                        help="override one of the chain's inputs (repeatable)")
    parser.add_argument("--timeline", metavar="PATH",
                        help="write a Gantt chart of the steps as self-contained HTML")
    parser.add_argument("--trace", metavar="PATH",
                        help="write the steps as Chrome Trace Event JSON (open in Perfetto)")
    session = parser.add_argument_group("session (chainray.SessionConfig's fields)")
    add = session.add_argument
    add("--base-url", metavar="URL", default=_GIVEN,
        help="OpenAI-compatible endpoint (default: OPENAI_BASE_URL, else the real API when "
        "OPENAI_API_KEY is set, else the embedded simulator)")
    add("--model", default=_GIVEN, help="use this model for every llm step")
    add("--api-version", metavar="V", default=_GIVEN,
        help="Azure OpenAI: the api-version to send; --base-url is then the resource "
        "endpoint (https://NAME.openai.azure.com) and models name deployments")
    add("--rpm", type=positive_int, default=_GIVEN, help="requests/min budget (default: the "
        "simulator's settings, else learned from the server's headers)")
    add("--tpm", type=positive_int, default=_GIVEN,
        help="tokens/min budget (default: as --rpm)")
    add("--max-concurrency", type=positive_int, default=_GIVEN, help="most calls in flight "
        f"at once across the cluster (default {_default('max_concurrency')})")
    add("--target-share", type=_share, metavar="F", default=_GIVEN, help="pace at this share "
        f"of --rpm/--tpm, keeping headroom (default {_default('target_share')})")
    add("--address", metavar="RAY_ADDRESS", default=_GIVEN,
        help="join this Ray cluster (default: RAY_ADDRESS, else start one)")
    add("--on-error", choices=("fail", "continue", "isolate"), default=_GIVEN,
        help="stop at the first failed step; hand failures to the final step marked as "
        "such; or isolate: skip only the failed step's descendants (default: the chain's "
        "on_error, else fail)")
    add("--max-cost", type=positive_float, metavar="USD", default=_GIVEN,
        help="hard spend cap for everything this command sends: a call starts only if its "
        "worst case (prompt + max_tokens at --prices) fits what is left; when it does not, "
        "nothing new starts")
    add("--cache", nargs="?", const=True, metavar="DIR", default=_GIVEN,
        help="answer repeated requests from a response cache (default DIR: "
        "$CHAINRAY_HOME/cache); hits send nothing and cost $0")
    add("--hedge-after", type=_share, metavar="Q", default=_GIVEN,
        help="send one duplicate of a request in flight longer than the Q-quantile (e.g. "
        "0.9) of this invocation's finished requests of the same model; the first answer "
        "wins (default: off)")
    add("--no-priority", dest="priority", action="store_false", default=_GIVEN,
        help="grant permits first come, first served instead of longest remaining path "
        "first")
    add("--no-prefix-warmup", dest="prefix_warmup", action="store_false", default=_GIVEN,
        help="send steps that share a prompt prefix all at once, instead of one first and "
        "the rest at its first token (which reads the prefix from the provider's cache)")
    add("--timeout", type=positive_float, metavar="S", default=_GIVEN,
        help=f"per-request timeout in seconds (default {_default('timeout'):g})")
    add("--max-attempts", type=positive_int, default=_GIVEN,
        help=f"attempts per call, retries included (default {_default('max_attempts')})")
    add("--sim-speed", type=positive_float, metavar="N", default=_GIVEN,
        help="embedded simulator only: latency N times faster")
    add("--dashboard", action="store_true", default=_GIVEN,
        help="start a local Ray with its dashboard (about 2 s slower to start)")
    add("--no-dashboard", dest="dashboard", action="store_false", default=_GIVEN,
        help=argparse.SUPPRESS)
    add("--prices", metavar="PATH", default=_GIVEN,
        help="your own price table (JSON shaped as chainray/plan/prices.json)")
    add("--quiet", dest="progress", action="store_false", default=_GIVEN,
        help="no live progress")
    add("--batch-api", action="store_true", default=_GIVEN,
        help="with --inputs: send the batch through the provider's Batch API (/v1/files, "
        "/v1/batches): one job per phase of the strategy and model, at batch prices (OpenAI: "
        "half); "
        "results may take up to the provider's completion window (24h)")
    add("--deadline", metavar="DURATION", default=_GIVEN,
        help="when the results are needed (e.g. 30m, 2h): the advisor picks the Batch API "
        "or online calls from the predicted completion time and cost, and says why")
    add("--otel", action="store_true", default=_GIVEN,
        help="send each run's trace over OpenTelemetry OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT "
        "(default http://localhost:4318); on without this flag when that variable is set; "
        'needs pip install "chainray[otel]"')
    add("--no-learn", dest="learn", action="store_false", default=_GIVEN,
        help="do not add what this measures to the endpoint's profile (which chainray plan "
        "predicts from)")


def add_objective_flag(parser: argparse.ArgumentParser, what: str) -> None:
    """``--objective`` (run, bench, plan): what the advisor optimises."""
    parser.add_argument("--objective", choices=("latency", "cost", "quality"),
                        default="latency", help=f"what {what} optimises (default latency)")


def config_from_args(args: argparse.Namespace) -> SessionConfig:
    """The session the flags describe: the fields given, over the config's defaults (and
    live progress, unless ``--quiet``: a terminal shows it, a library keeps quiet)."""
    given = {name: value for name, value in vars(args).items()
             if name in SessionConfig.model_fields}
    return SessionConfig(**{"progress": True, **given})


def pick_strategy(chain: Chain, args: argparse.Namespace,
                  config: SessionConfig) -> tuple[str, SessionConfig]:
    """``--strategy``, or for ``auto`` the advisor's pick, with its reasons on stderr, and
    ``config`` with the advisor's prefix warm-up unless ``--no-prefix-warmup`` was given."""
    choice = opts.choose_strategy(chain, args.strategy, args.objective, config.prices,
                                  config.profile_endpoint, config.model)
    if args.strategy == "auto":
        print(f"auto: {choice.strategy} for {args.objective}, because:", file=sys.stderr)
        for reason in choice.reasons:
            print(f"  - {reason}", file=sys.stderr)
    return choice.strategy, choice.applied(config)


def write_json(path: str, text: str) -> None:
    try:
        Path(path).write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--json: cannot write {path}: {exc.strerror}") from None


def prepare(args: argparse.Namespace) -> tuple[Chain, dict, SessionConfig]:
    """The chain, its inputs (``--set`` applied) and the session's config: everything that
    can be wrong with the input is found here, before any connection."""
    chain = opts.as_chain(args.scenario)
    outputs = {"--json": args.json, "--timeline": args.timeline, "--trace": args.trace,
               "--summary-json": getattr(args, "summary_json", None)}
    preflight.refuse(  # every problem at once; then nothing is sent
        preflight.set_problems(chain, args.set) + preflight.output_problems(outputs)
        + preflight.input_problems(chain, preflight.set_values(chain, args.set),
                                   getattr(args, "model", None), "--set: ")
        + ([] if getattr(args, "no_journal", True) else preflight.journal_problems(
            journal_dir())))
    inputs = opts.chain_inputs(chain, preflight.set_values(chain, args.set))
    config = config_from_args(args)
    if config.max_cost is not None:
        opts.refuse_unpriced(chain, config.model, config.prices)
    return chain, inputs, config


def resume_hint(args: argparse.Namespace, strategy: str, run_id: str) -> str:
    model = f" --model {args.model}" if getattr(args, "model", None) else ""
    return f"chainray run {args.scenario} --strategy {strategy}{model} --resume {run_id}"


def cap_message(state: dict | None) -> str | None:
    """The line that says the spend cap stopped admission, or None."""
    summary = opts.cap_summary(state)
    return None if summary is None else f"chainray: {summary}"


def finish(args: argparse.Namespace, results: list[RunResult], json_text: str) -> None:
    """Write the results files; called before anything about the run is printed, so that a
    result that fails to print (or a killed terminal) never loses what was paid for."""
    if args.json:
        write_json(args.json, json_text)
        print(f"results written to {args.json}", file=sys.stderr)
    if args.timeline:
        write_timeline(args.timeline, results)
        print(f"timeline written to {args.timeline}", file=sys.stderr)
    if args.trace:
        write_trace(args.trace, results)
        print(f"trace written to {args.trace} (open it in https://ui.perfetto.dev)",
              file=sys.stderr)
