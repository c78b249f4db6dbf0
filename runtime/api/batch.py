"""Batches: one chain run per line of a JSON-lines inputs file, all under one RateLimiter.

A bad line refuses the whole batch before anything is sent (the error names every bad line),
so a user fixes the file once instead of paying for a partial batch and re-running the rest.
Results stream as JSON Lines, one ``RunResult`` a line as runs finish, then one summary line
``{"batch": {...}}``: a killed batch leaves every finished run readable.

A batch keeps a folder under the runs folder (``chainray.api.resume.BatchRecord``): what it
is, each run's step journal, and each run's result. So ``--resume BATCH`` runs only the runs
that did not finish ``ok``, each without re-sending its finished steps.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, NamedTuple

from pydantic import BaseModel, ConfigDict, SecretStr

from chainray.api.preflight import input_problems, refuse
from chainray.errors import EndpointError, InputError
from chainray.results import RunResult
from chainray.runner.batch_phases import BatchReport
from chainray.spec.chain import Chain
from chainray.spec.problems import suggest

if TYPE_CHECKING:
    from chainray.api.config import SessionConfig
    from chainray.api.resume import PreparedBatch

__all__ = ["read_batch_inputs", "BatchTotals", "BatchWriter", "sent_totals",
           "batch_forecast", "run_batch_api", "BatchApiRun", "bench_batch_api",
           "uses_batch_api"]


def read_batch_inputs(path: str, chain: Chain, base: dict[str, str | None],
                      model: str | None = None) -> list[dict]:
    """Every line's inputs (over ``base``), or an ``InputError`` naming each bad line (and
    each bad input of it: type, encoding, size against ``model``'s context window)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"--inputs: cannot read {path}: {exc.strerror}") from None
    batch, problems = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as exc:
            problems.append(f"line {number}: not JSON ({exc.msg})")
            continue
        if not isinstance(data, dict):
            problems.append(f"line {number}: must be an object of inputs")
            continue
        found = [f"line {number}: unknown input {k!r}{suggest(k, chain.inputs)} (inputs: "
                 f"{', '.join(chain.inputs) or 'none'})" for k in data if k not in chain.inputs]
        known = {k: v for k, v in data.items() if k in chain.inputs}
        given = {k: v for k, v in base.items() if v is not None}
        found += input_problems(chain, {**given, **known}, model, f"line {number}: ")
        inputs = {**base, **{k: str(v) for k, v in known.items()}}
        found += [f"line {number}: input {k!r} has no value" for k, v in inputs.items()
                  if v is None]
        problems += found
        if not found:
            batch.append(inputs)
    refuse(problems, f"--inputs {path}: ")
    if not batch:
        raise InputError(f"--inputs {path}: no input lines")
    return batch


class BatchTotals(BaseModel):
    """The summary line of a batch: ``{"batch": {...}}``.

    ``runs`` counts every run in the output (those an earlier invocation finished included,
    ``resumed_runs`` of them); ``api_calls``, ``retries``, ``rate_limited``, tokens and
    ``estimated_cost`` count what this invocation sent; ``run_totals`` what every invocation
    of the batch sent (see ``sent_totals``).
    """

    model_config = ConfigDict(extra="forbid")

    batch_id: str | None = None
    runs: int = 0
    ok: int = 0
    partial: int = 0
    failed: int = 0
    resumed_runs: int = 0
    latency_ms: float = 0.0
    api_calls: int = 0
    retries: int = 0
    rate_limited: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    estimated_cost: float = 0.0  # at the price table's prices (batch prices under the Batch API)
    requests_per_min: float = 0.0
    tokens_per_min: float = 0.0
    run_totals: dict[str, int] = {"api_calls": 0, "rate_limited": 0, "total_tokens": 0}
    not_started: list[str] = []  # runs the spend cap kept from starting (resume them)
    spend: dict | None = None  # with --max-cost: cap_usd, spent_usd, refused, stopped
    # with --batch-api: jobs created, jobs adopted from an earlier invocation, lines sent,
    # Batch API requests (uploads, creates, polls, reads), each job's turnaround in seconds
    batch_api: dict | None = None

    @property
    def not_ok(self) -> int:
        return self.partial + self.failed

    def add(self, result: RunResult, resumed: bool = False) -> None:
        self.runs += 1
        setattr(self, result.status, getattr(self, result.status) + 1)
        if resumed:
            self.resumed_runs += 1
            return
        self.api_calls += result.api_calls
        self.retries += result.retries
        self.rate_limited += result.rate_limited
        self.total_tokens += result.total_tokens
        self.cached_tokens += result.cached_tokens
        self.estimated_cost = round(self.estimated_cost + result.estimated_cost, 8)

    def close(self, elapsed_s: float) -> None:
        self.latency_ms = round(elapsed_s * 1000, 1)
        minutes = max(elapsed_s, 1e-9) / 60
        self.requests_per_min = round(self.api_calls / minutes, 1)
        self.tokens_per_min = round(self.total_tokens / minutes, 1)


