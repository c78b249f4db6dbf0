"""``chainray run --inputs FILE``: a batch, streamed as JSON Lines, resumable by its id."""

from __future__ import annotations

import argparse
import os
import sys

from chainray.api import options as opts
from chainray.api.batch import BatchManifest, BatchRecord, BatchWriter, read_batch_inputs
from chainray.cli.run import (
    cap_message,
    job_options,
    pick_strategy,
    prepare,
    resume_hint,
    session_config,
)
from chainray.errors import InputError
from chainray.guards.call_guards import stopped_by_cap
from chainray.plan.cost import load_prices
from chainray.runner.jobs import RunJob
from chainray.runner.journal import Journal, journal_dir, run_key, run_parts
from chainray.spec.chain import Chain

__all__ = ["cmd_batch"]


def _batch_record(args: argparse.Namespace, chain: Chain, base: dict,
                  parts: dict) -> tuple[BatchRecord | None, BatchManifest, dict]:
    """The batch's record and manifest (new, or the interrupted one to resume), and the runs
    an earlier invocation finished."""
    if args.resume is not None:
        record = BatchRecord(journal_dir(), args.resume)
        manifest = record.manifest()
        record.check(manifest, parts)
        if args.inputs and read_batch_inputs(args.inputs, chain, base) != manifest.inputs:
            raise InputError(f"--resume {args.resume}: --inputs {args.inputs} holds other "
                             "inputs than that batch; leave --inputs out to resume it")
        return record, manifest, record.finished_runs()
    batch = read_batch_inputs(args.inputs, chain, base)
    manifest = BatchManifest(batch_id=f"b{opts.new_run_id()}", scenario=args.scenario,
                             parts=parts, inputs=batch)
    if args.no_journal:
        return None, manifest, {}
    record = BatchRecord(journal_dir(), manifest.batch_id)
    record.create(manifest)
    return record, manifest, {}


def _forecast(args: argparse.Namespace, chain: Chain, strategy: str, inputs: list[dict]):
    """How long and how much, said before the batch starts (limits as given; the embedded
    simulator's own settings count as given)."""
    if not inputs:
        return None
    from chainray.plan.forecast import forecast_batch
    from chainray.sim.config import SimConfig

    embedded = not (args.base_url or os.environ.get("OPENAI_BASE_URL")
                    or os.environ.get("OPENAI_API_KEY"))
    rpm = args.rpm or (SimConfig().rpm if embedded else None)
    tpm = args.tpm or (SimConfig().tpm if embedded else None)
    from chainray.api.planning import endpoint_models

    latency, replies, *_ = endpoint_models(chain, args.base_url, args.model)
    forecast = forecast_batch(chain, strategy, load_prices(args.prices), runs=len(inputs),
                              rpm=rpm, tpm=tpm, max_concurrency=args.max_concurrency,
                              window=args.batch_window, target_share=args.target_share,
                              inputs=inputs, model=latency, replies=replies)
    print(f"forecast: {forecast.makespan_s:.0f}s, {forecast.total_tokens} tokens, "
          f"${forecast.cost:.4f}; binding limit {forecast.binding}", file=sys.stderr)
    return forecast


def cmd_batch(args: argparse.Namespace) -> int:
    if args.timeline:
        raise InputError("--timeline is for single runs, not a batch (--inputs)")
    chain, base = prepare(args)
    strategy = pick_strategy(chain, args)
    chain_json = chain.model_dump_json()
    parts = {k: v for k, v in run_parts(chain_json, strategy, {}, args.model).items()
             if k != "inputs"}
    record, manifest, finished = _batch_record(args, chain, base, parts)
    from chainray.api.session import Session

    def make_job(index: int) -> RunJob:
        inputs, run_id = manifest.inputs[index], manifest.run_id(index)
        run = run_parts(chain_json, strategy, inputs, args.model)
        resumed, folder = {}, None
        if record is not None:
            journal = Journal(record.folder, run_id, run_key(run), run)
            resumed = journal.finished_steps() if journal.path.exists() else {}
            journal.start()
            folder = str(record.folder)
        return opts.run_job(chain, strategy, inputs, **job_options(args), run_id=run_id,
                            resumed=resumed, journal_dir=folder, journal_key=run_key(run))

    todo = [i for i in range(len(manifest.inputs)) if manifest.run_id(i) not in finished]
    if record is not None:
        print(f"batch {manifest.batch_id} (folder {record.folder}; if interrupted: "
              f"{resume_hint(args, strategy, manifest.batch_id)})", file=sys.stderr)
    if finished:
        print(f"resuming: {len(finished)} finished run(s) will not run again; "
              f"{len(todo)} to go", file=sys.stderr)
    forecast = _forecast(args, chain, strategy, [manifest.inputs[i] for i in todo])
    out = open(args.json, "w", encoding="utf-8") if args.json else None  # noqa: SIM115
    try:
        writer = BatchWriter(out, manifest.batch_id)
        for result in finished.values():
            writer.add(result, resumed=True)
        with Session(session_config(args)) as session:
            for result in session.run_many((make_job(i) for i in todo),
                                           window=args.batch_window,
                                           label=f"{chain.name}:{strategy}", total=len(todo),
                                           forecast_s=forecast.makespan_s if forecast else None):
                if record is not None and not stopped_by_cap(result):  # resume runs it again
                    record.record(result)
                writer.add(result)
            spend = session.spend_state()
            writer.totals.not_started = list(session.not_started)
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
          + f") in {totals.latency_ms / 1000:.1f}s: {totals.api_calls} calls, "
          f"{totals.rate_limited} 429s, {totals.total_tokens} tokens; "
          f"{totals.requests_per_min:.0f} requests/min, {totals.tokens_per_min:.0f} tokens/min")
    if (message := cap_message(spend)) is not None:
        print(f"{message}; {totals.runs - totals.not_ok} run(s) finished, {totals.not_ok} "
              f"partial or failed, {len(totals.not_started)} never started; resume with a "
              f"higher cap: {resume_hint(args, strategy, manifest.batch_id)} --max-cost USD",
              file=sys.stderr)
        return 1
    return 0 if totals.not_ok == 0 else 1
