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
