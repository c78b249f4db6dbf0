"""How long a schedule takes, given each step's duration: the longest path when requests do
not slow each other, else a simulation of an engine that shares its throughput.

Both are linear in the schedule's size (the simulation in its events times the requests in
flight), so a chain of thousands of steps is timed in a fraction of a second.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence

__all__ = ["longest_finish", "shared_finish", "capped_finish"]


def longest_finish(order: Sequence[str], depends_on: Mapping[str, Sequence[str]],
                   seconds: Mapping[str, float]) -> float:
    """The makespan when every step starts as soon as what it depends on finished
    (``order`` is topological)."""
    finish: dict[str, float] = {}
    for step_id in order:
        finish[step_id] = max((finish[d] for d in depends_on[step_id]), default=0.0) \
            + seconds[step_id]
    return max(finish.values(), default=0.0)


def shared_finish(order: Sequence[str], depends_on: Mapping[str, Sequence[str]],
                  work: Mapping[str, float], delay: Mapping[str, float], slots: int) -> float:
    """The makespan on an engine that serves ``slots`` requests at full speed and shares its
    throughput beyond that: with ``k`` requests in flight each progresses at
    ``min(1, slots / k)``. A step enters the engine ``delay`` seconds after what it depends on
    finished and needs ``work`` seconds of it alone (0: a step that sends nothing)."""
    waiting = {s: len(depends_on[s]) for s in order}
    dependents: dict[str, list[str]] = {s: [] for s in order}
    for step_id in order:
        for dep in depends_on[step_id]:
            dependents[dep].append(step_id)
    arrivals: list[tuple[float, int, str]] = []
    position = {s: i for i, s in enumerate(order)}
    for step_id in order:
        if not waiting[step_id]:
            heapq.heappush(arrivals, (delay[step_id], position[step_id], step_id))
    active: dict[str, float] = {}  # step -> work left (seconds at full speed)
    now = end = 0.0

    def finish(step_id: str, at: float) -> None:
        nonlocal end
        end = max(end, at)
        for after in dependents[step_id]:
            waiting[after] -= 1
            if not waiting[after]:
                heapq.heappush(arrivals, (at + delay[after], position[after], after))

    while arrivals or active:
        rate = min(1.0, slots / len(active)) if active else 1.0
        first = min(active, key=active.__getitem__) if active else None
        done_at = now + active[first] / rate if first is not None else float("inf")
        if arrivals and arrivals[0][0] <= done_at:
            at, _, step_id = heapq.heappop(arrivals)
            for s in active:
                active[s] -= (at - now) * rate
            now = at
            if work[step_id] > 0:
                active[step_id] = work[step_id]
            else:
                finish(step_id, now)
            continue
        for s in active:
            active[s] -= (done_at - now) * rate
        now = done_at
        for s in [s for s, left in active.items() if left <= 1e-9]:
            del active[s]
            finish(s, now)
    return end


def capped_finish(order: Sequence[str], depends_on: Mapping[str, Sequence[str]],
                  work: Mapping[str, float], delay: Mapping[str, float], cap: int) -> float:
    """The makespan when at most ``cap`` requests are in flight, each at full speed, the
    ready step with the most work still ahead of it on its path sent first (as the
    RateLimiter grants permits)."""
    dependents: dict[str, list[str]] = {s: [] for s in order}
    for step_id in order:
        for dep in depends_on[step_id]:
            dependents[dep].append(step_id)
    ahead: dict[str, float] = {}
    for step_id in reversed(order):
        ahead[step_id] = work[step_id] + delay[step_id] + max(
            (ahead[d] for d in dependents[step_id]), default=0.0)
    waiting = {s: len(depends_on[s]) for s in order}
    events: list[tuple[float, int, str, str]] = []  # (time, kind order, kind, step)
    for step_id in order:
        if not waiting[step_id]:
            heapq.heappush(events, (delay[step_id], 1, "ready", step_id))
    ready: list[tuple[float, str]] = []
    busy, end = 0, 0.0
    while events:
        now = events[0][0]
        while events and events[0][0] <= now + 1e-12:  # everything due now, then dispatch
            _, _, kind, step_id = heapq.heappop(events)
            if kind == "done":
                busy -= 1
                end = max(end, now)
                for after in dependents[step_id]:
                    waiting[after] -= 1
                    if not waiting[after]:
                        heapq.heappush(events, (now + delay[after], 1, "ready", after))
            elif work[step_id] <= 0:
                heapq.heappush(events, (now, 0, "done", step_id))
                busy += 1
            else:
                heapq.heappush(ready, (-ahead[step_id], step_id))
        while ready and busy < cap:
            _, start = heapq.heappop(ready)
            busy += 1
            heapq.heappush(events, (now + work[start], 0, "done", start))
    return end
