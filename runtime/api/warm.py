"""A warm start: what ``chainray up`` keeps running, as the drivers find it.

``chainray up`` starts a daemon (``python -m chainray.cli.warmd``) that owns a local Ray, the
embedded simulator and chainray's Coordinator with its step runners (named, in the namespace
``chainray-warm``). Once they are ready it writes ``$CHAINRAY_HOME/warm.json``; a driver
(``run``, ``bench``, ``chainray.Session``) that is given no Ray address finds that file and
joins that Ray instead of starting one: no Ray, simulator or worker process to start, so a
run starts in about the time Python takes to import chainray.

The file is written atomically and only by the daemon; a file whose daemon is gone (killed,
machine restarted) is stale: ``read_warm`` removes it and answers None.

    warm = read_warm()
    if warm is not None:
        print(warm.address, warm.sim_url)
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

from pydantic import BaseModel, ValidationError

from chainray.actors.lifeline import process_alive
from chainray.errors import InputError
from chainray.home import chainray_home
from chainray.sim.config import SimConfig
from chainray.sim.embedded import EmbeddedSimulator

__all__ = ["WarmState", "WarmSimulator", "warm_path", "read_warm", "write_warm",
           "remove_warm", "is_daemon", "warm_simulator", "WARM_NAMESPACE",
           "WARM_COORDINATOR", "WARM_SESSION"]

WARM_NAMESPACE = "chainray-warm"  # the warm actors' Ray namespace
WARM_SESSION = "warm"  # names them as a session id names a driver's own
WARM_COORDINATOR = f"chainray-coordinator-{WARM_SESSION}"
# A driver sets what it needs on the shared simulator; these are left as the simulator has
# them (where it listens, its key).
_SIM_OWN = {"host", "port", "api_key"}


class WarmState(BaseModel):
    """What ``warm.json`` holds: where the warm Ray is and which processes are its."""

    address: str  # the GCS address drivers join
    pid: int  # the daemon (Ray's own processes are its children and die with it)
    started: float  # Unix time
    namespace: str = WARM_NAMESPACE
    coordinator: str = WARM_COORDINATOR
    sim_url: str  # the simulator's base URL (ends in /v1)
    sim_pid: int
    ray_pids: dict[str, list[int]] = {}  # Ray's processes by kind (gcs_server, raylet, ...)
    log: str = ""  # the daemon's log file
    actors: list[dict] = []  # the warm actors as last seen: name, pid, state, counts
    updated: float = 0.0  # when ``actors`` was last refreshed


def warm_path() -> Path:
    return chainray_home() / "warm.json"


def is_daemon(pid: int) -> bool:
    """Whether ``pid`` is still a warm daemon (after a restart the PID may be another's)."""
    try:
        return b"chainray.cli.warmd" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return process_alive(pid)  # no /proc here: existing is all we can tell


def read_warm(remove_stale: bool = True) -> WarmState | None:
    """The live warm state, or None (nothing up; a stale or unreadable file is removed)."""
    path = warm_path()
    try:
        state = WarmState.model_validate_json(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError, ValueError):
        if remove_stale:
            path.unlink(missing_ok=True)
        return None
    if process_alive(state.pid) and is_daemon(state.pid):
        return state
    if remove_stale:
        remove_warm(state.pid)
    return None


def write_warm(state: WarmState) -> None:
    """Replace ``warm.json`` atomically: a reader sees the old file or the new one."""
    path = warm_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".warm.{os.getpid()}.tmp")
    temporary.write_text(state.model_dump_json(indent=2), encoding="utf-8")
    os.replace(temporary, path)


def remove_warm(pid: int) -> None:
    """Remove ``warm.json`` if it still names daemon ``pid`` (never a newer daemon's)."""
    path = warm_path()
    try:
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink(missing_ok=True)
    except (OSError, ValueError):
        pass


class WarmSimulator(EmbeddedSimulator):
    """The warm simulator as a driver sees it: shared, so a driver never stops it."""

    def stop(self) -> None:
        pass  # the daemon's: ``chainray down`` stops it


def _sim_settings(root_url: str) -> dict:
    with urllib.request.urlopen(f"{root_url}/sim/config", timeout=10) as answer:
        return json.load(answer)


def warm_simulator(state: WarmState, wanted: SimConfig) -> WarmSimulator:
    """The warm simulator, set to ``wanted`` (a driver's speed and limits, every other
    setting at its default) unless it is so already: a change resets its stats and
    buckets, as a fresh simulator would have them; an equal one leaves the budget shared."""
    simulator = WarmSimulator(process=None, base_url=state.sim_url)  # type: ignore[arg-type]
    target = wanted.model_dump(mode="json", exclude=_SIM_OWN)
    try:
        current = _sim_settings(simulator.root_url)
        if {k: v for k, v in current.items() if k not in _SIM_OWN} != target:
            simulator.configure(**target)
    except OSError as exc:  # URLError and timeouts too
        raise InputError(f"the warm simulator of `chainray up` (PID {state.sim_pid}) does "
                         f"not answer at {state.sim_url} ({exc}); `chainray down` stops "
                         "it") from None
    return simulator


def uptime(state: WarmState) -> float:
    return max(0.0, time.time() - state.started)
