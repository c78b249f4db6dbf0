"""A RateLimiter's budget and where each of its numbers came from.

A limit is a number somebody stated: the user (a flag or API argument), the embedded
simulator's own settings, or the server (``x-ratelimit-limit-*`` headers). Nothing else: a
dimension nobody stated is ``None`` and is not paced. The sources rank
``flag > simulator > server``; a lower source never overrides a higher one, and between two
values of the same source the newest wins (so learned limits go up as well as down, and a
later driver's explicit ``--rpm`` reconfigures the shared limiter).

    Limits(rpm=720, rpm_from="flag").describe()
    # 'rpm 720 from --rpm; tpm not paced (no flag; learned from the server if it says)'
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Limits", "Source", "DIMENSIONS", "outranks"]

Source = Literal["flag", "simulator", "server"]
DIMENSIONS = {"requests": "rpm", "tokens": "tpm"}  # header name -> field name
_RANK = {None: 0, "server": 1, "simulator": 2, "flag": 3}


def outranks(new: Source | None, old: Source | None) -> bool:
    """May a value from ``new`` replace one from ``old``? Equal sources: the newest wins."""
    return new is not None and _RANK[new] >= _RANK[old]


def _origin(field: str, source: Source | None) -> str:
    return {"flag": f"from --{field}", "simulator": "from the embedded simulator's settings",
            "server": "learned from the server"}.get(source or "", "")


class Limits(BaseModel):
    """A RateLimiter's budget.

    ``rpm``/``tpm`` are ``None`` when nobody stated them (that dimension is not paced).
    ``target_share`` keeps headroom below a stated limit. ``burst_s`` is the window we assume
    the server enforces over (OpenAI may enforce per second); the limiter widens it when the
    server's ``remaining-*`` headers show a larger bucket. ``max_hold_s`` bounds how long one
    429's Retry-After may hold every caller.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    rpm: int | None = Field(None, gt=0)
    tpm: int | None = Field(None, gt=0)
    rpm_from: Source | None = None
    tpm_from: Source | None = None
    max_concurrency: int = Field(64, gt=0)
    target_share: float = Field(0.95, gt=0, le=1)
    burst_s: float = Field(1.0, gt=0, le=60)
    lease_ttl_s: float = Field(300.0, gt=0)
    max_hold_s: float = Field(60.0, gt=0)
    priority: bool = True

    def describe(self) -> str:
        """One line saying each limit and where it came from."""
        parts = []
        for field in ("rpm", "tpm"):
            value, source = getattr(self, field), getattr(self, f"{field}_from")
            parts.append(f"{field} {value:,} {_origin(field, source)}" if value else
                         f"{field} not paced (no flag; learned from the server if it says)")
        return "; ".join(parts)

    def merged(self, other: Limits) -> Limits:
        """These limits with every dimension of ``other`` whose source outranks ours."""
        update = {}
        for field in ("rpm", "tpm"):
            source = getattr(other, f"{field}_from")
            if getattr(other, field) and outranks(source, getattr(self, f"{field}_from")):
                update.update({field: getattr(other, field), f"{field}_from": source})
        return self.model_copy(update=update)
