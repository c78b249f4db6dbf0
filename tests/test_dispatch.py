"""The Coordinator's dispatch loop stepped without Ray: dataflow order, failure policies,
resubmission of steps whose process died."""

from __future__ import annotations

import asyncio

from chainray.exec.dispatch import dispatch
from chainray.plan.schedule import resolve
from chainray.results import StepResult
from chainray.spec.chain import chain_from_dict

DIAMOND = chain_from_dict({"name": "d", "steps": [
    {"id": "A", "prompt": "a"}, {"id": "B", "after": ["A"], "prompt": "{A}"},
    {"id": "C", "after": ["A"], "prompt": "{A}"},
    {"id": "D", "after": ["B", "C"], "prompt": "{B}{C}"}]})


def executor(delays: dict[str, float], fail: set[str] = frozenset(), crash: dict | None = None):
    log: list[tuple[str, str]] = []
    crashes = dict(crash or {})

    def start(step_id, upstream):
        async def run():
            seen = {k: (await v).output for k, v in upstream.items()}
            log.append(("start", step_id))
            await asyncio.sleep(delays.get(step_id, 0.01))
            log.append(("end", step_id))
            if crashes.get(step_id, 0) > 0:
                crashes[step_id] -= 1
                raise RuntimeError("worker died")
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
    results = await dispatch(resolve(DIAMOND, "hybrid"), start,
                             on_update=lambda s, state, r: updates.append((s, state)))
    assert results["B"].status == "ok" and log.count(("start", "B")) == 2
    assert ("B", "resubmitted") in updates
    start, _ = executor({}, crash={"B": 5})
    results = await dispatch(resolve(DIAMOND, "hybrid"), start, resubmits=2)
    assert results["B"].status == "error" and "worker died" in results["B"].error
