"""What the simulator saw: one record per request, so tests can check a client's claims."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field

from chainray.sim.capacity import Decoded

__all__ = ["RequestRecord", "ServerStats"]


@dataclass
class RequestRecord:
    id: str
    tag: str | None
    model: str
    stream: bool
    start: float
    end: float = 0.0
    status: int = 0
    outcome: str = "pending"  # ok, rate_limited, server_error, dropped, hung, unauthorized, ...
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # of prompt_tokens, read from the prompt cache
    decode_s: float = 0.0  # wall seconds from the first token to the last
    decode_tokens_per_s: float | None = None  # tokens after the first per decode second
    peak_decoding: int = 0  # most requests decoding at once while this one did

    def decoded(self, decoded: Decoded) -> None:
        """Record what the decode saw, and the rate it got: tokens after the first per
        second of decoding (below the configured rate when it shared the slots)."""
        self.decode_s, self.peak_decoding = round(decoded.seconds, 6), decoded.peak
        if decoded.seconds > 0 and self.completion_tokens > 1:
            self.decode_tokens_per_s = round((self.completion_tokens - 1) / decoded.seconds, 2)


@dataclass
class ServerStats:
    records: list[RequestRecord] = field(default_factory=list)
    in_flight: int = 0
    peak_in_flight: int = 0

    def begin(self, record: RequestRecord) -> RequestRecord:
        self.records.append(record)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        return record

    def finish(self, record: RequestRecord, status: int, outcome: str) -> None:
        record.end, record.status, record.outcome = time.time(), status, outcome
        self.in_flight -= 1

    def summary(self, include_requests: bool = True) -> dict:
        ok = [r for r in self.records if r.status == 200]
        prompt = sum(r.prompt_tokens for r in ok)
        completion = sum(r.completion_tokens for r in ok)
        out = {
            "requests": len(self.records),
            "by_status": dict(Counter(str(r.status) for r in self.records)),
            "by_outcome": dict(Counter(r.outcome for r in self.records)),
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "cached_tokens": sum(r.cached_tokens for r in ok),
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
            "peak_decoding": max((r.peak_decoding for r in self.records), default=0),
        }
        if include_requests:
            out["request_log"] = [asdict(r) for r in self.records]
        return out
