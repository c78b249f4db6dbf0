"""One budget per endpoint per machine, or a clear word that there are two.

A RateLimiter is shared by every process connected to one Ray. Two ``chainray`` processes that
each start a Ray of their own keep two budgets for one endpoint, and together can send twice
its limit. Each such process claims the endpoint with an OS file lock (released by the kernel
when the process dies); a second one finds the claim taken and says so, naming the holder.

    claim = claim_budget("https://api.openai.com/v1")   # held until the process ends
    if claim.holder_pid is not None:
        print(claim.not_shared_message())
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from dataclasses import dataclass
from typing import IO

from chainray.home import chainray_home

__all__ = ["BudgetClaim", "claim_budget"]

_HELD: dict[str, BudgetClaim] = {}  # this process's claims: a second flock here would fail


@dataclass
class BudgetClaim:
    """This process's claim on an endpoint's budget; ``holder_pid`` is another process that
    holds it already (then this process's budget is not shared with it)."""

    base_url: str
    file: IO[str] | None
    holder_pid: int | None = None

    def not_shared_message(self) -> str:
        return (f"another chainray process (PID {self.holder_pid}) is sending to {self.base_url} "
                "with a rate-limit budget of its own; the two do not share --rpm/--tpm. To "
                "share one budget, run `chainray up` first (both then use its Ray), or "
                "start one Ray (`ray start --head`) and run both with --address auto")


def _lock_path(base_url: str) -> str:
    folder = chainray_home() / "budgets"
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(base_url.rstrip("/").encode()).hexdigest()[:16]
    return str(folder / f"{digest}.lock")


def claim_budget(base_url: str) -> BudgetClaim:
    """Claim ``base_url``'s budget for this process; never blocks, never raises for a lock
    it cannot take (a machine without a writable home just shares nothing and says nothing).
    The claim lasts as long as this process."""
    if base_url in _HELD:
        return _HELD[base_url]
    try:
        file = open(_lock_path(base_url), "a+", encoding="utf-8")  # noqa: SIM115 (held open)
    except OSError:
        return BudgetClaim(base_url, None)
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        file.seek(0)
        text = file.read().strip()
        file.close()
        return BudgetClaim(base_url, None, int(text) if text.isdigit() else -1)
    file.truncate(0)
    file.write(str(os.getpid()))
    file.flush()
    _HELD[base_url] = BudgetClaim(base_url, file)
    return _HELD[base_url]
