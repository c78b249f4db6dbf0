"""The Coordinator's dispatch loop stepped without Ray: dataflow order, failure policies,
resubmission of steps whose process died."""

from __future__ import annotations

import asyncio

from chainray.plan.schedule import resolve
from chainray.results import StepResult
from chainray.runner.dispatch import dispatch
from chainray.spec.chain import chain_from_dict

DIAMOND = chain_from_dict({"name": "d", "steps": [
    {"id": "A", "prompt": "a"}, {"id": "B", "after": ["A"], "prompt": "{A}"},
    {"id": "C", "after": ["A"], "prompt": "{A}"},
    {"id": "D", "after": ["B", "C"], "prompt": "{B}{C}"}]})


class WorkerDied(Exception):
    """Stands for Ray's RayActorError and kin."""


def died(exc: BaseException) -> bool:
    return isinstance(exc, WorkerDied)


def executor(delays: dict[str, float], fail: set[str] = frozenset(), crash: dict | None = None,
             raises: set[str] = frozenset()):
    log: list[tuple[str, str]] = []
    crashes = dict(crash or {})

    def start(step_id, upstream):
        async def run():
            seen = {k: (v if isinstance(v, StepResult) else await v).output
                    for k, v in upstream.items()}
            log.append(("start", step_id))
            await asyncio.sleep(delays.get(step_id, 0.01))
            log.append(("end", step_id))
            if crashes.get(step_id, 0) > 0:
                crashes[step_id] -= 1
                raise WorkerDied("worker died")
            if step_id in raises:
                raise ValueError("bad reply\n  Traceback (most recent call last):\x1b[31m"
                                 + "x" * 2000)
            status = "error" if step_id in fail else "ok"
            return StepResult(id=step_id, status=status, output=f"{step_id}<{','.join(seen)}>")
        return asyncio.ensure_future(run())

    return start, log


async def test_each_step_starts_when_its_own_dependencies_finish():
    start, log = executor({"B": 0.05, "C": 0.2})
    results = await dispatch(resolve(DIAMOND, "hybrid"), start)
    assert log.index(("start", "B")) > log.index(("end", "A"))
    assert log.index(("start", "D")) > log.index(("end", "C"))
    assert results["D"].output == "D<B,C>"


async def test_fail_policy_skips_what_was_not_started():
    start, log = executor({}, fail={"A"})
    results = await dispatch(resolve(DIAMOND, "hybrid"), start, on_error="fail")
    assert {k: r.status for k, r in results.items()} == {"A": "error", "B": "skipped",
                                                         "C": "skipped", "D": "skipped"}
    assert ("start", "B") not in log


async def test_continue_policy_runs_on_with_failures():
    start, _ = executor({}, fail={"B"})
    results = await dispatch(resolve(DIAMOND, "hybrid"), start, on_error="continue")
    assert results["B"].status == "error" and results["D"].status == "ok"


async def test_a_step_whose_process_died_is_started_again_boundedly():
    start, log = executor({}, crash={"B": 1})
    updates = []
    results = await dispatch(resolve(DIAMOND, "hybrid"), start, is_process_death=died,
                             on_update=lambda s, state, r: updates.append((s, state)))
    assert results["B"].status == "ok" and log.count(("start", "B")) == 2
    assert ("B", "resubmitted") in updates
    start, _ = executor({}, crash={"B": 5})
    results = await dispatch(resolve(DIAMOND, "hybrid"), start, resubmits=2,
                             is_process_death=died)
    assert results["B"].status == "error" and "worker died" in results["B"].error


async def test_a_step_that_raised_is_an_error_once_never_resubmitted():
    start, log = executor({}, raises={"B"})
    results = await dispatch(resolve(DIAMOND, "hybrid"), start, is_process_death=died)
    assert log.count(("start", "B")) == 1
    error = results["B"].error
    assert results["B"].status == "error" and error.startswith("ValueError: bad reply")
    assert "\n" not in error and "\x1b" not in error and len(error) <= 300
    assert results["D"].status == "skipped"  # the fail policy still applies


async def test_a_step_that_raised_follows_the_continue_policy():
    start, log = executor({}, raises={"B"})
    results = await dispatch(resolve(DIAMOND, "hybrid"), start, on_error="continue",
                             is_process_death=died)
    assert results["B"].status == "error" and results["D"].status == "ok"
    assert ("start", "D") in log


async def test_the_full_detail_of_a_raised_step_goes_to_the_debug_log(caplog):
    start, _ = executor({}, raises={"B"})
    with caplog.at_level("DEBUG", logger="chainray"):
        await dispatch(resolve(DIAMOND, "hybrid"), start, is_process_death=died)
    detail = [r for r in caplog.records if r.name == "chainray.dispatch"]
    assert detail and "x" * 2000 in caplog.text  # the error field holds 300 characters


async def test_under_parallel_a_python_step_receives_its_upstream_and_llm_steps_still_fan_out():
    """The README's chain: a python step reading upstream["facts"] used to get {} under
    parallel (KeyError, the final step skipped). Now it starts after facts and sees it."""
    chain = chain_from_dict({"name": "demo", "steps": [
        {"id": "facts", "prompt": "f"}, {"id": "other", "prompt": "o"},
        {"id": "count", "kind": "python", "call": "builtins:len", "after": ["facts"]},
        {"id": "summary", "after": ["facts", "other", "count"],
         "prompt": "{facts} {other} {count}"}]})
    start, log = executor({"facts": 0.05, "other": 0.05})
    results = await dispatch(resolve(chain, "parallel"), start)
    assert all(r.status == "ok" for r in results.values())
    assert results["count"].output == "count<facts>"
    assert log.index(("start", "count")) > log.index(("end", "facts"))
    assert log.index(("start", "other")) < log.index(("end", "facts"))  # no wait for LLMs
    assert results["summary"].output == "summary<facts,other,count>"


def count_words(inputs, upstream):
    """The README's python step: it reads its declared upstream."""
    return str(len(upstream["facts"].split()))


async def test_the_readmes_python_step_reads_its_upstream_under_every_strategy():
    from chainray.runner.step_exec import StepRequest, execute_python_step
    from chainray.spec.chain import ModelSettings

    chain = chain_from_dict({"name": "demo", "inputs": {"topic": "tea"}, "steps": [
        {"id": "facts", "prompt": "List facts about {topic}"},
        {"id": "count", "kind": "python", "call": count_words, "after": ["facts"]},
        {"id": "summary", "after": ["facts", "count"],
         "prompt": "Sum up {facts:.500} in {count} words"}]})
    for strategy in ("sequential", "parallel", "hybrid"):
        schedule = resolve(chain, strategy)

        def start(step_id, upstream, schedule=schedule):
            async def run():
                seen = [v if isinstance(v, StepResult) else await v for v in upstream.values()]
                if step_id != "count":
                    return StepResult(id=step_id, status="ok", output="one two three")
                plan = schedule.plan[step_id]
                request = StepRequest(run_id="r", task_name="demo:count",
                                      step=chain.by_id["count"], settings=ModelSettings(),
                                      inputs=chain.inputs, sees=plan.sees,
                                      depends_on=plan.depends_on)
                return execute_python_step(request, seen)
            return asyncio.ensure_future(run())

        results = await dispatch(schedule, start)
        assert results["count"].status == "ok", (strategy, results["count"].error)
        assert results["count"].output == "3" and results["summary"].status == "ok"
