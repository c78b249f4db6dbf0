"""The Coordinator and step runners a process keeps between its sessions.

Each of them is a worker process, and starting one costs seconds of CPU on a small machine. A
session that closes leaves its crew here instead of ending it, and the process's next session
on the same Ray job takes it: a notebook or a script that opens sessions one after another
starts its actors once. Runs are scoped (a stop names its runs, a step's endpoint comes with
it), so a crew carries nothing from one session into the next. ``end_standby`` ends the crews
gracefully (see ``end_actors``); ``leave_ray`` calls it before Ray stops.

    crew = take_crew(runners=2) or Crew(coordinator, runners)
    ...
    keep_crew(crew)
"""

from __future__ import annotations

from dataclasses import dataclass

import ray

from chainray.actors.coordinator import end_actors

__all__ = ["Crew", "take_crew", "keep_crew", "end_standby", "drop_standby"]


@dataclass
class Crew:
    """A Coordinator and the step runners it dispatches to."""

    coordinator: ray.actor.ActorHandle
    runners: list[ray.actor.ActorHandle]
    owner: str = ""  # the Ray cluster and job that own them (they die with the job)


_kept: list[Crew] = []
_KEEP_AT_MOST = 2  # sessions open at once each leave one; more would only idle


def _owner() -> str:
    """This driver's job on this cluster (job ids restart at 1 on every new cluster)."""
    context = ray.get_runtime_context()
    return f"{context.gcs_address}/{context.get_node_id()}/{context.get_job_id()}"


def take_crew(runners: int, timeout_s: float = 10.0) -> Crew | None:
    """A kept crew of ``runners`` step runners that still works, or None. A crew of another
    Ray job or cluster (Ray was left and joined again), or one that lost a runner, is dropped."""
    owner = _owner()
    while _kept:
        crew = _kept.pop()
        if crew.owner != owner or len(crew.runners) != runners:
            if crew.owner == owner:
                _end(crew)
            continue
        try:
            if ray.get(crew.coordinator.fit.remote(), timeout=timeout_s):
                return crew
        except (ray.exceptions.RayError, TimeoutError):
            pass
        _end(crew)
    return None


def keep_crew(crew: Crew) -> None:
    """Keep ``crew`` for this process's next session."""
    crew.owner = crew.owner or _owner()
    _kept.append(crew)
    while len(_kept) > _KEEP_AT_MOST:
        _end(_kept.pop(0))


def end_standby() -> None:
    """End every kept crew (the Coordinator before its runners, each gracefully)."""
    while _kept:
        crew = _kept.pop()
        if ray.is_initialized() and crew.owner == _owner():
            _end(crew)


def drop_standby() -> None:
    """Forget every kept crew without ending it: for a Ray about to stop (this process
    started it), which ends them itself; their graceful exit would only keep the command
    waiting, for task events that a stopped Ray's dashboard will never show."""
    _kept.clear()


def _end(crew: Crew) -> None:
    end_actors([crew.coordinator])  # the owner of the step tasks first
    end_actors(crew.runners)
