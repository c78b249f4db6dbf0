"""Compare strategies on identical inputs: medians and spread of repeated runs, the seed's
verdict lines (fastest, cheapest, longest output) named only when the gap beats the noise, and
a quality proxy: how much sibling outputs repeat each other.

Only runs that finished ``ok`` are judged: a row's medians come from its ok runs, a strategy
with none is never named fastest, cheapest or longest, and every verdict says which
strategies failed ("Fastest: parallel (0.80s) -- of the ok runs; hybrid failed")."""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from chainray.results import RunResult

__all__ = ["StrategySummary", "BenchSummary", "summarize_bench", "verdicts", "redundancy",
           "bench_summary", "best_of"]

_WORD = re.compile(r"[a-z0-9][a-z0-9'-]*")


class StrategySummary(BaseModel):
    """One strategy over its repeats: medians, and min..max where it varies, over its ``ok``
    runs (over all its runs when none finished: what the failures cost)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: str
    runs: int
    failed: int
    latency_ms: float
    latency_min_ms: float
    latency_max_ms: float
    total_tokens: float
    total_tokens_min: float
    total_tokens_max: float
    cached_tokens: float = 0.0  # median prompt tokens read from the provider's prompt cache
    api_calls: float
    retries: float
    rate_limited: float
    queued_ms: float
    estimated_cost: float
    estimated_cost_min: float
    estimated_cost_max: float
    output_length: float
    output_length_min: float
    output_length_max: float
    redundancy: float  # share of sibling outputs' word 3-grams that another sibling also wrote


class BenchSummary(BaseModel):
    """What ``bench --summary-json`` writes: the table's rows and its verdict lines."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scenario: str
    rows: tuple[StrategySummary, ...]
    verdicts: tuple[str, ...]


def _trigrams(text: str) -> set[tuple[str, str, str]]:
    words = _WORD.findall(text.lower())
    return set(zip(words, words[1:], words[2:], strict=False))


def redundancy(texts: Sequence[str]) -> float:
    """Share of the word 3-grams of ``texts`` that also occur in another of them (0..1).

    0: no two texts share a three-word phrase; 1: every phrase of every text is repeated
    elsewhere. Each text counts a phrase once, however often it uses it itself.
    """
    sets = [_trigrams(t) for t in texts if t]
    if len(sets) < 2:
        return 0.0
    seen_in = Counter(g for grams in sets for g in grams)
    total = sum(len(grams) for grams in sets)
    repeated = sum(1 for grams in sets for g in grams if seen_in[g] > 1)
    return repeated / total if total else 0.0


def run_redundancy(result: RunResult) -> float:
    """Redundancy between the outputs of a run's non-final steps (the siblings)."""
    needed = {dep for step in result.steps for dep in step.depends_on}
    return redundancy([s.output for s in result.steps if s.status == "ok" and s.id in needed])


def _spread(runs: Sequence[RunResult], field: str) -> tuple[float, float, float]:
    values = [float(getattr(r, field)) for r in runs]
    return statistics.median(values), min(values), max(values)


def summarize_bench(results: Sequence[RunResult]) -> list[StrategySummary]:
    """One row per strategy, in the order strategies first appear; medians over repeats."""
    order = list(dict.fromkeys(r.strategy for r in results))
    rows = []
    for strategy in order:
        runs = [r for r in results if r.strategy == strategy]
        good = [r for r in runs if r.status == "ok"]
        ok = good or runs

        latency, tokens, cost, length = (_spread(ok, f) for f in (
            "latency_ms", "total_tokens", "estimated_cost", "output_length"))
        rows.append(StrategySummary(
            strategy=strategy, runs=len(runs), failed=len(runs) - len(good),
            latency_ms=latency[0], latency_min_ms=latency[1], latency_max_ms=latency[2],
            total_tokens=tokens[0], total_tokens_min=tokens[1], total_tokens_max=tokens[2],
            cached_tokens=statistics.median(r.cached_tokens for r in ok),
            api_calls=statistics.median(r.api_calls for r in ok),
            retries=statistics.median(r.retries for r in ok),
            rate_limited=statistics.median(r.rate_limited for r in ok),
            queued_ms=statistics.median(r.queued_ms for r in ok),
            estimated_cost=cost[0], estimated_cost_min=cost[1], estimated_cost_max=cost[2],
            output_length=length[0], output_length_min=length[1],
            output_length_max=length[2],
            redundancy=round(statistics.median(run_redundancy(r) for r in ok), 4)))
    return rows


