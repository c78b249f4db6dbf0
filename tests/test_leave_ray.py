"""Leaving a Ray this process started stops every process it started, and soon."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from tests.helpers import process_running

SCRIPT = """
import json, os, time
import ray
from chainray.api.cluster import connect_ray, leave_ray
connect_ray(None, dashboard=False)
node = ray._private.worker._global_node
pids = {kind: [i.process.pid for i in infos] for kind, infos in node.all_processes.items()}
started = time.perf_counter()
leave_ray()
print(json.dumps({"pids": pids, "seconds": time.perf_counter() - started}))
"""


def test_leaving_a_local_ray_stops_all_it_started_without_waiting_on_the_monitor():
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert "monitor" in report["pids"] and "raylet" in report["pids"]
    # ray.shutdown alone waits a full second for the monitor, which outlives SIGTERM.
    assert report["seconds"] < 1.0
    deadline = time.monotonic() + 10
    left = [pid for pids in report["pids"].values() for pid in pids]
    while left and time.monotonic() < deadline:
        left = [pid for pid in left if process_running(pid)]
        time.sleep(0.2)
    assert not left, f"still running: {left}"
