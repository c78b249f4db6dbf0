"""``chainray run --inputs FILE``: a batch, streamed as JSON Lines, resumable by its id.

A thin layer over ``Session.run_many``: ``prepare_batch`` checks every line and opens (or, with
``--resume``, checks and reads) the batch's folder before Ray starts; the session runs it.
"""

from __future__ import annotations

import argparse
import sys

from chainray.api.batch import (
    BatchWriter,
    batch_forecast,
    read_batch_inputs,
    run_batch_api,
    uses_batch_api,
)
from chainray.api.config import SessionConfig, configure
from chainray.api.resume import BatchRecord, PreparedBatch, prepare_batch
from chainray.cli.flags import cap_message, pick_strategy, prepare, resume_hint
from chainray.errors import EndpointError, InputError
from chainray.runner.journal import journal_dir
from chainray.spec.chain import Chain

__all__ = ["cmd_batch"]


def _lines(args: argparse.Namespace, chain: Chain, base: dict) -> list[dict]:
    """Each run's inputs: the ``--inputs`` file's lines, or those of the batch resumed."""
    model = getattr(args, "model", None)
    if args.resume is None:
        return read_batch_inputs(args.inputs, chain, base, model)
    recorded = [run.inputs for run in BatchRecord(journal_dir(), args.resume).manifest().runs]
    if args.inputs and read_batch_inputs(args.inputs, chain, base, model) != recorded:
        raise InputError(f"--resume {args.resume}: --inputs {args.inputs} holds other "
                         "inputs than that batch; leave --inputs out to resume it")
    return recorded


def _online(batch: PreparedBatch, config: SessionConfig, writer: BatchWriter,
            args: argparse.Namespace, label: str) -> tuple[dict | None, bool, list[str]]:
    """Run the batch on Ray: (spend, interrupted, runs never started)."""
    from chainray.api.cluster import name_job
    from chainray.api.library import Session  # Ray: only once the input is good

    name_job(label.split(":")[0], batch_id=batch.batch_id)  # the dashboard's job name
    with Session(config) as session:
        runs = session.run_prepared_batch(batch, args.batch_window, on_result=writer.add,
                                          label=label)
        return session.spend_state(), session.interrupted, list(runs.not_started)


def _batch_api(batch: PreparedBatch, config: SessionConfig,
               writer: BatchWriter) -> tuple[dict | None, bool, list[str]]:
    """Run the batch through the provider's Batch API: (spend, interrupted, never
    started). A Ctrl-C leaves the job running at the provider: the resume polls it."""
    print("--batch-api: one Batch API job per phase and model; results arrive as jobs end "
          "(the provider promises 24h, most end far sooner)", file=sys.stderr)
    ignored = [flag for flag, value in (("--cache", config.cache),
                                         ("--hedge-after", config.hedge_after)) if value]
    if ignored:
        print(f"chainray: {', '.join(ignored)}: online calls only; not used under --batch-api",
              file=sys.stderr)
    try:
        ran = run_batch_api(batch, config, on_result=writer.add)
    except KeyboardInterrupt:  # the jobs are journaled: a resume polls them, paying nothing
        print("chainray: the Batch API jobs in progress keep running at the provider and "
              "are paid for; a resume polls them instead of creating them again",
              file=sys.stderr)
        return None, True, []
    except EndpointError:
        print("chainray: the Batch API jobs created so far keep running at the provider and "
              "are journaled; a resume polls them instead of creating them again",
              file=sys.stderr)
        raise
    writer.totals.batch_api = {"jobs": ran.report.jobs, "adopted_jobs": ran.report.adopted_jobs,
                               "lines": ran.report.lines, "requests": ran.report.requests,
                               "turnaround_s": ran.report.turnaround_s}
    return ran.spend, False, []


def _advise(config: SessionConfig, chain: Chain, strategy: str, inputs: list[dict],
            window: int) -> SessionConfig:
    """--deadline without --batch-api: the advisor picks the Batch API or online calls."""
    from chainray.api.planning import batch_api_advice

    use_batch, reasons = batch_api_advice(config, chain, strategy, inputs, window)
    print(f"--deadline: {'the Batch API' if use_batch else 'online calls'}, because:",
          file=sys.stderr)
    for reason in reasons:
        print(f"  - {reason}", file=sys.stderr)
    return configure(config, batch_api=use_batch)


