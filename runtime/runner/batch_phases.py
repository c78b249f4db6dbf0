"""A batch of runs through the provider's Batch API, phase by phase, free of Ray.

Each run keeps a ``graphlib.TopologicalSorter`` over its schedule. A round advances every
run as far as it can without the endpoint (steps an earlier invocation finished, python
steps run here, steps skipped after a failure), then sends the llm steps that are ready in
all runs as one job per model; so a strategy costs one job per phase and model (a sequential
one a job per step and model). A line that failed goes into the next job (a rejected
parameter adapted, the next fallback model, a schema correction, a retryable error within
the endpoint's attempts) or is reported; none is dropped. The job log (``JobLog``) holds
each job's file before the job exists and its id before it is polled, and each answered step
is journaled as it is mapped back, so a killed driver loses nothing: the resume polls the
job it left (``adopt``) and creates no other for those lines.

    execution = BatchExecution(jobs, BatchServices(client, base_url, prices, JobLog(path)))
    results = execution.run(on_result=print)          # chainray.runner.batch_run
"""

from __future__ import annotations

import graphlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from chainray.call.batch_client import COMPLETION_WINDOW_S, BatchClient, BatchJob
from chainray.guards.spend import SpendBook
from chainray.plan.cost import PriceTable
from chainray.plan.schedule import resolve
from chainray.results import RunResult, StepResult
from chainray.runner.batch_jobs import JobLog, LineState
from chainray.runner.jobs import RunJob
from chainray.runner.journal import append_step
from chainray.runner.step_exec import (
    StepRequest,
    execute_python_step,
)
from chainray.runner.summary import summarize_run

__all__ = ["BatchServices", "BatchReport", "RunState", "journal_step", "step_result"]


@dataclass
class BatchServices:
    """What a batch execution uses: the Batch API client, the endpoint's URL (adaptations are
    remembered per endpoint), prices, the job log, an optional spend cap, and how long all
    its jobs may take (default: the provider's completion window plus an hour; then a job
    still running is cancelled, keeping the lines it finished, and nothing new is sent)."""

    client: BatchClient
    base_url: str
    prices: PriceTable
    log: JobLog
    spend: SpendBook | None = None
    wait_s: float = COMPLETION_WINDOW_S + 3600
    max_lines: int = 6  # lines per step, retries included (the endpoint's max_attempts)
    say: Callable[[str], object] = lambda _: None


@dataclass
class BatchReport:
    """What the Batch API side did: jobs created here, jobs adopted from an earlier
    invocation, lines sent, Batch API requests, and each job's turnaround in seconds."""

    jobs: int = 0
    adopted_jobs: int = 0
    lines: int = 0
    requests: int = 0  # Batch API HTTP requests: uploads, creates, polls, reads
    turnaround_s: list[float] = field(default_factory=list)


class RunState:
    """One run of the batch: its schedule's sorter and its steps' results so far."""

    def __init__(self, job: RunJob) -> None:
        self.job, self.schedule = job, resolve(job.chain, job.strategy)
        self.plans = self.schedule.plan
        self.sorter = graphlib.TopologicalSorter(
            {plan.id: plan.depends_on for plan in self.schedule.steps})
        self.sorter.prepare()
        self.results: dict[str, StepResult] = {}
        self.on_error = job.on_error or job.chain.on_error
        self.stopping = False
        self.started = time.time()
        self.reported = False
        remaining = self.schedule.remaining_path()
        self.priority = {s: float(n) if job.priority else 0.0 for s, n in remaining.items()}

    def request(self, step_id: str) -> StepRequest:
        job, plan = self.job, self.plans[step_id]
        return StepRequest(run_id=job.run_id, step=job.chain.by_id[step_id],
                           task_name=f"{job.chain.name}:{job.strategy}:{step_id}",
                           settings=job.settings(step_id), inputs=job.inputs, sees=plan.sees,
                           depends_on=plan.depends_on, priority=self.priority[step_id])

    def upstream(self, step_id: str) -> list[StepResult]:
        return [self.results[d] for d in self.plans[step_id].sees]

    def advance(self) -> list[str]:
        """Finish what needs no endpoint (a python step's dependents too); the llm steps
        ready to send, each returned once."""
        ready: list[str] = []
        while self.sorter.is_active() and (found := self.sorter.get_ready()):
            for step_id in found:
                if step_id in self.job.resumed:
                    self.finish(self.job.resumed[step_id], journal=False)
                elif (why := self._skip(step_id)) is not None:
                    self.finish(StepResult(id=step_id, status="skipped", error=why[0],
                                           error_code=why[1],
                                           depends_on=self.plans[step_id].depends_on))
                elif self.job.chain.by_id[step_id].kind == "python":
                    self.finish(execute_python_step(self.request(step_id),
                                                    self.upstream(step_id)))
                else:
                    ready.append(step_id)
        return ready

    def _skip(self, step_id: str) -> tuple[str, str] | None:
        failed = [d for d in self.plans[step_id].depends_on if self.results[d].status != "ok"]
        if self.stopping:
            return "an earlier step failed", "skipped"
        if self.on_error == "isolate" and failed:
            return f"depends on {failed[0]}, which did not finish", "upstream_failed"
        return None

    def finish(self, result: StepResult, journal: bool = True) -> None:
        self.results[result.id] = result
        if journal:
            journal_step(self.job, result)
        self.stopping = self.stopping or (result.status != "ok" and self.on_error == "fail")
        self.sorter.done(result.id)

    @property
    def done(self) -> bool:
        return not self.sorter.is_active()

    def result(self, prices: PriceTable) -> RunResult:
        return summarize_run(self.job.chain, self.schedule, self.results,
                             (time.time() - self.started) * 1000, self.job.run_id, prices,
                             resumed=set(self.job.resumed),
                             isolated=self.on_error == "isolate")


def journal_step(job: RunJob, result: StepResult) -> None:
    """Append a finished step to its run's journal (opened by the driver), if it has one."""
    if job.journal_dir:
        append_step(Path(job.journal_dir) / f"{job.run_id}.jsonl", result)


def step_result(line: LineState, status: str, job: BatchJob | None, **fields) -> StepResult:
    reply, now = line.reply, time.time()
    return StepResult(id=line.request.step.id, depends_on=line.request.depends_on,
                      status=status, started_at=line.first_sent_at, finished_at=now,
                      latency_ms=(now - line.first_sent_at) * 1000, model=line.model,
                      attempts=reply.attempts, prompt_tokens=reply.prompt_tokens,
                      completion_tokens=reply.completion_tokens,
                      cached_tokens=reply.cached_tokens, usage_estimated=reply.usage_estimated,
                      batch_job=job.id if job else None, **fields)
