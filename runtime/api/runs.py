"""What the Python API returns for many runs: every run asked for, in the given order, with
what the spend cap did.

When ``max_cost`` stops admission, the runs it kept from starting do not vanish from the list:
each keeps its place as a ``RunResult`` with status ``failed``, every step ``skipped`` and an
error that starts with ``not started:``, nothing sent; ``RunList.not_started`` names them. So a
caller tells apart the runs that finished (``ok``), the partial ones (a call refused
mid-run: ``partial`` or ``failed``) and those that never started.

Comparisons judge only the runs that finished ``ok``: ``fastest()`` and ``cheapest()`` never
return a failed or partial run (one that stopped early is quick and cheap), and ``verdicts()``
gives ``chainray bench``'s lines, with ties inside the spread of repeats and the failed
strategies named.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from chainray.api.options import as_chain, cap_summary
from chainray.guards.call_guards import SPEND_CAP
from chainray.plan.advisor import Advice, Objective, advise
from chainray.plan.cost import load_prices
from chainray.plan.predict import Prediction
from chainray.plan.schedule import STRATEGIES, resolve
from chainray.report.bench import best_of, summarize_bench, verdicts
from chainray.results import RunResult, StepResult
from chainray.runner.jobs import RunJob
from chainray.runner.summary import summarize_run
from chainray.spec.chain import Chain

if TYPE_CHECKING:
    from chainray.api.session import Driver

__all__ = ["RunList", "run_in_order", "not_started_result", "NOT_STARTED"]

NOT_STARTED = "not started"


class RunList(list[RunResult]):
    """Results in the order the runs were given; a plain list with two more attributes.

    ``not_started``: the run ids the spend cap kept from starting (resume them with a higher
    ``max_cost``); ``spend``: the cap's account (``cap_usd``, ``spent_usd``, ``refused``,
    ``stopped``), ``None`` without ``max_cost``; ``batch_id``: what ``run_many(...,
    resume=batch_id)`` continues; ``resumed``: the run ids an earlier invocation had finished
    (their results are the recorded ones; nothing was sent for them).

        runs = chainray.bench(chain, strategies=["parallel", "hybrid"], repeat=3)
        runs.ok                 # the runs that finished; runs.failed: the others
        runs.fastest()          # the quickest ok run (None when none finished)
        runs.verdicts()[0]      # "Fastest: hybrid (2.05s, 1.5x faster than parallel)", or a tie
        runs.advice(chain, "cost").strategy    # the pick, as plan's advisor weighs it
        never = [r for r in runs if r.run_id in runs.not_started]
    """

    def __init__(self, results: Iterable[RunResult] = (), not_started: Iterable[str] = (),
                 spend: dict | None = None, batch_id: str | None = None,
                 resumed: Iterable[str] = ()) -> None:
        super().__init__(results)
        self.not_started = list(not_started)
        self.spend = spend
        self.batch_id = batch_id
        self.resumed = list(resumed)

    @property
    def ok(self) -> list[RunResult]:
        """The runs that finished with status ``ok``, in order."""
        return [run for run in self if run.status == "ok"]

    @property
    def failed(self) -> list[RunResult]:
        """The runs that did not finish ``ok`` (``partial``, ``failed``, not started)."""
        return [run for run in self if run.status != "ok"]

    def fastest(self) -> RunResult | None:
        """The ok run with the lowest latency; ``None`` when no run finished ok."""
        return min(self.ok, key=lambda run: run.latency_ms, default=None)

    def cheapest(self) -> RunResult | None:
        """The ok run with the lowest estimated cost; ``None`` when no run finished ok."""
        return min(self.ok, key=lambda run: run.estimated_cost, default=None)

    def verdicts(self) -> list[str]:
        """``chainray bench``'s verdict lines over these runs, by strategy: fastest, cheapest,
        longest output, each judged on ok runs, a tie when the spreads of repeats overlap."""
        return verdicts(summarize_bench(self)) if self else []

    def advice(self, chain: Chain | str, objective: Objective = "latency") -> Advice | None:
        """The strategy to pick for ``objective`` from what these runs of ``chain``
        measured (medians of the ok runs), weighed as ``chainray.plan`` weighs predictions:
        among the strategies that keep every declared dependency, the best for the
        objective; the reasons compare the others (and say what they withhold), and name
        the strategies not weighed: those with no ok run, and the Batch API rows (their time
        is the provider's queue, not the schedule's). ``None`` when no strategy has an ok
        online run."""
        summary = summarize_bench(self)
        rows = [row for row in summary if row.strategy in STRATEGIES and row.failed < row.runs]
        if not rows:
            return None
        measured = {row.strategy: Prediction(
            strategy=row.strategy, makespan_s=row.latency_ms / 1000, prompt_tokens=0,
            completion_tokens=0, total_tokens=round(row.total_tokens),
            cost=row.estimated_cost, calls=round(row.api_calls)) for row in rows}
        advice = advise(as_chain(chain), objective, measured, measured=True)
        field = {"latency": "latency_ms", "cost": "estimated_cost"}.get(objective)
        weighed = [row for row in rows if row.strategy in advice.candidates]
        best, second, clear = best_of(weighed, field, lowest=True) if field else (None,) * 3
        tie = [] if clear or second is None else [
            f"{best.strategy} and {second.strategy} overlap over the repeats: a tie for "
            f"{objective}, within the noise"]
        unweighed = [f"{row.strategy}: no ok run, not weighed" if row.strategy in STRATEGIES
                     else f"{row.strategy}: a Batch API row, compared above, not weighed "
                     "(its time is the provider's queue, not the schedule's)"
                     for row in summary if row not in rows]
        return advice.model_copy(update={"reasons": (*advice.reasons, *tie, *unweighed)})


def not_started_result(job: RunJob, spend: dict | None) -> RunResult:
    """The place of a run the spend cap kept from starting: every step skipped, nothing
    sent, the error naming the cap and the spend, each step's code ``spend_cap`` (so
    ``stopped_by_cap`` holds for it)."""
    why = f"{NOT_STARTED}: {SPEND_CAP}"
    if summary := cap_summary(spend):
        why += f" ({summary})"
    schedule = resolve(job.chain, job.strategy)
    steps = {plan.id: StepResult(id=plan.id, depends_on=plan.depends_on, status="skipped",
                                 error=why, error_code="spend_cap")
             for plan in schedule.steps}
    return summarize_run(job.chain, schedule, steps, 0.0, job.run_id, load_prices(job.prices))


def run_in_order(driver: Driver, jobs: Sequence[RunJob], window: int,
                 label: str = "runs", on_result: Callable[[RunResult], object] | None = None,
                 forecast_s: float | None = None) -> RunList:
    """Run ``jobs`` on ``driver`` (at most ``window`` at once): one result per job, in the
    jobs' order, a run the spend cap kept from starting in its place. ``on_result`` sees
    each result as its run finishes."""
    order = {job.run_id: i for i, job in enumerate(jobs)}
    results: list[RunResult | None] = [None] * len(jobs)
    for result in driver.run_many(jobs, window=window, label=label, total=len(jobs),
                                  forecast_s=forecast_s):
        results[order[result.run_id]] = result
        if on_result is not None:
            on_result(result)
    spend = driver.spend_state()
    pairs = list(zip(jobs, results, strict=True))
    return RunList([result or not_started_result(job, spend) for job, result in pairs],
                   not_started=[job.run_id for job, result in pairs if result is None],
                   spend=spend)
