"""Live progress on the terminal.

A single run's line counts its own steps (pending, running, done, failed), calls, retries,
429s and tokens. A batch's line shows runs done/total, requests/min and tokens/min against the
limits, and an ETA: from the forecast while too few runs finished to measure, then from the
measured pace of finished runs.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Mapping

from rich.console import Console
from rich.live import Live
from rich.text import Text

from chainray.results import RunResult

__all__ = ["ProgressView", "progress_line", "result_counts"]

_HEARTBEAT_S = 60.0  # a log's line while nothing changes, so that it shows the run is alive


def result_counts(result: RunResult) -> Counter:
    """What a finished run adds to the progress counters."""
    counts = Counter(runs=1)
    for step in result.steps:
        key = {"ok": "done", "error": "failed", "skipped": "skipped"}[step.status]
        counts[key] += 1
    counts.update(calls=result.api_calls, retries=result.retries,
                  rate_limited=result.rate_limited, tokens=result.total_tokens)
    return counts


def _eta(done: int, total: int, elapsed: float, forecast_s: float | None) -> str:
    if done >= total:
        return "ETA 0s"
    if done >= max(3, total // 10) or forecast_s is None:
        if not done:
            return "ETA unknown"
        return f"ETA {elapsed / done * (total - done):.0f}s"
    return f"ETA {max(0.0, forecast_s - elapsed):.0f}s (forecast {forecast_s:.0f}s)"


def _rate(value: float, limit: int | None, unit: str) -> str:
    return f"{value:.0f} {unit}/min" + (f" of {limit} ({value / limit:.0%})" if limit else "")


def progress_line(label: str, counts: Mapping[str, int], elapsed: float,
                  limits: Mapping[str, int | None] | None = None,
                  forecast_s: float | None = None) -> str:
    """One line of progress; ``counts`` may carry ``runs_total`` for a batch."""
    get = counts.get
    steps = (f"steps: {get('pending', 0)} pending, {get('running', 0)} running, "
             f"{get('done', 0)} done, {get('failed', 0)} failed")
    calls = (f"calls {get('calls', 0)} (retries {get('retries', 0)}, 429s "
             f"{get('rate_limited', 0)})  tokens {get('tokens', 0)}")
    total = get("runs_total")
    if not total:
        return f"{label}  {elapsed:6.1f}s  {steps}  | {calls}"
    limits = limits or {}
    minutes = max(elapsed, 1.0) / 60
    return (f"{label}  {elapsed:6.1f}s  runs {get('runs', 0)}/{total} "
            f"({get('runs_running', 0)} running)  | {calls}  | "
            f"{_rate(get('calls', 0) / minutes, limits.get('rpm'), 'req')}, "
            f"{_rate(get('tokens', 0) / minutes, limits.get('tpm'), 'tok')}  | "
            f"{_eta(get('runs', 0), total, elapsed, forecast_s)}")


class ProgressView:
    """A one-line live view on a terminal; otherwise (a log file, a pipe) a line at most
    every ``every_s`` seconds when the counts changed, and every minute when they did not;
    or nothing."""

    def __init__(self, label: str, enabled: bool = True, every_s: float = 5.0,
                 limits: Mapping[str, int | None] | None = None,
                 forecast_s: float | None = None) -> None:
        self.label, self.enabled, self.every_s = label, enabled, every_s
        self.limits, self.forecast_s = limits, forecast_s
        self.console = Console(file=sys.stderr)
        self.live: Live | None = None
        self.started = time.perf_counter()
        self.last_print = 0.0
        self.last_counts: dict[str, int] = {}

    def __enter__(self) -> ProgressView:
        if self.enabled and self.console.is_terminal:
            self.live = Live(console=self.console, refresh_per_second=4, transient=True)
            self.live.__enter__()
        return self

    def show(self, counts: Mapping[str, int]) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.started
        line = progress_line(self.label, counts, elapsed, self.limits, self.forecast_s)
        if self.live is not None:
            self.live.update(Text(line))
        elif elapsed - self.last_print >= (self.every_s if dict(counts) != self.last_counts
                                           else _HEARTBEAT_S):
            self.last_print, self.last_counts = elapsed, dict(counts)
            print(line, file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)
