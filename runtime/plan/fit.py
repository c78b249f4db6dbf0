"""The latency model of one endpoint and model, and its fit to measured requests.

A request takes ``overhead + ttft + prefill * prompt tokens + (completion - 1) / decode speed``
with a lognormal spread of time to first token. A self-hosted engine (vLLM, Ollama, llama.cpp,
TGI) decodes ``slots`` requests at full speed and shares its throughput beyond that: with
``k`` requests in flight each one progresses at ``min(1, slots / k)`` of full speed. ``slots``
is ``None`` when the measurements show no slowdown with requests in flight.

The defaults are the embedded simulator's (``chainray sim``: time to first token lognormal
with median 0.5 s and shape 0.65, 0.05 ms a prompt token, 70 tokens/s), not a real model's.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from chainray.errors import InputError
from chainray.results import RunResult, StepResult

__all__ = ["LatencyModel", "Sample", "fit_samples", "fit_slots", "step_seconds",
           "load_results", "fit_steps", "calibrate"]

_MIN = 4  # requests below which nothing is fitted


class LatencyModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    ttft_s: float = Field(default=round(0.5 * math.exp(0.65**2 / 2), 4), ge=0,
                          description="mean")
    ttft_sigma: float = Field(default=0.65, ge=0, description="lognormal shape")
    prefill_s_per_token: float = Field(default=0.00005, ge=0)
    tokens_per_s: float = Field(default=70.0, gt=0)
    overhead_s: float = Field(default=0.01, ge=0, description="chainray's own time per step")
    slots: int | None = Field(default=None, ge=1, description="requests served at full speed")
    requests: int = Field(default=0, ge=0, description="measured requests it rests on")
    seed: int = 0
    source: str = "defaults (the embedded simulator's gpt-4o-mini profile, not measured)"


class Sample(NamedTuple):
    """One measured request: tokens, seconds in flight, time to first token (streamed only)
    and the mean number of requests in flight on its endpoint while it was."""

    prompt: float
    completion: float
    flight_s: float
    ttft_s: float | None
    in_flight: float = 1.0


def step_seconds(model: LatencyModel, prompt_tokens: float, completion_tokens: float,
                 ttft_s: float | None = None) -> float:
    """How long one llm call takes alone under ``model`` (mean time to first token)."""
    ttft = model.ttft_s if ttft_s is None else ttft_s
    return (model.overhead_s + ttft + model.prefill_s_per_token * prompt_tokens
            + max(0.0, completion_tokens - 1) / model.tokens_per_s)


def _lstsq(columns: list[list[float]], y: list[float]) -> list[float]:
    """Least squares ``y ~ columns`` by the normal equations (a handful of unknowns)."""
    n = len(columns)
    a = [[sum(p * q for p, q in zip(ci, cj, strict=True)) for cj in columns]
         + [sum(p * q for p, q in zip(ci, y, strict=True))] for ci in columns]
    for i in range(n):
        pivot = max(range(i, n), key=lambda r: abs(a[r][i]))
        a[i], a[pivot] = a[pivot], a[i]
        if abs(a[i][i]) < 1e-12:
            raise ValueError("singular")
        for r in range(n):
            if r != i:
                f = a[r][i] / a[i][i]
                a[r] = [x - f * z for x, z in zip(a[r], a[i], strict=True)]
    return [a[i][n] / a[i][i] for i in range(n)]


def _predicted(columns: list[list[float]], coef: list[float]) -> list[float]:
    return [sum(c[k] * w for c, w in zip(columns, coef, strict=True))
            for k in range(len(columns[0]))]


def _unexplained(columns: list[list[float]], k: int) -> list[float]:
    """What of column ``k`` the other columns do not explain (Frisch-Waugh)."""
    others = columns[:k] + columns[k + 1:]
    if not others:
        return columns[k]
    fitted = _predicted(others, _lstsq(others, columns[k]))
    return [a - b for a, b in zip(columns[k], fitted, strict=True)]


def _significant(columns: list[list[float]], y: list[float], k: int,
                 alone: list[float]) -> bool:
    """Coefficient ``k`` of ``y ~ columns`` is at least two standard errors above zero
    (``alone``: ``_unexplained(columns, k)``)."""
    free = len(y) - len(columns)
    if free <= 0:
        return False
    coef = _lstsq(columns, y)
    spread = sum((a - b) ** 2 for a, b in zip(y, _predicted(columns, coef), strict=True)) / free
    leverage = sum(a * a for a in alone)
    return leverage > 0 and coef[k] > 2 * math.sqrt(spread / leverage)


def _pinned(columns: list[list[float]], y: list[float], k: int) -> bool:
    """Whether the data pin coefficient ``k`` down as positive, with and without the one
    request that weighs most on it. Time to first token varies by a factor of two from
    request to request: a handful of similar prompts and one long one cannot tell prefill
    from that noise, and a slope fitted to it would price a long prompt in seconds a token."""
    try:
        alone = _unexplained(columns, k)
        heaviest = max(range(len(y)), key=lambda i: abs(alone[i]))
        rest = [i for i in range(len(y)) if i != heaviest]
        fewer = [[c[i] for i in rest] for c in columns]
        return _significant(columns, y, k, alone) and _significant(
            fewer, [y[i] for i in rest], k, _unexplained(fewer, k))
    except ValueError:  # singular: the others explain column k entirely
        return False


def _fit(samples: list[Sample], base: LatencyModel
         ) -> tuple[LatencyModel, list[float]] | None:
    """One least-squares fit; the model and each request's residual, or None if unusable."""
    flight = [s.flight_s for s in samples]
    prompt = [s.prompt for s in samples]
    decode = [s.completion - 1 for s in samples]
    ones = [1.0] * len(samples)
    varied = max(prompt) - min(prompt) > 0.2 * max(1.0, statistics.mean(prompt))
    streamed = all(s.ttft_s is not None for s in samples)
    lengths_vary = len({s.completion for s in samples}) >= 2
    try:
        if streamed:
            ttft = [s.ttft_s for s in samples]
            varied = varied and _pinned([ones, prompt], ttft, 1)  # type: ignore[arg-type]
            columns = [ones, prompt] if varied else [ones]
            target = ttft if varied else [t - base.prefill_s_per_token * p  # type: ignore
                                          for t, p in zip(ttft, prompt, strict=True)]
            coef = _lstsq(columns, target)  # type: ignore[arg-type]
            residual = [t - p for t, p in zip(target, _predicted(columns, coef), strict=True)]
            rest = [f - t for f, t in zip(flight, ttft, strict=True)]  # type: ignore[operator]
            per_token = _lstsq([decode], rest)[0]
            intercept, prefill = coef[0], coef[1] if varied else base.prefill_s_per_token
        elif not lengths_vary:  # replies of one length: decode is what the base ttft leaves
            fixed = [base.overhead_s + base.ttft_s + base.prefill_s_per_token * p
                     for p in prompt]
            per_token = _lstsq([decode], [f - x for f, x in zip(flight, fixed, strict=True)])[0]
            residual = [f - x - per_token * d
                        for f, x, d in zip(flight, fixed, decode, strict=True)]
            intercept, prefill = base.overhead_s + base.ttft_s, base.prefill_s_per_token
        else:
            varied = varied and _pinned([ones, decode, prompt], flight, 2)
            columns = [ones, decode] + ([prompt] if varied else [])
            target = flight if varied else [
                f - base.prefill_s_per_token * p for f, p in zip(flight, prompt, strict=True)]
            coef = _lstsq(columns, target)
            residual = [t - p for t, p in zip(target, _predicted(columns, coef), strict=True)]
            intercept, per_token = coef[0], coef[1]
            prefill = coef[2] if varied else base.prefill_s_per_token
    except ValueError:
        return None
    if per_token <= 0:
        return None
    ttft_mean = max(0.0, intercept - base.overhead_s)
    spread = statistics.pvariance(residual)
    sigma = math.sqrt(math.log1p(spread / ttft_mean**2)) if ttft_mean > 0 else 0.0
    return base.model_copy(update={
        "ttft_s": round(ttft_mean, 4), "ttft_sigma": round(min(sigma, 2.0), 3),
        "prefill_s_per_token": round(max(0.0, prefill), 8),
        "tokens_per_s": round(1 / per_token, 2), "requests": len(samples),
        "source": f"fitted to {len(samples)} requests"
                  + (" (with streamed time to first token)" if streamed else "")}), residual