def sent_totals(results: Iterable[RunResult]) -> dict[str, int]:
    """What every invocation sent, from each invocation's results in the order they were
    recorded: each result's own figures, plus those of the steps it resumed that no earlier
    result of its run had sent (their invocation died before recording its run)."""
    totals: Counter = Counter(api_calls=0, rate_limited=0, total_tokens=0)
    counted: dict[str, set[str]] = {}
    for result in results:
        seen = counted.setdefault(result.run_id, set())
        totals.update(api_calls=result.api_calls, rate_limited=result.rate_limited,
                      total_tokens=result.total_tokens)
        for step in result.steps:
            if step.id in result.resumed_steps and step.id not in seen:
                totals.update(api_calls=step.attempts if step.model else 0,
                              rate_limited=step.rate_limited,
                              total_tokens=step.prompt_tokens + step.completion_tokens)
        seen.update(step.id for step in result.steps if step.status == "ok")
    return dict(totals)


class BatchWriter:
    """Streams JSON Lines: one ``RunResult`` per finished run, then ``{"batch": {...}}``.

    ``earlier``: every result earlier invocations of the batch recorded, for ``run_totals``."""

    def __init__(self, file: IO[str] | None, batch_id: str | None = None,
                 earlier: Iterable[RunResult] = ()) -> None:
        self.file = file
        self.totals = BatchTotals(batch_id=batch_id)
        self.started = time.perf_counter()
        self.sent = list(earlier)

    def add(self, result: RunResult, resumed: bool = False) -> None:
        self.totals.add(result, resumed)
        if not resumed:
            self.sent.append(result)
        if self.file:
            self.file.write(result.model_dump_json() + "\n")
            self.file.flush()

    def close(self) -> BatchTotals:
        self.totals.run_totals = sent_totals(self.sent)
        self.totals.close(time.perf_counter() - self.started)
        if self.file:
            self.file.write(json.dumps({"batch": self.totals.model_dump()}) + "\n")
            self.file.flush()
        return self.totals


def batch_forecast(config: SessionConfig, chain: Chain, strategy: str, inputs: list[dict],
                   window: int):
    """How long and how much ``inputs`` (one run each) take under the config's limits as
    given (the embedded simulator's own settings count as given); None for no runs."""
    if not inputs:
        return None
    from chainray.api.config import stated_limits
    from chainray.api.planning import endpoint_models
    from chainray.plan.cost import load_prices
    from chainray.plan.forecast import forecast_batch

    limits = stated_limits(config, config.uses_simulator)
    basis = endpoint_models(chain, config.profile_endpoint, config.model)
    return forecast_batch(chain, strategy, load_prices(config.prices), runs=len(inputs),
                          rpm=limits.rpm, tpm=limits.tpm,
                          max_concurrency=config.max_concurrency, window=window,
                          target_share=config.target_share, burst_s=limits.burst_s,
                          inputs=inputs, model=basis.latency, replies=basis.replies,
                          others=basis.others)


class BatchApiRun(NamedTuple):
    """What ``run_batch_api`` did: each run's result (in the batch's order, finished ones
    included), what the Batch API side did, and the spend cap's account (None without)."""

    results: list[RunResult]
    report: BatchReport
    spend: dict | None


