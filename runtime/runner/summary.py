"""Fold step results into a ``RunResult``: totals, cost and the measured critical path.

Counts (calls, retries, 429s, tokens, cost) cover what this invocation sent; steps finished by
an earlier invocation of a resumed run count only in ``run_totals``, the whole run's figures.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from chainray.plan.cost import PriceTable
from chainray.plan.schedule import Schedule, longest_path
from chainray.results import RunResult, RunTotals, StepResult
from chainray.spec.chain import Chain

__all__ = ["summarize_run", "run_attributes"]


def _totals(chain: Chain, steps: Iterable[StepResult], prices: PriceTable) -> RunTotals:
    steps = list(steps)
    llm = [r for r in steps if chain.by_id[r.id].kind == "llm"]
    prompt = sum(r.prompt_tokens for r in steps)
    completion = sum(r.completion_tokens for r in steps)
    cost = sum(prices.cost(r.model, r.prompt_tokens, r.completion_tokens, r.cached_tokens,
                           batch=r.batch_job is not None) for r in steps if r.model)
    return RunTotals(api_calls=sum(r.attempts for r in llm),
                     retries=sum(max(0, r.attempts - 1) for r in llm),
                     rate_limited=sum(r.rate_limited for r in steps),
                     prompt_tokens=prompt, completion_tokens=completion,
                     cached_tokens=sum(r.cached_tokens for r in steps),
                     total_tokens=prompt + completion, estimated_cost=round(cost, 6))


def summarize_run(chain: Chain, schedule: Schedule, results: Mapping[str, StepResult],
                  latency_ms: float, run_id: str, prices: PriceTable,
                  resumed: Collection[str] = (), isolated: bool = False) -> RunResult:
    """``isolated`` (on_error isolate): a run whose final step was skipped after a failure but
    whose other branches finished is ``partial``, not ``failed``."""
    ordered = tuple(results[plan.id] for plan in schedule.steps)
    final = results[schedule.final]
    failed = [r for r in ordered if r.status == "error"]
    _, critical_ms = longest_path({plan.id: plan.depends_on for plan in schedule.steps},
                                  lambda step_id: results[step_id].latency_ms)
    now = _totals(chain, (r for r in ordered if r.id not in resumed), prices)
    status = "failed" if final.status != "ok" else "partial" if failed else "ok"
    if isolated and failed and status == "failed" and any(r.status == "ok" for r in ordered):
        status = "partial"
    error = None if status == "ok" else (
        final.error if final.status == "error" else
        "; ".join(f"{r.id}: {r.error}" for r in failed) or final.error)
    # The code of the failure ``error`` names first: the final step's, else the first failed.
    cause = final if final.status == "error" or not failed else failed[0]
    error_code = None if status == "ok" else cause.error_code
    return RunResult(
        scenario=chain.name, strategy=schedule.strategy, shape=schedule.shape,
        status=status, error=error, error_code=error_code, run_id=run_id, phases=schedule.phases,
        latency_ms=round(latency_ms, 1), critical_path_ms=round(critical_ms, 1),
        queued_ms=round(sum(r.queued_ms for r in ordered), 1),
        total_tokens=now.total_tokens, prompt_tokens=now.prompt_tokens,
        completion_tokens=now.completion_tokens, cached_tokens=now.cached_tokens,
        api_calls=now.api_calls,
        retries=now.retries, rate_limited=now.rate_limited,
        estimated_cost=now.estimated_cost, output_length=len(final.output),
        output=final.output, steps=ordered,
        resumed_steps=tuple(r.id for r in ordered if r.id in resumed),
        run_totals=_totals(chain, ordered, prices))


def run_attributes(result: RunResult) -> dict:
    """A run span's figures, named as the JSON fields are (what this invocation sent)."""
    return {f"chainray.{name}": getattr(result, name) for name in (
        "status", "shape", "prompt_tokens", "completion_tokens", "cached_tokens",
        "api_calls", "retries", "rate_limited", "estimated_cost", "latency_ms", "queued_ms")}