def fit_samples(samples: list[Sample], base: LatencyModel | None = None) -> LatencyModel:
    """Fit time to first token, prefill and decode speed to requests that ran alone (or,
    when too few did, to all of them), then ``slots`` to how the rest slowed down.

    Time in flight is regressed on ``[1, completion - 1, prompt]`` by least squares (where
    every request streamed, time to first token and prefill are fitted to the measured
    ``ttft`` and decode speed to the rest). A coefficient the data cannot pin down keeps the
    base's value. One pass of trimming drops requests delayed far beyond the fit (a loaded
    machine) and fits again.
    """
    base = base or LatencyModel()
    samples = [s for s in samples if s.completion > 1 and s.flight_s > 0]
    alone = [s for s in samples if s.in_flight <= 1.25]
    use = alone if len(alone) >= _MIN else samples
    if len(use) < _MIN:
        return base
    first = _fit(use, base)
    if first is None:
        return base
    errors = [abs(e) for e in first[1]]
    cut = 4 * statistics.median(errors) + 1e-3
    kept = [s for s, e in zip(use, errors, strict=True) if e <= cut]
    second = _fit(kept, base) if _MIN <= len(kept) < len(use) else None
    model = (second or first)[0]
    return fit_slots(samples, model)


def _slowdown(sample: Sample, model: LatencyModel) -> float:
    """How much longer than alone a request took: its decoding when time to first token was
    measured (what an engine shares), else all its time in flight."""
    decode = max(0.0, sample.completion - 1) / model.tokens_per_s
    if sample.ttft_s is not None and decode > 0:
        return (sample.flight_s - sample.ttft_s) / decode
    return sample.flight_s / max(1e-6, step_seconds(model, sample.prompt, sample.completion)
                                 - model.overhead_s)


