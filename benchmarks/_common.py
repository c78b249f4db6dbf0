"""Shared set-up for the benchmark scripts: a quiet local Ray and the machine's description."""

from __future__ import annotations

import logging
import os
import platform

import ray

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def start_ray(num_cpus: int | None = None) -> None:
    ray.init(address="local", include_dashboard=False, logging_level=logging.ERROR,
             log_to_driver=False, num_cpus=num_cpus)


def machine() -> str:
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{platform.machine()}, {os.cpu_count()} cores, {mem_gib:.0f} GiB, "
            f"Python {platform.python_version()}, Ray {ray.__version__}")


def ray_memory_mib() -> tuple[float, float]:
    """Total (RSS, PSS) in MiB of this process and every Ray process on the machine."""
    rss = pss = 0.0
    me = str(os.getpid())
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
            if pid != me and "ray" not in cmdline:
                continue
            for line in open(f"/proc/{pid}/smaps_rollup"):
                if line.startswith("Rss:"):
                    rss += int(line.split()[1]) / 1024
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1]) / 1024
        except OSError:
            continue
    return rss, pss


class PeakMemory:
    """Samples ``ray_memory_mib`` in a thread; ``peak`` is the highest (RSS, PSS) seen."""

    def __init__(self, every_s: float = 0.1) -> None:
        import threading

        self.every_s, self.peak, self.stop = every_s, (0.0, 0.0), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            rss, pss = ray_memory_mib()
            self.peak = (max(self.peak[0], rss), max(self.peak[1], pss))
            self.stop.wait(self.every_s)

    def __enter__(self) -> PeakMemory:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