def run_batch_api(prepared: PreparedBatch, config: SessionConfig,
                  on_result: Callable[[RunResult], object] = lambda _: None) -> BatchApiRun:
    """Run a prepared batch through the provider's Batch API (``batch_api=True``): one job
    per phase and model (``chainray.runner.batch_run``), no Ray and no direct chat request. With no
    endpoint given, the embedded simulator (which serves the Batch API too) is started.
    An endpoint without the Batch API (404) is refused as bad input; nothing was paid."""
    from chainray.call.batch_client import COMPLETION_WINDOW_S, BatchClient
    from chainray.call.endpoint import Endpoint
    from chainray.guards.spend import SpendBook
    from chainray.plan.cost import load_prices
    from chainray.runner.batch_jobs import JobLog
    from chainray.runner.batch_phases import BatchServices
    from chainray.runner.batch_run import BatchExecution

    def finished(result: RunResult) -> None:
        prepared.finish(result)
        on_result(result)

    def say(line: str) -> None:
        if config.progress:
            print(f"chainray: {line}", file=sys.stderr, flush=True)

    simulator = _batch_simulator(config) if config.uses_simulator else None
    try:
        base_url = simulator.base_url if simulator else (
            config.base_url or config.env.get("OPENAI_BASE_URL") or "https://api.openai.com/v1")
        key = "sim-no-key-needed" if simulator else config.endpoint_key() or "none"
        endpoint = Endpoint(base_url=base_url, api_key=SecretStr(key),
                            timeout_s=config.timeout, max_attempts=config.max_attempts,
                            backoff_s=config.backoff_s, api_version=config.api_version)
        log = JobLog(prepared.record.folder / "jobs.jsonl" if prepared.record else None)
        spend = SpendBook(config.max_cost) if config.max_cost is not None else None
        execution = BatchExecution(prepared.todo, BatchServices(
            BatchClient(endpoint), base_url, load_prices(config.prices), log, spend,
            wait_s=config.deadline or COMPLETION_WINDOW_S + 3600,
            max_lines=config.max_attempts, say=say))
        try:
            ran = execution.run(finished)
        except EndpointError as exc:
            raise _no_batch_api(exc, base_url) from None
    finally:
        if simulator is not None:
            simulator.stop()
    by_id = {**prepared.finished, **{r.run_id: r for r in ran}}
    state = None if spend is None else {**spend.state(), "stopped": spend.refused > 0}
    return BatchApiRun([by_id[job.run_id] for job in prepared.jobs], execution.report, state)


def _batch_simulator(config: SessionConfig):
    from chainray.sim.embedded import start_simulator

    return start_simulator("--speed", str(config.sim_speed), *config.sim_flags)


def _no_batch_api(exc: EndpointError, base_url: str) -> Exception:
    """A Batch API request that failed: bad input when the endpoint has no Batch API (or
    refuses the key), else the failure as it is."""
    if exc.status in (404, 405):
        return InputError(f"--batch-api: the endpoint {base_url} has no Batch API "
                          f"(/v1/files or /v1/batches answered HTTP {exc.status}); run "
                          "without --batch-api. Nothing was paid")
    if exc.status in (401, 403) or exc.code == "connect_failed":
        return InputError(f"--batch-api: {exc}")
    return exc


def bench_batch_api(chain: Chain, strategies: Iterable[str], repeat: int,
                    inputs: dict | None, config: SessionConfig) -> list[RunResult]:
    """``bench``'s Batch API rows: each strategy's ``repeat`` runs as one batch (one job per
    phase for them all), labelled ``STRATEGY+batch`` so that they sit beside the online rows
    of the same chain and inputs. Bench runs keep no journal."""
    from chainray.api.resume import prepare_batch

    rows: list[RunResult] = []
    for strategy in strategies:
        with prepare_batch([(chain, inputs)] * repeat, strategy, config=config,
                           journal=False) as prepared:
            ran = run_batch_api(prepared, config)
        rows += [r.model_copy(update={"strategy": f"{strategy}+batch"}) for r in ran.results]
    return rows


def uses_batch_api(prepared: PreparedBatch, config: SessionConfig) -> bool:
    """``batch_api``, or a batch resumed whose jobs went through the Batch API: its jobs
    that an earlier invocation created are polled, never sent again online."""
    record = prepared.record
    return config.batch_api or (record is not None
                                and (record.folder / "jobs.jsonl").is_file())