def fit_slots(samples: list[Sample], model: LatencyModel) -> LatencyModel:
    """``slots``: the number of requests in flight beyond which requests slow down in
    proportion, if the measurements show it (else ``None``).

    Each request's slowdown is its decoding time (else its time in flight) over what the
    model predicts for it alone; ``max(1, k / slots)`` is fitted to it (k: requests decoding
    while it did) by least absolute deviations (a cold start's outliers do not decide it) over
    every whole ``slots`` from 1 up to the most requests seen at once, and kept only if it
    explains the slowdowns at least twice as well as no slowdown at all.
    """
    crowded = [s for s in samples if s.in_flight > 1.25]
    if len(crowded) < 2:
        return model.model_copy(update={"requests": len(samples)})
    ratio = [(s.in_flight, _slowdown(s, model)) for s in samples]
    flat = sum(abs(r - 1) for _, r in ratio)
    best, best_error = None, flat
    for slots in range(1, math.ceil(max(k for k, _ in ratio)) + 1):
        error = sum(abs(r - max(1.0, k / slots)) for k, r in ratio)
        if error < best_error:
            best, best_error = slots, error
    keep = best is not None and best_error * 2 <= flat
    source = model.source + (f"; slows beyond ~{best} requests in flight" if keep else "")
    return model.model_copy(update={"slots": best if keep else None, "source": source,
                                    "requests": len(samples)})


def load_results(paths: Iterable[str]) -> list[RunResult]:
    results = []
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
            try:
                data = json.loads(text)
            except ValueError:  # a batch's JSON Lines: runs, then a {"batch": ...} line
                data = [json.loads(line) for line in text.splitlines() if line.strip()]
            items = data.get("runs", [data]) if isinstance(data, dict) else data
            items = [i for i in items if not (isinstance(i, dict) and "batch" in i)]
            results.extend(RunResult.model_validate(item) for item in items)
        except (OSError, ValueError) as exc:
            first = str(exc).splitlines()[0]
            raise InputError(f"--calibrate {path}: cannot read it: {first}") from None
    return results


def fit_steps(steps: list[StepResult], base: LatencyModel | None = None) -> LatencyModel:
    """Fit the latency model to measured llm steps (first-attempt successes, not cached)."""
    samples = [Sample(float(s.prompt_tokens), float(s.completion_tokens),
                      (s.latency_ms - s.queued_ms) / 1000,
                      None if s.ttft_ms is None else s.ttft_ms / 1000)
               for s in steps if s.status == "ok" and s.attempts == 1 and not s.cached]
    model = fit_samples(samples, base)
    return model.model_copy(update={"source": model.source.replace("requests", "steps")})


def calibrate(paths: Iterable[str], base: LatencyModel | None = None) -> LatencyModel:
    """Fit the latency model to the llm steps of earlier runs' JSON results."""
    return fit_steps([s for r in load_results(paths) for s in r.steps], base)
