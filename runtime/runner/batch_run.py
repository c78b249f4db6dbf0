"""The rounds of a batch through the Batch API (see ``batch_phases`` for the runs' side).

One round: every run advances (``RunState.advance``), the llm steps ready in all of them and
the lines that failed in the last job go into one job per model (providers take one model per
file and count each model's enqueued tokens apart), the models' jobs at once in threads; the
spend cap reserves a job's worst case before it is created; each job is polled to its end,
its results are mapped back by ``custom_id`` and journaled, and the lines that failed are
adapted, fall back, retried or reported (``_settle``).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import TypeVar

from chainray.call.adaptations import Adaptation, describe, learn_adaptation
from chainray.call.batch_client import BatchJob, Stopped
from chainray.call.completion import Completion
from chainray.call.error_table import error_code
from chainray.call.structured import correction_message, schema_problem
from chainray.errors import EndpointError
from chainray.guards.call_guards import spend_cap_error, worst_case_tokens
from chainray.plan.advisor import ENQUEUED_SHARE
from chainray.plan.profiles import endpoint_label
from chainray.plan.schedule import resolve
from chainray.results import RunResult, StepResult
from chainray.runner.batch_jobs import JobEntry, LineState, line_outcome, split_custom_id
from chainray.runner.batch_phases import (
    BatchReport,
    BatchServices,
    RunState,
    journal_step,
    step_result,
)
from chainray.runner.jobs import RunJob, models_of
from chainray.runner.step_exec import build_messages, falls_back
from chainray.text import error_text
from chainray.tokens import estimate_prompt_tokens

__all__ = ["BatchExecution"]

Outcome = Completion | EndpointError
Sent = list[tuple["LineState", Outcome, BatchJob | None]]
T = TypeVar("T")


class BatchExecution:
    """Runs ``jobs`` (runs of one batch, journals opened) through the Batch API."""

    def __init__(self, jobs: Iterable[RunJob], services: BatchServices) -> None:
        self.jobs, self.services = list(jobs), services
        self.report = BatchReport()
        self.learned: dict[str, dict[str, Adaptation]] = {}  # model -> what it rejected
        self.ends = time.monotonic() + services.wait_s  # for every job of this invocation
        self.endpoint = endpoint_label(services.base_url)  # as the job log keys its limits
        self._shared = threading.Lock()  # the report and the spend cap, across models' jobs
        # Jobs read whose steps are not journaled yet (file id -> turnaround): the log marks
        # them collected only after, so a job whose answers an interrupt or another model's
        # error left unjournaled is polled again by the resume, not sent again.
        self._read: dict[str, float | None] = {}

    def run(self, on_result: Callable[[RunResult], object] = lambda _: None
            ) -> list[RunResult]:
        """Every run's result, in the order of ``jobs``; ``on_result`` as each finishes."""
        adopted = self.adopt()
        states = [RunState(job.model_copy(update={
            "resumed": {**job.resumed, **adopted.get(job.run_id, {})}})) for job in self.jobs]
        by_run = {state.job.run_id: state for state in states}
        waiting: list[LineState] = []  # lines that failed, for the next job
        while True:
            for state in states:
                waiting += [self._line(state, step_id) for step_id in state.advance()]
            for state in states:
                if state.done and not state.reported:
                    state.reported = True
                    on_result(state.result(self.services.prices))
            if not waiting:
                break
            lines, waiting = waiting, []
            if self._left_s() <= 0:  # the deadline passed: nothing more is created
                for line in lines:
                    self._settle(line, _too_late(), None, by_run)
                continue
            for line, outcome, job in self._send(lines):
                if (again := self._settle(line, outcome, job, by_run)) is not None:
                    waiting.append(again)
            self._journaled()
        self.report.requests = self.services.client.requests
        stuck = [state.job.run_id for state in states if not state.done]
        if stuck:  # every ready step became a line and every line ends: cannot happen
            raise RuntimeError(f"batch runs left unfinished: {', '.join(stuck)}")
        return [state.result(self.services.prices) for state in states]

    def _line(self, state: RunState, step_id: str) -> LineState:
        request = state.request(step_id)
        return LineState(request=request,
                         messages=build_messages(request, state.upstream(step_id)),
                         models=models_of(request.settings))

    def _left_s(self) -> float:
        return max(0.0, self.ends - time.monotonic())

    # -- one job --------------------------------------------------------------------------
    def _send(self, lines: list[LineState]) -> Sent:
        """Send ``lines`` as a job per model, the models' jobs at once; a model's lines, once
        the endpoint has stated that model's enqueued-token limit (``JobLog.limits``, kept for
        a resume), in jobs under it, one after another, none after the deadline."""
        by_model: dict[str, list[LineState]] = {}
        for line in lines:
            by_model.setdefault(line.model, []).append(line)
        limits = self.services.log.limits_at(self.endpoint)
        turns = [partial(self._in_turn, _chunks(group, limits[model]) if model in limits
                         else [group]) for model, group in by_model.items()]
        return [sent for outcomes in _at_once(turns, self.services.client.stopping)
                for sent in outcomes]

    def _in_turn(self, chunks: list[list[LineState]]) -> Sent:
        outcomes: Sent = []
        for chunk in chunks:
            outcomes += self._send_job(chunk) if self._left_s() > 0 else [
                (line, _too_late(), None) for line in chunk]
        return outcomes

    def _send_job(self, lines: list[LineState], refusals: int = 0) -> Sent:
        """Create one job of ``lines`` (one model; under the spend cap), wait for it, map it
        back."""
        services, now = self.services, time.time()
        bodies = [line.line(services.base_url, self.learned.get(line.model, {}))
                  for line in lines]
        reservation = None
        if services.spend is not None:
            worst = sum(services.prices.cost(b["body"]["model"], *worst_case_tokens(b["body"]),
                                             batch=True) for b in bodies)
            with self._shared:
                reservation = services.spend.reserve(worst)
            if reservation is None:  # nothing is created: the steps say why
                return [(line, spend_cap_error(line.model), None) for line in lines]
        try:
            file_id = services.client.upload(bodies)
            services.log.uploaded(file_id, {line.custom_id: line.model for line in lines})
            job = services.client.create(file_id, {"chainray": "batch-api"})
            services.log.created(file_id, job.id)
        except BaseException:
            self._spent(reservation, 0.0)  # the invocation ends here, and its cap's book
            raise
        with self._shared:
            self.report.jobs += 1
            self.report.lines += len(lines)
        for line, body in zip(lines, bodies, strict=True):
            line.sent_body = body["body"]
            line.first_sent_at = line.first_sent_at or now
            line.lines_sent += 1
            line.reply.attempts += 1
        services.say(f"batch job {job.id}: {len(lines)} line(s) created; polling")
        found = self._collect(JobEntry(file_id, {}, job.id, now))
        if _over_enqueued_limit(found[0]):
            self._spent(reservation, 0.0)
            return self._refused(lines, found[0], refusals)
        outcomes = [(line, line_outcome(found[1].get(line.custom_id), line.messages)
                     if found[0].status != "failed" else _job_failed(found[0]), found[0])
                    for line in lines]
        self._spent(reservation, sum(
            services.prices.cost(line.model, o.prompt_tokens, o.completion_tokens,
                                 o.cached_tokens, batch=True)
            for line, o, _ in outcomes if isinstance(o, Completion)))
        return outcomes

    def _spent(self, reservation: int | None, usd: float) -> None:
        """Replace a job's reservation under the spend cap by what it cost."""
        if reservation is not None:
            with self._shared:
                self.services.spend.settle(reservation, usd)

    def _refused(self, lines: list[LineState], refused: BatchJob, refusals: int) -> Sent:
        """A job refused as a whole for the endpoint's enqueued-token limit: nothing in it
        ran, so its lines are not counted. Too many tokens at once: they go again in jobs
        under the limit the error states (in halves when it states none), and later jobs are
        cut to it from the start. Lines that fit and were refused all the same wait for the
        queue (other jobs hold it), a few times within the deadline; then they fail, and a
        resume sends them."""
        services, model = self.services, lines[0].model
        for line in lines:
            line.lines_sent -= 1
            line.reply.attempts -= 1
        with self._shared:
            self.report.lines -= len(lines)
        stated = _stated_limit(refused.errors)
        if stated:
            services.log.limit(model, stated, self.endpoint)
        tokens = sum(estimate_prompt_tokens(line.messages) for line in lines)
        said = f"{model}'s limit, {stated:,} enqueued tokens" if stated else \
            f"no limit stated for {model}"
        if len(lines) > 1 and (not stated or tokens > ENQUEUED_SHARE * stated):
            chunks = _chunks(lines, stated) if stated else [lines[:len(lines) // 2],
                                                             lines[len(lines) // 2:]]
            services.say(f"batch job {refused.id} refused for the endpoint's enqueued-token "
                          f"limit ({said}): sending its {len(lines)} line(s) as "
                          f"{len(chunks)} jobs, one after another")
            return self._in_turn(chunks)
        if stated and tokens > stated:
            return [(line, EndpointError(
                f"the line's ~{tokens:,} prompt tokens are over the endpoint's enqueued-token "
                f"limit of {stated:,} (batch job {refused.id})", status=400,
                code="batch_too_large"), refused) for line in lines]
        pause = min(services.client.poll_first_s * 2 ** (refusals + 1),
                    services.client.poll_max_s)
        if refusals + 1 >= _QUEUE_TRIES or self._left_s() <= pause:
            return [(line, EndpointError(
                f"the endpoint's enqueued-token queue stayed full ({said}; other jobs in "
                f"progress) through {refusals + 1} tries; --resume sends it later",
                status=429, code="batch_queue_full"), refused) for line in lines]
        services.say(f"batch job {refused.id} refused for the endpoint's enqueued-token limit "
                     f"({said}) though its {len(lines)} line(s) fit it: other jobs hold the "
                     f"queue; trying again in {pause:.0f}s")
        services.client.pause(pause)
        return self._send_job(lines, refusals + 1)

    def _collect(self, entry: JobEntry) -> tuple[BatchJob, dict[str, dict]]:
        """Wait for a job to end (cancelling it when ``wait_s`` has run out), then read its
        output and error files: (the job, result lines by custom_id). The log marks it
        collected once the caller has journaled its steps (``_journaled``)."""
        client, services = self.services.client, self.services
        job = client.wait(entry.job_id, self._left_s())
        if not job.ended:
            services.say(f"batch job {job.id} did not end in time: cancelling it; the lines "
                         "it finished are kept")
            try:
                client.cancel(job.id)
                job = client.wait(job.id, 600.0)  # a cancellation ends within minutes
            except EndpointError as error:
                services.say(f"batch job {job.id} could not be cancelled ({error}); a "
                             "resume polls it")
        lines = {line["custom_id"]: line
                 for line in client.read(job.output_file_id) + client.read(job.error_file_id)}
        turnaround = time.time() - entry.created_at if entry.created_at and not \
            _over_enqueued_limit(job) else None  # a refused job ran nothing: no turnaround
        with self._shared:
            self._read[entry.file_id] = round(turnaround, 3) if turnaround else None
            if turnaround is not None:
                self.report.turnaround_s.append(round(turnaround, 3))
        services.say(f"batch job {job.id} {job.status}: {job.completed} line(s) completed, "
                     f"{job.failed} failed")
        return job, lines

    def _journaled(self) -> None:
        """Mark collected the jobs read so far: their answered steps are journaled now."""
        with self._shared:
            read, self._read = self._read, {}
        for file_id, turnaround in read.items():
            self.services.log.collected(file_id, turnaround)

    def _settle(self, line: LineState, outcome: Outcome, job: BatchJob | None,
                runs: dict[str, RunState]) -> LineState | None:
        """Finish a step from its line's outcome, or return the line for the next job."""
        state, limit = runs[line.request.run_id], self.services.max_lines
        if isinstance(outcome, Completion):
            line.reply.answered(outcome)
            schema = line.request.step.output_schema
            problem = schema_problem(outcome.text, schema) if schema is not None else None
            if problem is None:
                state.finish(step_result(line, "ok", job, output=outcome.text,
                                         truncated=outcome.truncated))
                return None
            if not line.corrected and line.lines_sent < limit:
                line.messages += [{"role": "assistant", "content": outcome.text},
                                  correction_message(problem)]
                line.corrected = True
                return line
            outcome = EndpointError(f"the reply did not follow the step's schema twice: "
                                    f"{problem}", status=200, code="schema_mismatch")
        if outcome.code != "spend_cap" and self._again(line, outcome):
            return line
        state.finish(step_result(line, "error", job, error=error_text(outcome),
                                 error_code=error_code(outcome)))
        return None

    def _again(self, line: LineState, error: EndpointError) -> bool:
        """Whether a failed line goes into the next job: adapted (a parameter the model
        rejected), at the next fallback model, or retried within its attempts."""
        learned = learn_adaptation(error.status, error.code, error.param, error.message,
                                   line.sent_body)
        if learned is not None and learned.param not in self.learned.get(line.model, {}):
            self.learned.setdefault(line.model, {})[learned.param] = learned
            self.services.say(describe(line.model, learned, line.sent_body.get(learned.param)))
            return True
        if line.model_index + 1 < len(line.models) and falls_back(error):
            line.model_index += 1
            return True
        return error.retryable and line.lines_sent < self.services.max_lines

    # -- a resume -------------------------------------------------------------------------
    def adopt(self) -> dict[str, dict[str, StepResult]]:
        """Collect the jobs an earlier invocation created and did not collect (a job whose
        creation was not logged is looked up by its file): their answered lines, by run and
        step, journaled as finished steps. Nothing is created for them again."""
        found: dict[str, dict[str, StepResult]] = {}
        client, log = self.services.client, self.services.log
        jobs = {job.run_id: job for job in self.jobs}
        for entry in log.unfinished():
            if entry.job_id is None:
                if (job := client.find(entry.file_id)) is None:
                    log.collected(entry.file_id, None)  # never created: nothing to collect
                    continue
                log.created(entry.file_id, job.id)
                entry = log.entries[entry.file_id]
            self.services.say(f"resuming: polling batch job {entry.job_id}, created by an "
                              "earlier invocation (not created again)")
            self.report.adopted_jobs += 1
            job, lines = self._collect(entry)
            for cid, model in entry.models.items():
                run_id, step_id = split_custom_id(cid)
                if run_id not in jobs or step_id in jobs[run_id].resumed:
                    continue
                result = _adopted(jobs[run_id], step_id, model, lines.get(cid), job,
                                  entry.created_at or 0.0)
                if result is not None:
                    found.setdefault(run_id, {})[step_id] = result
                    journal_step(jobs[run_id], result)
            self._journaled()
        return found


def _adopted(run: RunJob, step_id: str, model: str, line: dict | None,
             job: BatchJob, created: float) -> StepResult | None:
    """The step an adopted job answered (None: not answered, or off its schema: it is
    planned again)."""
    outcome = line_outcome(line, [])
    schema = run.chain.by_id[step_id].output_schema
    if not isinstance(outcome, Completion) or (
            schema is not None and schema_problem(outcome.text, schema) is not None):
        return None
    depends_on = resolve(run.chain, run.strategy).plan[step_id].depends_on
    return StepResult(id=step_id, depends_on=depends_on, status="ok", output=outcome.text,
                      model=model, attempts=1,
                      prompt_tokens=outcome.prompt_tokens,
                      completion_tokens=outcome.completion_tokens,
                      cached_tokens=outcome.cached_tokens, truncated=outcome.truncated,
                      usage_estimated=outcome.usage_estimated, batch_job=job.id,
                      started_at=created, finished_at=time.time())


def _too_late() -> EndpointError:
    return EndpointError("the deadline (--deadline) passed before this step was sent; "
                         "resume the batch to send it", code="timeout")


_QUEUE_TRIES = 8  # a job that fits the enqueued-token limit, refused while others hold it


def _over_enqueued_limit(job: BatchJob) -> bool:
    return job.status == "failed" and "token_limit_exceeded" in job.error_codes


def _stated_limit(errors: str) -> int | None:
    """The enqueued-token limit an error states ("... Limit: 2,000,000 enqueued tokens")."""
    found = re.search(r"Limit:\s*([\d,]+)\s+enqueued tokens", errors)
    return int(found[1].replace(",", "")) if found and found[1].strip(",") else None


def _chunks(lines: list[LineState], limit: int) -> list[list[LineState]]:
    """``lines`` in order, in groups whose estimated prompt tokens stay within
    ``ENQUEUED_SHARE`` of ``limit`` (a line over it alone: the server says whether it fits)."""
    chunks: list[list[LineState]] = [[]]
    total = 0
    for line in lines:
        tokens = estimate_prompt_tokens(line.messages)
        if chunks[-1] and total + tokens > ENQUEUED_SHARE * limit:
            chunks.append([])
            total = 0
        chunks[-1].append(line)
        total += tokens
    return [chunk for chunk in chunks if chunk]


def _job_failed(job: BatchJob) -> EndpointError:
    """A job refused as a whole (its input did not validate): each line says why; a new
    job of the same lines would be refused the same way."""
    return EndpointError(f"the batch job {job.id} failed: {job.errors or 'no reason given'}",
                         status=400, code="batch_failed")


def _at_once(calls: list[Callable[[], T]], stopping: threading.Event) -> list[T]:
    """Each call's value, the calls run at once in threads (one alone runs here). The first
    exception, or a Ctrl-C while they run, sets ``stopping`` (the others' waits then raise
    ``Stopped``, their jobs journaled for a resume) and is raised here."""
    if len(calls) == 1:
        return [calls[0]()]
    values: list = [None] * len(calls)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            values[index] = calls[index]()
        except BaseException as error:  # noqa: BLE001 - raised in the caller's thread
            errors.append(error)
            stopping.set()

    threads = [threading.Thread(target=run, args=(index,), daemon=True,
                                name=f"chainray-batch-{index}") for index in range(len(calls))]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except BaseException:
        stopping.set()
        raise
    if errors:
        raise next((e for e in errors if not isinstance(e, Stopped)), errors[0])
    return values
