"""Cold and warm start of a run: how long ``chainray run`` takes beyond the chain itself.

    python benchmarks/startup.py [--repeat 3] [--sim-speed 100]

- cold: ``chainray run quantum_research --sim-speed 100`` in a fresh process that starts its own
  Ray and simulator (target: <= 6 s wall);
- warm, ``chainray up``: the same command while ``chainray up`` keeps Ray, the Coordinator, its
  step runners and the simulator warm (target: <= 0.35 x cold and <= 3 s on 2 cores);
- warm, CLI: the same against a running cluster with ``--address`` (wall minus makespan);
- warm, Session: ``chainray.Session(address=...)`` kept open, each run's wall time minus the
  chain's own makespan (target: <= 0.5 s).

The cluster is ours: ``ray start --head --block`` on a free port, stopped through its own PID
(never ``ray stop``, which stops every Ray cluster on the host); ``chainray up`` runs under a
CHAINRAY_HOME of its own and ``chainray down`` stops it (and only it). Every figure is a median
of ``--repeat`` runs, printed with the load average: on a shared machine it moves them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHAINRAY = str(Path(sys.executable).with_name("chainray"))
RAY = str(Path(sys.executable).with_name("ray"))
SCENARIO = "quantum_research"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CPU: list[float] = []  # CPU seconds of each timed run (see timed_cli)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_cli(env: dict, *flags: str) -> tuple[float, float]:
    """(wall s, makespan s) of one ``chainray run`` process. Its CPU seconds go to ``CPU``:
    the process and what it started and waited for (a cold run's own Ray and simulator; a
    warm run's work in the warm processes is not in it). On a loaded machine wall time
    is mostly waiting for a core; CPU time is what the command costs."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run.json"
        cpu = _children_cpu()
        started = time.perf_counter()
        done = subprocess.run([CHAINRAY, "run", SCENARIO, *flags, "--quiet", "--json", str(out)],
                              env=env, capture_output=True, text=True, timeout=300)
        wall = time.perf_counter() - started
        CPU.append(_children_cpu() - cpu)
        if done.returncode != 0:
            raise SystemExit(f"chainray run failed ({done.returncode}): {done.stderr[-2000:]}")
        return wall, json.loads(out.read_text())["latency_ms"] / 1000


class OwnCluster:
    """``ray start --head --block`` in the foreground of a child process we own."""

    def __init__(self, env: dict) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.temp_dir = tempfile.mkdtemp(prefix="crs-", dir="/tmp")
        self.process = subprocess.Popen(
            [RAY, "start", "--head", "--block", f"--port={self.port}", "--num-cpus=2",
             "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={self.temp_dir}",
             "--node-ip-address=127.0.0.1"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                time.sleep(1.0)  # the GCS listens before the raylet has registered
                return
            except OSError:
                if self.process.poll() is not None:
                    raise SystemExit("ray start failed") from None
                time.sleep(0.2)
        self.stop()
        raise SystemExit("ray start did not come up within 90 s")

    def stop(self) -> None:
        # SIGINT is Ctrl-C: ``ray start --block`` then stops the processes it started, and
        # only those. Its whole process group is ours (start_new_session).
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> OwnCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def session_runs(address: str, repeat: int, sim_speed: float) -> tuple[float, list[tuple]]:
    import chainray

    chain = chainray.load_chain(SCENARIO)
    started = time.perf_counter()
    with chainray.Session(address=address, sim_speed=sim_speed) as session:
        opened = time.perf_counter() - started
        runs = []
        for _ in range(repeat):
            t = time.perf_counter()
            result = session.run(chain)
            runs.append((time.perf_counter() - t, result.latency_ms / 1000))
    return opened, runs


class WarmUp:
    """``chainray up`` under ``env`` (its own CHAINRAY_HOME), ``chainray down`` at the end."""

    def __init__(self, env: dict) -> None:
        self.env = env
        started = time.perf_counter()
        done = subprocess.run([CHAINRAY, "up"], env=env, capture_output=True, text=True,
                              timeout=300)
        self.up_s = time.perf_counter() - started
        if done.returncode != 0:
            self.stop()
            raise SystemExit(f"chainray up failed: {done.stderr[-2000:]}")

    def stop(self) -> None:
        subprocess.run([CHAINRAY, "down"], env=self.env, capture_output=True, timeout=180)

    def __enter__(self) -> WarmUp:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def load() -> str:
    return f"load average {os.getloadavg()[0]:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sim-speed", type=float, default=100.0)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="chainray-startup-")  # no `chainray up` of the user's
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
           "CHAINRAY_HOME": home}
    for name in ("RAY_ADDRESS", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        env.pop(name, None)
    os.environ.update({"RAY_AUTH_MODE": env["RAY_AUTH_MODE"]})
    flags = ("--sim-speed", f"{args.sim_speed:g}", "--no-journal")
    print(f"{SCENARIO}, --sim-speed {args.sim_speed:g}, {args.repeat} runs each; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")

    CPU.clear()
    cold = [timed_cli(env, *flags) for _ in range(args.repeat)]
    walls = [w for w, _ in cold]
    cold_s, cold_cpu = statistics.median(walls), statistics.median(CPU)
    print(f"cold  chainray run: wall {', '.join(f'{w:.2f}' for w in walls)} s; median "
          f"{cold_s:.2f} s (target <= 6 s); makespan median "
          f"{statistics.median(m for _, m in cold):.2f} s; CPU median {cold_cpu:.2f} s "
          f"(the command, its Ray and simulator); {load()}")

    with WarmUp(env) as warm_up:
        first, _ = timed_cli(env, *flags)  # the first run after up: shown apart
        CPU.clear()
        warm = [timed_cli(env, *flags) for _ in range(args.repeat)]
        walls = [w for w, _ in warm]
        warm_s = statistics.median(walls)
        print(f"warm  chainray run after chainray up ({warm_up.up_s:.2f} s): wall "
              f"{', '.join(f'{w:.2f}' for w in walls)} s; median {warm_s:.2f} s = "
              f"{warm_s / cold_s:.2f} x cold (target <= 0.35 x and <= 3 s); makespan median "
              f"{statistics.median(m for _, m in warm):.2f} s; the first run after up "
              f"{first:.2f} s; CPU median {statistics.median(CPU):.2f} s (the command "
              f"alone) = {statistics.median(CPU) / cold_cpu:.2f} x cold; {load()}")
    shutil.rmtree(home, ignore_errors=True)

    with OwnCluster(env) as cluster:
        warm = [timed_cli(env, *flags, "--address", cluster.address)
                for _ in range(args.repeat)]
        over = [w - m for w, m in warm]
        wall = statistics.median(w for w, _ in warm)
        print(f"warm  chainray run --address: wall median {wall:.2f} s, overhead over "
              f"makespan {', '.join(f'{o:.2f}' for o in over)} s (a new "
              "process: Python, imports, connect, the Coordinator's actors)")
        opened, runs = session_runs(cluster.address, args.repeat, args.sim_speed)
        over = [w - m for w, m in runs]
        print(f"warm  Session(address=...): opened in {opened:.2f} s; per run overhead over "
              f"makespan {', '.join(f'{o:.3f}' for o in over)} s; median "
              f"{statistics.median(over):.3f} s (target <= 0.5 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
