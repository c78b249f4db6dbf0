"""Start the simulator in a child process on a free loopback port, as ``run`` and ``bench`` do.

A child process keeps the server's event loop off the driver's CPU time and dies with it.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import threading
import urllib.request
from dataclasses import dataclass

from chainray.errors import ChainrayError

__all__ = ["EmbeddedSimulator", "start_simulator"]

_READY = "chainray sim listening on "


@dataclass
class EmbeddedSimulator:
    """A running simulator; ``base_url`` ends in ``/v1`` as the openai client expects."""

    process: subprocess.Popen
    base_url: str

    @property
    def root_url(self) -> str:
        return self.base_url.removesuffix("/v1")

    def stats(self, requests: bool = True) -> dict:
        query = "" if requests else "?requests=0"
        with urllib.request.urlopen(f"{self.root_url}/stats{query}", timeout=30) as answer:
            return json.load(answer)

    def configure(self, **changes) -> dict:
        """Change settings (``faults={...}`` merges); resets stats and buckets."""
        data = json.dumps(changes).encode()
        request = urllib.request.Request(f"{self.root_url}/sim/config", data=data,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.load(answer)

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.root_url}/sim/reset", data=b"{}")
        urllib.request.urlopen(request, timeout=30).close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def __enter__(self) -> EmbeddedSimulator:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_simulator(*flags: str, env: dict[str, str] | None = None) -> EmbeddedSimulator:
    """Start ``chainray sim --port 0 FLAGS...`` and wait until it listens."""
    process = subprocess.Popen(
        [sys.executable, "-m", "chainray.cli.main", "sim", "--port", "0", *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith(_READY):
        process.kill()
        _, err = process.communicate(timeout=5)
        raise ChainrayError(f"the embedded simulator did not start: {err.strip() or line}")
    # Read its output for as long as it runs: a pipe nobody reads fills up (aiohttp logs a
    # traceback for every client that leaves early, as a hedge's loser does) and the
    # simulator would then block on its next log line, answering nothing.
    for stream in (process.stdout, process.stderr):
        threading.Thread(target=collections.deque, args=(stream, 0), daemon=True).start()
    return EmbeddedSimulator(process, line[len(_READY):].strip())
