"""kill -9 of the driver mid-batch, then ``--resume``, against a server that counts requests.

A 20-run batch of a 6-step chain (120 calls) on tests/plain_server.py (not the simulator).
Once ``--after`` requests have started, the driver (only its process, as ``kill -9 PID``
does) is killed. Printed: requests started more than 1 s after the kill, chainray or Ray
processes of the driver still alive 10 s after it, what was in flight at the kill, and the
replies paid in all after one ``--resume BATCH``.

Targets: nothing started more than 1 s after the kill; nothing left after 10 s; paid twice
at most what was in flight at the kill; 120 steps ok in the end.

    python benchmarks/kill_resume.py [--after 30] [--latency 1.0]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.interrupt_resume import CHAIN  # noqa: E402
from tests.plain_server import PlainServer  # noqa: E402


def chainray(home: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "CHAINRAY_HOME": str(home), "OPENAI_API_KEY": "sk-bench"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen([sys.executable, "-m", "chainray.cli.main", "run", *args,
                             "--quiet"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def processes_of(home: Path) -> list[int]:
    """The driver's and its Ray's processes: those whose environment names its home."""
    marker = f"CHAINRAY_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--after", type=int, default=30, help="requests before the kill")
    parser.add_argument("--latency", type=float, default=1.0, help="server seconds per call")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="chainray-kill-"))
    home = folder / "home"
    (folder / "fan6.yaml").write_text(CHAIN)
    (folder / "in.jsonl").write_text("".join(f'{{"topic": "t{i}"}}\n' for i in range(20)))
    server = PlainServer(latency_s=args.latency)
    with server.running() as base_url:
        run = [str(folder / "fan6.yaml"), "--base-url", base_url]
        driver = chainray(home, *run, "--inputs", str(folder / "in.jsonl"),
                          "--batch-window", "4")
        batch = driver.stderr.readline().split()[1]  # "batch <id> ..." comes first
        deadline = time.monotonic() + 300
        while server.started < args.after and time.monotonic() < deadline:
            time.sleep(0.02)
        killed_at = time.time()
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
        time.sleep(10)
        # Sent before the kill: received by the server before it or within the second a
        # request may take to arrive (the same second that counts as "late" below).
        in_flight = (sum(t < killed_at + 1.0 for t in server.start_times)
                     - sum(e["end"] < killed_at for e in server.log))
        left = processes_of(home)
        late = sum(t > killed_at + 1.0 for t in server.start_times)
        print(f"kill -9 after {args.after} requests: {in_flight} in flight at the kill, "
              f"{late} started > 1 s after it, {len(left)} processes left after 10 s")
        for pid in left:  # never leave them behind
            os.kill(pid, signal.SIGKILL)
        out = folder / "resumed.json"
        resume = chainray(home, *run, "--resume", batch, "--json", str(out))
        resume.communicate(timeout=600)
        lines = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
        runs = [line for line in lines if "steps" in line]  # JSON Lines: runs, then totals
        ok = sum(step["status"] == "ok" for r in runs for step in r["steps"])
        paid = sum(entry["status"] == 200 for entry in server.log)
        print(f"resume: exit {resume.returncode}, {ok} of 120 steps ok; replies paid: {paid} "
              f"({paid - 120} paid twice; at most {in_flight} may be)")


if __name__ == "__main__":
    main()
