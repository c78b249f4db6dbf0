"""``chainray up``, ``status`` and ``down``: a warm Ray that ``run`` and ``bench`` use while it
is up.

``up`` starts one process, the daemon (``chainray.cli.warmd``), in a session of its own with
its output in ``$CHAINRAY_HOME/warm.log``, and waits until ``warm.json`` (see
``chainray.api.warm``) says it is ready. ``down`` signals that daemon by its PID and waits
for every PID it recorded to go: never ``ray stop``, never a process found by name.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from chainray.actors.lifeline import process_alive
from chainray.api.warm import (
    WarmState,
    is_daemon,
    read_warm,
    remove_warm,
    uptime,
    warm_path,
)
from chainray.durations import format_duration
from chainray.errors import ChainrayError
from chainray.home import chainray_home

__all__ = ["add_warm_parsers", "cmd_up", "cmd_status", "cmd_down"]

STOP_WAIT_S = 60.0  # how long down waits for the daemon before it kills it (by PID)
UP_ATTEMPTS = 3  # daemons up starts when Ray is too slow to start (a loaded machine)
SLOW_RAY = "timed out during startup"  # Ray waits 30 s for its raylet, then raises this


def add_warm_parsers(commands, positive_int, only: str) -> None:
    """The parser of command ``only`` (``up``, ``status`` or ``down``)."""
    {"up": _add_up, "status": _add_status, "down": _add_down}[only](commands, positive_int)


def _add_up(commands, positive_int) -> None:
    up = commands.add_parser(
        "up", help="start a warm Ray that run and bench use while it is up",
        description="Start (or reuse) a local Ray with chainray's Coordinator, step runners "
        "and the embedded simulator kept warm. While it is up, run and bench (and "
        "chainray.Session) use it on their own and start in about a second; --address or "
        "RAY_ADDRESS still choose another Ray, --base-url or OPENAI_* a real endpoint.")
    up.add_argument("--runners", type=positive_int, default=2, help="step-runner actors "
                    "(default 2)")
    up.add_argument("--models", default="gpt-4o-mini", metavar="M[,M...]",
                    help="models whose rate limiters on the warm simulator start with it, "
                    "so that even the first run finds them (default gpt-4o-mini, the "
                    "bundled scenarios' model; others start at first use)")
    up.add_argument("--timeout", type=positive_int, default=240, metavar="S",
                    help="how long to wait for it to be ready (default 240)")


def _add_status(commands, positive_int) -> None:
    status = commands.add_parser("status", help="show the warm Ray of chainray up",
                                 description="Show what chainray up keeps running: address, "
                                 "PIDs, uptime, the warm actors and the simulator.")
    status.add_argument("--json", action="store_true", help="print it as JSON")


def _add_down(commands, positive_int) -> None:
    commands.add_parser("down", help="stop what chainray up started, and nothing else",
                        description="Stop the daemon chainray up started (by its PID) and "
                        "wait until every process it recorded is gone.")


# -- the commands --------------------------------------------------------------------------

class _UpLock:
    """One ``up`` at a time per $CHAINRAY_HOME (a second one waits, then reuses)."""

    def __init__(self, timeout_s: float) -> None:
        chainray_home().mkdir(parents=True, exist_ok=True)
        self.file = open(chainray_home() / "warm.lock", "a+")  # noqa: SIM115 (held)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.file.close()
                    raise ChainrayError("another `chainray up` is still starting") from None
                time.sleep(0.2)

    def __enter__(self) -> _UpLock:
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()  # releases the lock


def cmd_up(args: argparse.Namespace) -> int:
    with _UpLock(args.timeout):
        if (state := read_warm()) is not None:
            print(f"chainray: already up (PID {state.pid}); reusing it", file=sys.stderr)
            _show(state)
            return 0
        deadline = time.monotonic() + args.timeout
        for attempt in range(1, UP_ATTEMPTS + 1):
            state, why = _start_daemon(args, deadline)
            if state is not None:
                _show(state)
                return 0
            if SLOW_RAY not in why or attempt == UP_ATTEMPTS or time.monotonic() > deadline:
                raise ChainrayError(f"the warm Ray did not start: {why}")
            print(f"chainray: Ray did not start in time on this busy machine (attempt "
                  f"{attempt} of {UP_ATTEMPTS}); trying again", file=sys.stderr, flush=True)
        raise AssertionError("unreachable")


def _start_daemon(args: argparse.Namespace, deadline: float) -> tuple[WarmState | None, str]:
    """Start the daemon and wait until it is ready (its state) or gone (why: its log)."""
    log = chainray_home() / "warm.log"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    with open(log, "w") as out:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "chainray.cli.warmd", "--runners", str(args.runners),
             "--models", args.models],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
    while time.monotonic() < deadline:
        state = read_warm()
        if state is not None and state.pid == daemon.pid:
            return state, ""
        if daemon.poll() is not None:
            return None, f"exit {daemon.returncode}: {_tail(log)}"
        time.sleep(0.2)
    _stop_pid(daemon.pid, STOP_WAIT_S)
    return None, f"not ready within {args.timeout} s; stopped it (log: {log})"


def cmd_status(args: argparse.Namespace) -> int:
    state = read_warm()
    if args.json:
        import json

        print(json.dumps({"up": False} if state is None else
                         {"up": True, "uptime_s": round(uptime(state), 1),
                          **state.model_dump(mode="json")}, indent=2))
    elif state is None:
        print("chainray: nothing is up (`chainray up` starts a warm Ray)")
    else:
        _show(state)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    try:
        state = WarmState.model_validate_json(warm_path().read_text())
    except (OSError, ValueError):
        print("chainray: nothing is up")
        return 0
    pids = _recorded_pids(state)
    if process_alive(state.pid) and is_daemon(state.pid):  # not a PID reused since a restart
        _stop_pid(state.pid, STOP_WAIT_S)
    # What the daemon did not stop (it was killed before it could): by PID, if still ours.
    for pid in pids:
        if pid != state.pid and process_alive(pid) and _looks_ours(pid):
            _stop_pid(pid, 10.0)
    remove_warm(state.pid)
    left = [pid for pid in pids if process_alive(pid) and
            (is_daemon(pid) if pid == state.pid else _looks_ours(pid))]
    if left:
        raise ChainrayError(f"stopped the warm Ray, but PIDs {left} are still there")
    print(f"chainray: stopped the warm Ray (daemon PID {state.pid}; {len(pids)} processes, "
          f"up {format_duration(uptime(state))})")
    return 0


def _recorded_pids(state: WarmState) -> list[int]:
    actors = [a["pid"] for a in state.actors if isinstance(a.get("pid"), int)]
    ray_pids = [pid for pids in state.ray_pids.values() for pid in pids]
    return list(dict.fromkeys([state.pid, state.sim_pid, *ray_pids, *actors]))


_OURS = (b"/ray/", b"ray::", b"chainray.cli.main sim")  # Ray's binaries, its workers, the sim


def _looks_ours(pid: int) -> bool:
    """A recorded PID still names a Ray process or the simulator (not one that reused it)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return any(marker in command for marker in _OURS)


