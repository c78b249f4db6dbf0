"""Compare strategies on identical inputs: medians and spread of repeated runs, and the
seed's verdict lines (fastest, cheapest, longest output)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from chainray.results import RunResult

__all__ = ["StrategySummary", "summarize_bench", "verdicts"]


class StrategySummary(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: str
    runs: int
    failed: int
    latency_ms: float
    latency_min_ms: float
    latency_max_ms: float
    total_tokens: float
    api_calls: float
    estimated_cost: float
    output_length: float


def summarize_bench(results: Sequence[RunResult]) -> list[StrategySummary]:
    """One row per strategy, in the order strategies first appear; medians over repeats."""
    order = list(dict.fromkeys(r.strategy for r in results))
    rows = []
    for strategy in order:
        runs = [r for r in results if r.strategy == strategy]
        ok = [r for r in runs if r.status == "ok"] or runs
        latencies = [r.latency_ms for r in ok]
        rows.append(StrategySummary(
            strategy=strategy, runs=len(runs), failed=len(runs) - len(
                [r for r in runs if r.status == "ok"]),
            latency_ms=statistics.median(latencies), latency_min_ms=min(latencies),
            latency_max_ms=max(latencies),
            total_tokens=statistics.median(r.total_tokens for r in ok),
            api_calls=statistics.median(r.api_calls for r in ok),
            estimated_cost=statistics.median(r.estimated_cost for r in ok),
            output_length=statistics.median(r.output_length for r in ok)))
    return rows


def verdicts(rows: Sequence[StrategySummary]) -> list[str]:
    fastest = min(rows, key=lambda r: r.latency_ms)
    cheapest = min(rows, key=lambda r: r.estimated_cost)
    longest = max(rows, key=lambda r: r.output_length)
    slowest = max(rows, key=lambda r: r.latency_ms)
    speedup = slowest.latency_ms / fastest.latency_ms if fastest.latency_ms else 0.0
    return [f"Fastest: {fastest.strategy} ({fastest.latency_ms / 1000:.2f}s, {speedup:.1f}x "
            f"faster than {slowest.strategy})",
            f"Cheapest: {cheapest.strategy} (${cheapest.estimated_cost:.5f}, "
            f"{cheapest.total_tokens:.0f} tokens)",
            f"Longest output: {longest.strategy} ({longest.output_length:.0f} chars)"]
