"""Ctrl-C mid-batch, then two resumes started together, against a server that counts requests.

A 20-run batch of a 6-step chain (120 calls) on tests/plain_server.py (not the simulator).
Once ``--after`` requests have started, SIGINT goes to the driver's whole process group, as a
terminal's Ctrl-C does. Then two ``--resume BATCH`` start at once. Printed: the exit codes,
requests started more than 1 s after the Ctrl-C, and replies paid per step in all.

Targets: 120 replies for 120 steps, the second resume refused (exit 2), none started more than
1 s after the Ctrl-C.

    python benchmarks/interrupt_resume.py [--after 30] [--latency 1.0]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.plain_server import PlainServer  # noqa: E402

CHAIN = ("name: fan6\ninputs: {topic: tea}\ndefaults: {max_tokens: 20}\nsteps:\n"
         + "".join(f"  - {{id: s{i}, prompt: 'angle {i} of {{topic}}'}}\n" for i in range(5))
         + "  - {id: final, after: [s0, s1, s2, s3, s4], prompt: 'sum {s0} {s1} {s2} {s3} {s4}'}\n")


def chainray(folder: Path, base_url: str, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "CHAINRAY_HOME": str(folder / "home"), "OPENAI_API_KEY": "sk-bench"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(
        [sys.executable, "-m", "chainray.cli.main", "run", str(folder / "fan6.yaml"),
         "--base-url", base_url, "--quiet", *extra], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, start_new_session=True)  # its own process group


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--after", type=int, default=30, help="requests before the Ctrl-C")
    parser.add_argument("--latency", type=float, default=1.0, help="server seconds per call")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="chainray-interrupt-"))
    (folder / "fan6.yaml").write_text(CHAIN)
    (folder / "in.jsonl").write_text("".join(f'{{"topic": "t{i}"}}\n' for i in range(20)))
    server = PlainServer(latency_s=args.latency)
    with server.running() as base_url:
        driver = chainray(folder, base_url, "--inputs", str(folder / "in.jsonl"),
                          "--batch-window", "4")
        deadline = time.monotonic() + 300
        while server.started < args.after and time.monotonic() < deadline:
            time.sleep(0.05)
        interrupted_at = time.time()
        os.killpg(driver.pid, signal.SIGINT)  # a terminal's Ctrl-C: the whole group
        _, err = driver.communicate(timeout=180)
        before = server.started
        batch = re.search(r"--resume (b[0-9a-f]+)", err).group(1)
        resumes = [chainray(folder, base_url, "--resume", batch) for _ in range(2)]
        codes = sorted(r.wait(timeout=300) for r in resumes)
        late = sum(t > interrupted_at + 1.0 for t in server.start_times[:before])
        print(f"Ctrl-C after {args.after} requests: driver exit {driver.returncode}, "
              f"{before} requests sent in all by it, {late} started > 1 s after the Ctrl-C")
        print(f"two resumes at once: exit codes {codes} (one refused: {codes == [0, 2]})")
        answered = sum(entry["status"] == 200 for entry in server.log)
        print(f"replies paid: {answered} for 120 steps ({answered - 120} paid twice)")


if __name__ == "__main__":
    main()
