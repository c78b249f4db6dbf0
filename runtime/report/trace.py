"""The runs of a timeline as Chrome Trace Event JSON (what ``ray timeline`` writes), which
opens in Perfetto (ui.perfetto.dev) or chrome://tracing: one process per run, one thread per
step, a slice per step and, nested in it, per attempt a "queued" slice, an "attempt N" slice
(in flight, its outcome in args) and a "backoff" slice before the next attempt; flow arrows
along dependencies.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from chainray.report.run_steps import backoff_s, critical_path, outcomes
from chainray.results import Attempt, RunResult, StepResult

__all__ = ["trace_json", "write_trace"]

_DUPLICATE_TID = 1000  # trace thread of a step's hedged duplicates: step's thread + this


def trace_json(results: Sequence[RunResult]) -> dict:
    """Chrome Trace Event format: ``{"traceEvents": [...], "displayTimeUnit": "ms"}``."""
    events: list[dict] = []
    ran = [s for r in results for s in r.steps if s.started_at]
    t0 = min((s.started_at for s in ran), default=0.0)
    flow = 0
    for pid, result in enumerate(results, 1):
        events.append({"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {
            "name": f"{result.scenario} / {result.strategy} (run {result.run_id})"}})
        on_path = set(critical_path(result))
        steps = sorted((s for s in result.steps if s.started_at), key=lambda s: s.started_at)
        tid_of = {s.id: i for i, s in enumerate(steps, 1)}
        for step in steps:
            tid = tid_of[step.id]
            events.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid,
                           "args": {"name": step.id}})
            start_us = (step.started_at - t0) * 1e6
            args = {"status": step.status, "attempts": step.attempts,
                    "rate_limited": step.rate_limited, "prompt_tokens": step.prompt_tokens,
                    "completion_tokens": step.completion_tokens,
                    "cached_tokens": step.cached_tokens,
                    "critical_path": step.id in on_path}
            if step.attempt_log:
                args["outcomes"] = outcomes(step)
                args["backoff_s"] = round(backoff_s(step), 3)
                events.append(_slice(step.id, "llm" if step.model else "step", pid, tid,
                                     step.started_at - t0, step.finished_at - t0, args))
                events.extend(_attempt_slices(step, pid, tid, t0))
            else:
                queued_us = min(step.queued_ms * 1000,
                                (step.finished_at - step.started_at) * 1e6)
                if queued_us > 0:
                    events.append({"name": "queued", "cat": "permit", "ph": "X", "pid": pid,
                                   "tid": tid, "ts": round(start_us, 1),
                                   "dur": round(queued_us, 1)})
                events.append({"name": step.id, "cat": "llm" if step.model else "step",
                               "ph": "X", "pid": pid, "tid": tid,
                               "ts": round(start_us + queued_us, 1),
                               "dur": round((step.finished_at - step.started_at) * 1e6
                                            - queued_us, 1), "args": args})
            for dep in step.depends_on:
                before = next((s for s in steps if s.id == dep), None)
                if before is None:
                    continue
                flow += 1
                events.append({"name": "depends", "cat": "dependency", "ph": "s", "id": flow,
                               "pid": pid, "tid": tid_of[dep],
                               "ts": round((before.finished_at - t0) * 1e6 - 1, 1)})
                events.append({"name": "depends", "cat": "dependency", "ph": "f", "bp": "e",
                               "id": flow, "pid": pid, "tid": tid,
                               "ts": round(start_us, 1)})
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def _slice(name: str, cat: str, pid: int, tid: int, start_s: float, end_s: float,
           args: dict | None = None) -> dict:
    event = {"name": name, "cat": cat, "ph": "X", "pid": pid, "tid": tid,
             "ts": round(start_s * 1e6, 1), "dur": round(max(0.0, end_s - start_s) * 1e6, 1)}
    return {**event, "args": args} if args else event


def _attempt_slices(step: StepResult, pid: int, tid: int, t0: float) -> list[dict]:
    """Nested in the step's slice: per attempt "queued", "attempt N" and the "backoff" before
    the next one. Clamped into the step's span, so viewers nest them."""
    low, high = step.started_at - t0, step.finished_at - t0

    def clamp(t: float) -> float:
        return min(high, max(low, t - t0))

    events: list[dict] = []
    previous: Attempt | None = None
    for number, attempt in enumerate(step.attempt_log, 1):
        lane = tid
        if previous is not None and attempt.queued_at < previous.finished_at:
            # A hedged duplicate overlaps the request it doubles: a thread of its own, so
            # viewers still nest each thread's slices.
            lane = tid + _DUPLICATE_TID
            events.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": lane,
                           "args": {"name": f"{step.id} (duplicate)"}})
        elif previous is not None and attempt.queued_at > previous.finished_at:
            events.append(_slice("backoff", "retry", pid, tid, clamp(previous.finished_at),
                                 clamp(attempt.queued_at)))
        if attempt.sent_at > attempt.queued_at:
            events.append(_slice("queued", "permit", pid, lane, clamp(attempt.queued_at),
                                 clamp(attempt.sent_at)))
        events.append(_slice(f"attempt {number}", "request", pid, lane, clamp(attempt.sent_at),
                             clamp(attempt.finished_at),
                             {"outcome": attempt.outcome, "code": attempt.code}))
        if lane == tid:
            previous = attempt
    return events


def write_trace(path: str, results: Sequence[RunResult]) -> None:
    Path(path).write_text(json.dumps(trace_json(results)), encoding="utf-8")
