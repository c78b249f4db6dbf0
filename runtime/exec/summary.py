"""Fold step results into a ``RunResult``: totals, cost and the measured critical path."""

from __future__ import annotations

from collections.abc import Mapping

from chainray.plan.cost import PriceTable
from chainray.plan.schedule import Schedule, longest_path
from chainray.results import RunResult, StepResult
from chainray.spec.chain import Chain

__all__ = ["summarize_run"]


def summarize_run(chain: Chain, schedule: Schedule, results: Mapping[str, StepResult],
                  latency_ms: float, run_id: str, prices: PriceTable) -> RunResult:
    ordered = tuple(results[plan.id] for plan in schedule.steps)
    final = results[schedule.final]
    failed = [r for r in ordered if r.status == "error"]
    _, critical_ms = longest_path({plan.id: plan.depends_on for plan in schedule.steps},
                                  lambda step_id: results[step_id].latency_ms)
    prompt = sum(r.prompt_tokens for r in ordered)
    completion = sum(r.completion_tokens for r in ordered)
    calls = sum(r.attempts for r in ordered if chain.by_id[r.id].kind == "llm")
    cost = sum(prices.cost(r.model, r.prompt_tokens, r.completion_tokens)
               for r in ordered if r.model)
    status = "failed" if final.status != "ok" else "partial" if failed else "ok"
    error = None if status == "ok" else (
        final.error if final.status == "error" else
        "; ".join(f"{r.id}: {r.error}" for r in failed) or final.error)
    return RunResult(
        scenario=chain.name, strategy=schedule.strategy, shape=schedule.shape,
        status=status, error=error, run_id=run_id, phases=schedule.phases,
        latency_ms=round(latency_ms, 1), critical_path_ms=round(critical_ms, 1),
        queued_ms=round(sum(r.queued_ms for r in ordered), 1),
        total_tokens=prompt + completion, prompt_tokens=prompt, completion_tokens=completion,
        api_calls=calls, retries=sum(max(0, r.attempts - 1) for r in ordered
                                     if chain.by_id[r.id].kind == "llm"),
        rate_limited=sum(r.rate_limited for r in ordered), estimated_cost=round(cost, 6),
        output_length=len(final.output), output=final.output, steps=ordered)