def cmd_batch(args: argparse.Namespace) -> int:
    if args.timeline:
        raise InputError("--timeline is for single runs, not a batch (--inputs)")
    chain, base, config = prepare(args)
    strategy, config = pick_strategy(chain, args, config)
    items = [(chain, inputs) for inputs in _lines(args, chain, base)]
    if config.deadline is not None and not config.batch_api:
        config = _advise(config, chain, strategy, [inputs for _, inputs in items],
                         args.batch_window)
    with prepare_batch(items, strategy, config=config, resume=args.resume,
                       journal=not args.no_journal) as batch:
        if batch.record is not None:
            print(f"batch {batch.batch_id} (folder {batch.record.folder}; if interrupted: "
                  f"{resume_hint(args, strategy, batch.batch_id)})", file=sys.stderr)
        if uses_batch_api(batch, config) and not config.batch_api:
            print("resuming through the Batch API, as the batch began", file=sys.stderr)
            config = configure(config, batch_api=True)
        if batch.finished:
            print(f"resuming: {len(batch.finished)} finished run(s) will not run again; "
                  f"{len(batch.todo)} to go", file=sys.stderr)
        forecast = None if config.batch_api else batch_forecast(
            config, chain, strategy, [job.inputs for job in batch.todo], args.batch_window)
        if forecast is not None:
            print(f"forecast: {forecast.makespan_s:.0f}s, {forecast.total_tokens} tokens, "
                  f"${forecast.cost:.4f}; binding limit {forecast.binding}", file=sys.stderr)
        out = open(args.json, "w", encoding="utf-8") if args.json else None  # noqa: SIM115
        try:
            writer = BatchWriter(out, batch.batch_id, earlier=batch.earlier)
            for result in batch.finished.values():
                writer.add(result, resumed=True)
            if config.batch_api:  # no Ray: the provider runs the lines
                spend, interrupted, not_started = _batch_api(batch, config, writer)
            else:
                spend, interrupted, not_started = _online(batch, config, writer, args,
                                                          f"{chain.name}:{strategy}")
            writer.totals.not_started = not_started
            writer.totals.spend = spend
            totals = writer.close()
        finally:
            if out:
                out.close()
    if args.json:
        print(f"results written to {args.json}", file=sys.stderr)
    print(f"batch of {totals.runs} runs ({totals.ok} ok, {totals.partial} partial, "
          f"{totals.failed} failed"
          + (f"; {totals.resumed_runs} finished earlier" if totals.resumed_runs else "")
          + f") in {totals.latency_ms / 1000:.1f}s: {totals.api_calls} calls"
          + (f" ({totals.retries} retries)" if totals.retries else "")
          + f", {totals.rate_limited} 429s, {totals.total_tokens} tokens"
          + (f" ({totals.cached_tokens} cached)" if totals.cached_tokens else "")
          + f", ${totals.estimated_cost:.5f}; "
          f"{totals.requests_per_min:.0f} requests/min, {totals.tokens_per_min:.0f} tokens/min")
    if (api := totals.batch_api) is not None:
        polled = f", {api['adopted_jobs']} polled from an earlier invocation" if \
            api["adopted_jobs"] else ""
        print(f"Batch API: {api['jobs']} job(s) created{polled}, {api['lines']} lines, "
              f"{api['requests']} Batch API requests (uploads, creates, polls, reads); no "
              "direct chat request; the cost above is at the price table's batch prices")
    if interrupted:
        print(f"chainray: interrupted; every reply received is kept. Resume with: "
              f"{resume_hint(args, strategy, batch.batch_id)}", file=sys.stderr)
        return 130
    if (message := cap_message(spend)) is not None:
        print(f"{message}; {totals.runs - totals.not_ok} run(s) finished, {totals.not_ok} "
              f"partial or failed, {len(totals.not_started)} never started; resume with a "
              f"higher cap: {resume_hint(args, strategy, batch.batch_id)} --max-cost USD",
              file=sys.stderr)
        return 1
    return 0 if totals.not_ok == 0 else 1
