"""What a run's steps did, read from their results: the measured critical path, and the
retry backoff and outcomes of each step's attempts (shared by the timeline and the trace)."""

from __future__ import annotations

from chainray.results import RunResult, StepResult

__all__ = ["critical_path", "backoff_s", "outcomes"]


def backoff_s(step: StepResult) -> float:
    """Seconds the step waited between attempts (retry backoff), from its attempt log."""
    log = step.attempt_log
    return sum(max(0.0, b.queued_at - a.finished_at) for a, b in zip(log, log[1:], strict=False))


def outcomes(step: StepResult) -> str:
    """Each attempt's outcome in order: "429", the error's code, "ok" or "cancelled"."""
    return ", ".join("429" if a.outcome == "rate_limited" else
                     a.code or a.outcome if a.outcome == "error" else a.outcome
                     for a in step.attempt_log)


def critical_path(result: RunResult) -> list[str]:
    """The chain of steps, each waiting for the one before, that ends last (measured)."""
    steps = {s.id: s for s in result.steps if s.started_at}
    best: dict[str, list[str]] = {}

    def path(step_id: str) -> list[str]:
        if step_id not in best:
            deps = [d for d in steps[step_id].depends_on if d in steps]
            before = max((path(d) for d in deps), key=lambda p: steps[p[-1]].finished_at,
                         default=[])
            best[step_id] = [*before, step_id]
        return best[step_id]

    if not steps:
        return []
    last = max(steps.values(), key=lambda s: s.finished_at)
    return path(last.id)