def best_of(rows: Sequence[StrategySummary], field: str, lowest: bool
          ) -> tuple[StrategySummary, StrategySummary | None, bool]:
    """The best row, the runner-up, and whether the best is clear of the noise: its range over
    repeats does not overlap the runner-up's (with one run each, any gap counts)."""
    ordered = sorted(rows, key=lambda r: getattr(r, field), reverse=not lowest)
    best = ordered[0]
    if len(ordered) < 2:
        return best, None, True
    second = ordered[1]
    low, high = (f"{field}_min", f"{field}_max") if field != "latency_ms" else (
        "latency_min_ms", "latency_max_ms")
    if lowest:
        clear = getattr(best, high) < getattr(second, low)
    else:
        clear = getattr(best, low) > getattr(second, high)
    return best, second, clear and getattr(best, field) != getattr(second, field)


def _failures(rows: Sequence[StrategySummary]) -> str:
    """What the verdicts leave out: "; hybrid failed (2 of 2 runs)", "" when nothing failed."""
    notes = [f"{r.strategy} failed" + (f" ({r.failed} of {r.runs} runs)" if r.runs > 1 else "")
             for r in rows if r.failed]
    return f" -- of the ok runs; {', '.join(notes)}" if notes else ""


def verdicts(rows: Sequence[StrategySummary]) -> list[str]:
    """Fastest, cheapest and longest output, each named only when the gap beats the spread,
    and only among the runs that finished ``ok``: a failed or partial run is quick and cheap
    because it stopped, so it never wins. A strategy none of whose runs finished is left out
    and named as failed; one with some failed runs is judged on its ok runs."""
    ranked = [r for r in rows if r.failed < r.runs]
    if not ranked:
        return ["No verdict: no run finished ok (" + ", ".join(
            f"{r.strategy} failed" for r in rows) + ")"]
    lines = []
    failed = _failures(rows)
    repeated = max(r.runs for r in rows) > 1
    noise = "their ranges over repeats overlap" if repeated else "they are equal"
    best, second, clear = best_of(ranked, "latency_ms", lowest=True)
    if second is None or clear:
        slowest = max(ranked, key=lambda r: r.latency_ms)
        speedup = slowest.latency_ms / best.latency_ms if best.latency_ms else 0.0
        lines.append(f"Fastest: {best.strategy} ({best.latency_ms / 1000:.2f}s"
                     + (f", {speedup:.1f}x faster than {slowest.strategy}" if second else "")
                     + ")")
    else:
        lines.append(f"Fastest: tie between {best.strategy} ({best.latency_ms / 1000:.2f}s) "
                     f"and {second.strategy} ({second.latency_ms / 1000:.2f}s): {noise}")
    best, second, clear = best_of(ranked, "estimated_cost", lowest=True)
    if second is None or clear:
        cached = f", {best.cached_tokens:.0f} of them cached at a lower price" \
            if best.cached_tokens else ""
        lines.append(f"Cheapest: {best.strategy} (${best.estimated_cost:.5f}, "
                     f"{best.total_tokens:.0f} tokens{cached})")
    else:
        lines.append(f"Cheapest: tie between {best.strategy} (${best.estimated_cost:.5f}) and "
                     f"{second.strategy} (${second.estimated_cost:.5f}): {noise}")
    best, second, clear = best_of(ranked, "output_length", lowest=False)
    if second is None or clear:
        lines.append(f"Longest output: {best.strategy} ({best.output_length:.0f} chars)")
    else:
        lines.append(f"Longest output: tie between {best.strategy} and {second.strategy} "
                     f"({best.output_length:.0f} and {second.output_length:.0f} chars): {noise}")
    lines = [line + failed for line in lines]
    least = min(ranked, key=lambda r: r.redundancy)
    most = max(ranked, key=lambda r: r.redundancy)
    if most.redundancy > least.redundancy:
        lines.append(f"Redundancy between sibling outputs: {most.strategy} "
                     f"{most.redundancy:.0%} of 3-word phrases repeated, {least.strategy} "
                     f"{least.redundancy:.0%}")
    return lines


def bench_summary(scenario: str, results: Sequence[RunResult]) -> BenchSummary:
    rows = summarize_bench(results)
    return BenchSummary(scenario=scenario, rows=tuple(rows), verdicts=tuple(verdicts(rows)))
