"""Live progress of runs on the terminal: steps pending/running/done, calls, retries, tokens."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.live import Live
from rich.text import Text

__all__ = ["ProgressView"]


def _line(label: str, counts: dict, elapsed: float) -> str:
    get = counts.get
    runs = ""
    if get("runs_total"):
        runs = f"runs {get('runs', 0)}/{get('runs_total')}  "
    rate = get("calls", 0) / elapsed * 60 if elapsed > 1 else 0.0
    tok_rate = get("tokens", 0) / elapsed * 60 if elapsed > 1 else 0.0
    return (f"{label}  {elapsed:6.1f}s  {runs}steps: {get('pending', 0)} pending, "
            f"{get('running', 0)} running, {get('done', 0)} done, {get('failed', 0)} failed"
            f"  | calls {get('calls', 0)} (retries {get('retries', 0)}, 429s "
            f"{get('rate_limited', 0)})  tokens {get('tokens', 0)}"
            + (f"  | {rate:.0f} req/min {tok_rate:.0f} tok/min" if runs else ""))


class ProgressView:
    """A one-line live view on a terminal; a line every few seconds otherwise; or nothing."""

    def __init__(self, label: str, enabled: bool = True, every_s: float = 5.0) -> None:
        self.label, self.enabled, self.every_s = label, enabled, every_s
        self.console = Console(file=sys.stderr)
        self.live: Live | None = None
        self.started = time.perf_counter()
        self.last_print = 0.0

    def __enter__(self) -> ProgressView:
        if self.enabled and self.console.is_terminal:
            self.live = Live(console=self.console, refresh_per_second=4, transient=True)
            self.live.__enter__()
        return self

    def show(self, counts: dict) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.started
        line = _line(self.label, counts, elapsed)
        if self.live is not None:
            self.live.update(Text(line))
        elif elapsed - self.last_print >= self.every_s:
            self.last_print = elapsed
            print(line, file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)
