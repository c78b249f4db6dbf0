"""The Coordinator's loop, free of Ray: start each step the moment its dependencies are done.

``graphlib.TopologicalSorter`` owns the dependencies; this loop owns dispatch. Steps are
started through ``start_step(step_id, upstream)``, which returns an awaitable handle (a Ray
ObjectRef in production) that is also handed to dependent steps, so upstream outputs travel
as refs (or, for a step whose handle raised, its error ``StepResult`` itself). Handles are fed
to ``done()`` in the order they finish.
"""

from __future__ import annotations

import asyncio
import graphlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from chainray.plan.schedule import Schedule
from chainray.results import StepResult
from chainray.runner.prefix_warmup import PrefixWarmup
from chainray.text import error_text

__all__ = ["dispatch", "StartStep", "IsProcessDeath"]

StartStep = Callable[[str, Mapping[str, Any]], Awaitable[StepResult]]
Update = Callable[[str, str, StepResult | None], None]
IsProcessDeath = Callable[[BaseException], bool]

log = logging.getLogger("chainray.dispatch")


def _never(*_: object) -> bool:
    return False


async def _settle(handle: Awaitable[StepResult]) -> StepResult:
    return await handle


async def dispatch(schedule: Schedule, start_step: StartStep,
                   on_error: Literal["fail", "continue", "isolate"] = "fail",
                   on_update: Update = lambda *_: None, resubmits: int = 2,
                   is_process_death: IsProcessDeath = _never,
                   stopped: Callable[[], bool] = _never,
                   warmup: PrefixWarmup | None = None) -> dict[str, StepResult]:
    """Run every step of ``schedule``; return each step's result by id.

    With ``on_error="fail"`` the first failed step stops dispatch and the steps not started
    are reported ``skipped``; with ``"continue"`` later steps receive the failure marked as
    such; with ``"isolate"`` only the failed step's descendants are skipped and independent
    branches run on. A handle whose process died (``is_process_death``, which the Coordinator makes
    Ray-aware) is started again, at most ``resubmits`` times; any other exception a handle
    raises becomes the step's error (one line; the detail goes to the debug log) and follows
    the ``on_error`` policy like any failed step. Once ``stopped()`` (a Ctrl-C), no step
    starts; those not started are ``skipped`` and the running ones finish. With ``warmup``,
    ready steps that share a cacheable prompt prefix start behind their leader
    (``chainray.runner.prefix_warmup``): once its first token arrives or it finishes.
    """
    plans = schedule.plan
    sorter = graphlib.TopologicalSorter({step.id: step.depends_on for step in schedule.steps})
    sorter.prepare()
    handles: dict[str, Any] = {}
    results: dict[str, StepResult] = {}
    finished: asyncio.Queue[tuple[str, asyncio.Task | None]] = asyncio.Queue()
    tries: dict[str, int] = {}
    running = 0
    stopping = False
    held: dict[str, list[str]] = {}  # a warm-up leader -> the ready steps it holds back
    waits: dict[str, asyncio.Future] = {}  # a warm-up leader -> its bounded wait

    def start(step_id: str) -> None:
        nonlocal running
        tries[step_id] = tries.get(step_id, 0) + 1
        handles[step_id] = start_step(step_id, {d: handles[d] for d in plans[step_id].sees})
        task = asyncio.ensure_future(_settle(handles[step_id]))
        task.add_done_callback(lambda done: finished.put_nowait((step_id, done)))
        running += 1
        on_update(step_id, "running", None)

    def release(leader: str) -> None:
        """Start the steps ``leader`` held back (ready with it), unless the run stopped."""
        if (wait := waits.pop(leader, None)) is not None:
            wait.cancel()
        for step_id in held.pop(leader, ()):
            if not stopped():
                start(step_id)
                continue
            results[step_id] = StepResult(
                id=step_id, status="skipped", depends_on=plans[step_id].depends_on,
                error="not started: the run was interrupted", error_code="interrupted")
            on_update(step_id, "skipped", results[step_id])
            sorter.done(step_id)

    while sorter.is_active():
        starting = []
        for step_id in sorter.get_ready():
            failed = [d for d in plans[step_id].depends_on if results[d].status != "ok"]
            if stopped():
                why, code = "not started: the run was interrupted", "interrupted"
            elif stopping:
                why, code = "an earlier step failed", "skipped"
            elif on_error == "isolate" and failed:
                why, code = f"depends on {failed[0]}, which did not finish", "upstream_failed"
            else:
                why = code = None
            if why is not None:
                results[step_id] = StepResult(
                    id=step_id, status="skipped", depends_on=plans[step_id].depends_on,
                    error=why, error_code=code)
                on_update(step_id, "skipped", results[step_id])
                sorter.done(step_id)
            else:
                starting.append(step_id)
        if warmup is not None and len(starting) > 1:
            starting, followers = warmup.split(starting, results)
            for leader, steps in followers.items():  # each waits at most warmup.wait_s
                held[leader] = steps
                waits[leader] = asyncio.ensure_future(warmup.wait(leader))
                waits[leader].add_done_callback(
                    lambda _, lead=leader: finished.put_nowait((lead, None)))
        for step_id in starting:
            start(step_id)
        if not running:
            continue
        step_id, task = await finished.get()
        if task is None:  # a leader's first token arrived, or it waited long enough
            release(step_id)
            continue
        running -= 1
        try:
            result = task.result()
        except Exception as exc:
            if is_process_death(exc) and tries[step_id] <= resubmits and not stopped():
                on_update(step_id, "resubmitted", None)
                start(step_id)
                continue
            log.debug("step %s raised", step_id, exc_info=True)
            result = StepResult(id=step_id, status="error", error=error_text(exc),
                                error_code="internal", depends_on=plans[step_id].depends_on,
                                attempts=0)
            handles[step_id] = result  # dependents receive the failure, not the exception
        results[step_id] = result
        on_update(step_id, result.status, result)
        stopping = stopping or (result.status != "ok" and on_error == "fail")
        sorter.done(step_id)
        release(step_id)  # a leader that finished (or failed) holds nothing back
    return results