def _stop_pid(pid: int, wait_s: float) -> None:
    """SIGTERM ``pid``, wait up to ``wait_s`` for it to go, then SIGKILL it."""
    for sig, wait in ((signal.SIGTERM, wait_s), (signal.SIGKILL, 10.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not process_alive(pid):
                return
            time.sleep(0.1)


def _tail(log: Path, lines: int = 5) -> str:
    try:
        return " | ".join(log.read_text().strip().splitlines()[-lines:]) or "(no output)"
    except OSError:
        return "(no log)"


def _show(state: WarmState) -> None:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(state.started))
    ray_pids = ", ".join(f"{kind} {' '.join(map(str, pids))}"
                         for kind, pids in sorted(state.ray_pids.items()))
    print(f"chainray up since {started} (uptime {format_duration(uptime(state))})\n"
          f"  address    {state.address} (run and bench use it while it is up)\n"
          f"  daemon     PID {state.pid} (log {state.log})\n"
          f"  simulator  {state.sim_url} PID {state.sim_pid}\n"
          f"  ray        {ray_pids}")
    seen = format_duration(max(0.0, time.time() - state.updated))
    print(f"  actors (namespace {state.namespace}, as of {seen} ago):")
    for actor in state.actors:
        counts = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in actor.items()
                           if k not in ("name", "kind", "pid", "state"))
        print(f"    {actor['name']:<28} {actor.get('kind', ''):<12} PID {actor.get('pid', '?')}"
              f"  {actor['state']}{'  ' + counts if counts else ''}")
