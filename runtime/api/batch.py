"""Batches: one chain run per line of a JSON-lines inputs file, all under one RateLimiter.

A bad line refuses the whole batch before anything is sent (the error names every bad line),
so a user fixes the file once instead of paying for a partial batch and re-running the rest.
Results are streamed to the output file as runs finish; the driver keeps only running totals.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import IO

from pydantic import BaseModel, ConfigDict

from chainray.errors import InputError
from chainray.results import RunResult
from chainray.spec.chain import Chain

__all__ = ["read_batch_inputs", "BatchTotals", "BatchWriter"]


def read_batch_inputs(path: str, chain: Chain, base: dict[str, str | None]) -> list[dict]:
    """Every line's inputs (over ``base``), or an ``InputError`` naming each bad line."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"--inputs: cannot read {path}: {exc.strerror}") from None
    batch, problems = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as exc:
            problems.append(f"line {number}: not JSON ({exc.msg})")
            continue
        if not isinstance(data, dict):
            problems.append(f"line {number}: must be an object of inputs")
            continue
        unknown = [k for k in data if k not in chain.inputs]
        if unknown:
            problems.append(f"line {number}: unknown input {unknown[0]!r} (inputs: "
                            f"{', '.join(chain.inputs) or 'none'})")
            continue
        bad = [k for k, v in data.items() if not isinstance(v, (str, int, float))]
        if bad:
            problems.append(f"line {number}: input {bad[0]!r} must be text or a number")
            continue
        inputs = {**base, **{k: str(v) for k, v in data.items()}}
        missing = [k for k, v in inputs.items() if v is None]
        if missing:
            problems.append(f"line {number}: input {missing[0]!r} has no value")
            continue
        batch.append(inputs)
    if problems:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more"
                                            if len(problems) > 10 else "")
        raise InputError(f"--inputs {path}: {len(problems)} bad line(s), nothing was run: "
                         f"{shown}")
    if not batch:
        raise InputError(f"--inputs {path}: no input lines")
    return batch


class BatchTotals(BaseModel):
    """The ``batch`` object of the batch JSON."""

    model_config = ConfigDict(extra="forbid")

    runs: int = 0
    failed: int = 0
    latency_ms: float = 0.0
    api_calls: int = 0
    rate_limited: int = 0
    total_tokens: int = 0
    requests_per_min: float = 0.0
    tokens_per_min: float = 0.0

    def add(self, result: RunResult) -> None:
        self.runs += 1
        self.failed += result.status != "ok"
        self.api_calls += result.api_calls
        self.rate_limited += result.rate_limited
        self.total_tokens += result.total_tokens

    def close(self, elapsed_s: float) -> None:
        self.latency_ms = round(elapsed_s * 1000, 1)
        minutes = max(elapsed_s, 1e-9) / 60
        self.requests_per_min = round(self.api_calls / minutes, 1)
        self.tokens_per_min = round(self.total_tokens / minutes, 1)


class BatchWriter:
    """Streams ``{"runs": [RunResult, ...], "batch": {...}}`` to a file as runs finish."""

    def __init__(self, file: IO[str] | None) -> None:
        self.file, self.count = file, 0
        self.totals = BatchTotals()
        self.started = time.perf_counter()
        if file:
            file.write('{"runs": [\n')

    def add(self, result: RunResult) -> None:
        self.totals.add(result)
        if self.file:
            self.file.write((",\n" if self.count else "") + result.model_dump_json())
            self.file.flush()
        self.count += 1

    def close(self) -> BatchTotals:
        self.totals.close(time.perf_counter() - self.started)
        if self.file:
            self.file.write(f'\n], "batch": {self.totals.model_dump_json()}}}\n')
            self.file.flush()
        return self.totals

