"""Batches: one chain run per line of a JSON-lines inputs file, all under one RateLimiter.

A bad line refuses the whole batch before anything is sent (the error names every bad line),
so a user fixes the file once instead of paying for a partial batch and re-running the rest.
Results stream as JSON Lines, one ``RunResult`` a line as runs finish, then one summary line
``{"batch": {...}}``: a killed batch leaves every finished run readable.

A batch keeps a folder under the runs folder (``BatchRecord``): what it is (chain, strategy,
model, every line's inputs), each run's step journal, and each finished run's result. So
``--resume BATCH`` runs only the runs that did not finish, each without re-sending its
finished steps.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import IO

from pydantic import BaseModel, ConfigDict, ValidationError

from chainray.api.preflight import input_problems, refuse
from chainray.errors import InputError
from chainray.results import RunResult
from chainray.runner.journal import check_run_id
from chainray.spec.chain import Chain
from chainray.spec.problems import suggest

__all__ = ["read_batch_inputs", "BatchTotals", "BatchWriter", "BatchRecord", "BatchManifest"]


def read_batch_inputs(path: str, chain: Chain, base: dict[str, str | None],
                      model: str | None = None) -> list[dict]:
    """Every line's inputs (over ``base``), or an ``InputError`` naming each bad line (and
    each bad input of it: type, encoding, size against ``model``'s context window)."""
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
        found = [f"line {number}: unknown input {k!r}{suggest(k, chain.inputs)} (inputs: "
                 f"{', '.join(chain.inputs) or 'none'})" for k in data if k not in chain.inputs]
        known = {k: v for k, v in data.items() if k in chain.inputs}
        given = {k: v for k, v in base.items() if v is not None}
        found += input_problems(chain, {**given, **known}, model, f"line {number}: ")
        inputs = {**base, **{k: str(v) for k, v in known.items()}}
        found += [f"line {number}: input {k!r} has no value" for k, v in inputs.items()
                  if v is None]
        problems += found
        if not found:
            batch.append(inputs)
    refuse(problems, f"--inputs {path}: ")
    if not batch:
        raise InputError(f"--inputs {path}: no input lines")
    return batch


class BatchTotals(BaseModel):
    """The summary line of a batch: ``{"batch": {...}}``.

    ``runs`` counts every run in the output (those an earlier invocation finished included,
    ``resumed_runs`` of them); ``api_calls``, ``rate_limited`` and ``total_tokens`` count what
    this invocation sent; ``run_totals`` counts the whole batch over every invocation.
    """

    model_config = ConfigDict(extra="forbid")

    batch_id: str | None = None
    runs: int = 0
    ok: int = 0
    partial: int = 0
    failed: int = 0
    resumed_runs: int = 0
    latency_ms: float = 0.0
    api_calls: int = 0
    rate_limited: int = 0
    total_tokens: int = 0
    requests_per_min: float = 0.0
    tokens_per_min: float = 0.0
    run_totals: dict[str, int] = {"api_calls": 0, "rate_limited": 0, "total_tokens": 0}
    not_started: list[str] = []  # runs the spend cap kept from starting (resume them)
    spend: dict | None = None  # with --max-cost: cap_usd, spent_usd, refused, stopped

    @property
    def not_ok(self) -> int:
        return self.partial + self.failed

    def add(self, result: RunResult, resumed: bool = False) -> None:
        self.runs += 1
        setattr(self, result.status, getattr(self, result.status) + 1)
        whole = result.run_totals
        self.run_totals = {"api_calls": self.run_totals["api_calls"] + whole.api_calls,
                           "rate_limited": self.run_totals["rate_limited"] + whole.rate_limited,
                           "total_tokens": self.run_totals["total_tokens"] + whole.total_tokens}
        if resumed:
            self.resumed_runs += 1
            return
        self.api_calls += result.api_calls
        self.rate_limited += result.rate_limited
        self.total_tokens += result.total_tokens

    def close(self, elapsed_s: float) -> None:
        self.latency_ms = round(elapsed_s * 1000, 1)
        minutes = max(elapsed_s, 1e-9) / 60
        self.requests_per_min = round(self.api_calls / minutes, 1)
        self.tokens_per_min = round(self.total_tokens / minutes, 1)


class BatchWriter:
    """Streams JSON Lines: one ``RunResult`` per finished run, then ``{"batch": {...}}``."""

    def __init__(self, file: IO[str] | None, batch_id: str | None = None) -> None:
        self.file = file
        self.totals = BatchTotals(batch_id=batch_id)
        self.started = time.perf_counter()

    def add(self, result: RunResult, resumed: bool = False) -> None:
        self.totals.add(result, resumed)
        if self.file:
            self.file.write(result.model_dump_json() + "\n")
            self.file.flush()

    def close(self) -> BatchTotals:
        self.totals.close(time.perf_counter() - self.started)
        if self.file:
            self.file.write(json.dumps({"batch": self.totals.model_dump()}) + "\n")
            self.file.flush()
        return self.totals


class BatchManifest(BaseModel):
    """What a batch is: resuming with anything else is refused."""

    model_config = ConfigDict(extra="forbid")

    batch_id: str
    scenario: str
    parts: dict[str, str]  # chain hash, strategy, model override (as journal.run_parts)
    inputs: list[dict[str, str | None]]

    def run_id(self, index: int) -> str:
        return f"{self.batch_id}-{index}"


class BatchRecord:
    """A batch's folder: ``manifest.json``, one journal per run, ``results.jsonl``."""

    def __init__(self, runs_dir: Path, batch_id: str) -> None:
        self.batch_id = check_run_id(batch_id)
        self.folder = runs_dir / self.batch_id
        self.manifest_path = self.folder / "manifest.json"
        self.results_path = self.folder / "results.jsonl"

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def create(self, manifest: BatchManifest) -> None:
        self.folder.mkdir(parents=True, exist_ok=False)
        self.manifest_path.write_text(manifest.model_dump_json(), encoding="utf-8")

    def manifest(self) -> BatchManifest:
        try:
            return BatchManifest.model_validate_json(self.manifest_path.read_text("utf-8"))
        except (OSError, UnicodeError, ValidationError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "it is not a batch manifest"
            raise InputError(f"--resume {self.batch_id}: cannot use {self.manifest_path}: "
                             f"{reason}") from None

    def check(self, manifest: BatchManifest, parts: dict[str, str]) -> None:
        """Refuse to resume with another chain, strategy or model, naming what differed."""
        names = {"chain": "chain file content", "strategy": "strategy", "model": "--model"}
        differed = [f"{names.get(k, k)} ({manifest.parts.get(k)!r} then)"
                    for k in parts if manifest.parts.get(k) != parts[k]]
        if differed:
            raise InputError(f"--resume {self.batch_id}: that batch had another "
                             f"{', '.join(differed)}; resume it with the same ones")

    def record(self, result: RunResult) -> None:
        with self.results_path.open("a", encoding="utf-8") as file:
            file.write(result.model_dump_json() + "\n")
            file.flush()
            os.fsync(file.fileno())

    def finished_runs(self) -> dict[str, RunResult]:
        """Runs that an earlier invocation finished (a line cut short is not one)."""
        if not self.results_path.is_file():
            return {}
        done = {}
        for line in self.results_path.read_text(encoding="utf-8").splitlines():
            try:
                result = RunResult.model_validate_json(line)
            except ValueError:
                continue
            done[result.run_id] = result
        return done
