"""kill -9 of a driver that started its own Ray: nothing new is sent, nothing is left running:
every Ray worker (what can send a request) within 20 s, and Ray's own processes, which send
nothing, within 90 s (some may wait on the dead GCS for Ray's 60 s; on a quiet machine they
are gone within 2 s) except its two node agents: when their raylet dies unexpectedly they
report it to the dead GCS first, which Ray bounds by 60 s of its own
(``ray._private.process_watcher.report_raylet_error_logs``), then exit. The test checks
that they are orphans (their raylet is gone) and ends them instead of waiting a minute."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import process_running
from tests.plain_server import PlainServer

pytestmark = pytest.mark.timeout(300)

CHAIN = """name: fan
inputs: {topic: tea}
defaults: {max_tokens: 20}
steps:
""" + "".join(f"  - {{id: s{i}, prompt: 'angle {i} of {{topic}}'}}\n" for i in range(5)) + \
    "  - {id: final, after: [s0, s1, s2, s3, s4], prompt: 'sum {s0} {s1} {s2} {s3} {s4}'}\n"


def processes_with(marker: str) -> list[int]:
    """PIDs whose environment holds ``marker`` (the driver's own CHAINRAY_HOME): the driver and
    every process its Ray started, whatever they are called."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def is_worker(pid: int) -> bool:
    """A Ray worker (a step runner, the Coordinator, a limiter, a step task, an idle worker):
    what can send a request. Ray's own head processes and agents cannot."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return command.startswith(b"ray::") and b"Agent" not in command


def is_orphaned_agent(pid: int) -> bool:
    """One of Ray's node agents whose raylet (its parent) is gone: it exits on its own."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
        parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[1])
        raylet = int(dict(line.split("=", 1) for line in Path(f"/proc/{pid}/environ")
                          .read_text().split("\0") if "=" in line).get("RAY_RAYLET_PID", 0))
    except (OSError, ValueError):
        return False
    agent = command.startswith((b"ray::DashboardAgent", b"ray::RuntimeEnvAgent"))
    return agent and raylet > 0 and parent != raylet and not process_running(raylet)


def wait_for(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def test_a_killed_driver_stops_sending_and_leaves_nothing_running(tmp_path):
    server = PlainServer(latency_s=1.0)
    (tmp_path / "fan.yaml").write_text(CHAIN)
    (tmp_path / "in.jsonl").write_text("".join(f'{{"topic": "t{i}"}}\n' for i in range(20)))
    home = tmp_path / "home"
    env = {**os.environ, "CHAINRAY_HOME": str(home), "OPENAI_API_KEY": "sk-test",
           "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    with server.running() as base_url:
        driver = subprocess.Popen(
            [sys.executable, "-m", "chainray.cli.main", "run", str(tmp_path / "fan.yaml"),
             "--base-url", base_url, "--inputs", str(tmp_path / "in.jsonl"),
             "--batch-window", "4", "--quiet"], env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            assert wait_for(lambda: server.started >= 8, 120), "the batch never got going"
            killed_at = time.time()
            driver.send_signal(signal.SIGKILL)
            driver.wait(timeout=10)
            marker = f"CHAINRAY_HOME={home}"
            workers_gone = wait_for(lambda: not any(map(is_worker, processes_with(marker))),
                                    20)
            assert workers_gone, [Path(f"/proc/{pid}/cmdline").read_bytes()[:80]
                                  for pid in processes_with(marker)]
            assert wait_for(lambda: not [pid for pid in processes_with(marker)
                                         if not is_orphaned_agent(pid)], 90), [
                Path(f"/proc/{pid}/cmdline").read_bytes()[:80] for pid in processes_with(marker)]
        finally:
            for pid in processes_with(f"CHAINRAY_HOME={home}"):  # never leave them behind
                os.kill(pid, signal.SIGKILL)
        late = [t for t in server.start_times if t > killed_at + 1.0]
    assert late == []  # nothing new sent more than a second after the kill
