"""Journaled runs and batches: what ``resume=`` (``--resume``) reads and what a run leaves so
that it can be resumed.

A run keeps a journal of its finished steps under the runs folder; a batch keeps a folder
(``BatchRecord``): what it is (each run's parts and inputs), each run's step journal, and each
finished run's result. Preparing one (``PreparedRun``, ``PreparedBatch``) takes its OS lock,
writes or checks what it is, and reads what an earlier invocation finished: the journal is
opened here, once, in the driver; the Coordinator only appends finished steps to it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from chainray.api.config import SessionConfig, configure
from chainray.api.options import Objective, RunSpec, StrategyName, new_run_id, prepare_job
from chainray.errors import InputError
from chainray.results import RunResult
from chainray.runner.jobs import RunJob
from chainray.runner.journal import (
    Journal,
    check_run_id,
    find_run,
    journal_dir,
    locked,
    run_key,
    run_parts,
)
from chainray.spec.chain import Chain

__all__ = ["prepare_run", "prepare_batch", "PreparedRun", "PreparedBatch", "BatchManifest",
           "BatchRecord", "BatchRun", "job_parts", "is_batch"]

_PART_NAMES = {"chain": "chain file content", "strategy": "strategy", "model": "--model",
               "inputs": "inputs"}


def job_parts(job: RunJob) -> dict:
    """What ``job`` is, part by part (its journal's header)."""
    return run_parts(job.chain.model_dump_json(), job.strategy, job.inputs, job.model)


def is_batch(batch_id: str) -> bool:
    """True when ``batch_id`` names a batch's folder under the runs folder."""
    return BatchRecord(journal_dir(), batch_id).exists()


class BatchRun(BaseModel):
    """One run of a batch: what it is (``run_parts``) and its inputs."""

    model_config = ConfigDict(extra="forbid")

    parts: dict[str, str]
    inputs: dict[str, str | None]


class BatchManifest(BaseModel):
    """What a batch is: resuming with anything else is refused."""

    model_config = ConfigDict(extra="forbid")

    batch_id: str
    scenario: str
    runs: list[BatchRun]

    def run_id(self, index: int) -> str:
        return f"{self.batch_id}-{index}"


class BatchRecord:
    """A batch's folder: ``manifest.json``, one journal per run, ``results.jsonl``, and the
    ``batch.lock`` held while an invocation executes it."""

    def __init__(self, runs_dir: Path, batch_id: str) -> None:
        self.batch_id = check_run_id(batch_id)
        self.folder = runs_dir / self.batch_id
        self.manifest_path = self.folder / "manifest.json"
        self.results_path = self.folder / "results.jsonl"
        self.lock_path = self.folder / "batch.lock"

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

    def check(self, manifest: BatchManifest, runs: Sequence[BatchRun]) -> None:
        """Refuse to resume with other runs (chain, strategy, model, inputs), naming what
        differed."""
        if len(runs) != len(manifest.runs):
            raise InputError(f"--resume {self.batch_id}: that batch had {len(manifest.runs)} "
                             f"run(s), not {len(runs)}; resume it with the same ones")
        for then, now in zip(manifest.runs, runs, strict=True):
            differed = [f"{_PART_NAMES.get(k, k)} ({then.parts.get(k)!r} then)"
                        for k in now.parts if then.parts.get(k) != now.parts[k]]
            if differed:
                raise InputError(f"--resume {self.batch_id}: that batch had another "
                                 f"{', '.join(differed)}; resume it with the same ones")

    def record(self, result: RunResult) -> None:
        with self.results_path.open("a", encoding="utf-8") as file:
            file.write(result.model_dump_json() + "\n")
            file.flush()
            os.fsync(file.fileno())

    def results(self) -> list[RunResult]:
        """Every result an invocation recorded, in order (a line cut short is skipped)."""
        if not self.results_path.is_file():
            return []
        found = []
        for line in self.results_path.read_text(encoding="utf-8").splitlines():
            try:
                found.append(RunResult.model_validate_json(line))
            except ValueError:
                continue
        return found

    def finished_runs(self) -> dict[str, RunResult]:
        """Runs an earlier invocation finished ``ok``: a resume does not run them again
        (a failed or partial run is run again, without its finished steps)."""
        done: dict[str, RunResult] = {}
        for result in self.results():
            if result.status == "ok":
                done.setdefault(result.run_id, result)
        return done


_L = TypeVar("_L", bound="_Locked")


class _Locked:
    """What a prepared run or batch holds (its lock, its journal) until ``close``."""

    _held: ExitStack

    def close(self) -> None:
        self._held.close()

    def __enter__(self: _L) -> _L:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PreparedRun(_Locked):
    """One run ready to execute: ``job`` carries its journal's folder and the steps an
    earlier invocation finished (``resume``); the run is locked until ``close``.

    A run of a batch (``BATCH-N``) is found in its batch's folder and holds the batch's
    lock; its result is recorded with the batch's, so the batch counts it as finished.
    With ``journal`` false (and no ``resume``) nothing is written and nothing locked."""

    def __init__(self, job: RunJob, resume: bool, journal: bool = True) -> None:
        self.job, self.batch, self.path = job, None, None
        self._held = ExitStack()
        if not (journal or resume):
            return
        folder = find_run(job.run_id) if resume else journal_dir()
        if folder != journal_dir():
            self.batch = BatchRecord(folder.parent, folder.name)
        lock = self.batch.lock_path if self.batch else folder / f"{job.run_id}.lock"
        with ExitStack() as stack:
            stack.enter_context(locked(lock, f"run {job.run_id}"))
            parts = job_parts(job)
            journal_ = Journal(folder, job.run_id, run_key(parts), parts)
            if not resume and journal_.path.exists():
                raise InputError(f"run {job.run_id} exists already; resume it "
                                 f"(resume={job.run_id!r}, --resume {job.run_id})")
            finished = journal_.open(resume)
            self._held = stack.pop_all()  # kept until close()
        self.path = journal_.path
        self.job = job.model_copy(update={"resumed": finished, "journal_dir": str(folder)})

    def finish(self, result: RunResult) -> None:
        """Record a run of a batch with the batch's results (a resume of the batch runs it
        again unless it is ``ok``)."""
        if self.batch is not None:
            self.batch.record(result)



class PreparedBatch(_Locked):
    """A batch ready to execute: ``jobs`` all its runs (ids ``BATCH-N``), ``todo`` those to
    run now, each with its journal opened, and ``finished`` the results of runs an earlier
    invocation finished ``ok`` (``resume``). The manifest is written (a new batch) or checked
    (``resume``), and the batch locked until ``close``. With ``journal`` false (and no
    ``resume``) nothing is written and nothing locked."""

    def __init__(self, jobs: Sequence[RunJob], batch_id: str, resume: bool,
                 journal: bool = True, scenario: str = "") -> None:
        self.batch_id, self.record = check_run_id(batch_id), None
        self.jobs = [job.model_copy(update={"run_id": f"{batch_id}-{i}"})
                     for i, job in enumerate(jobs)]
        self.todo, self.finished, self.earlier = list(self.jobs), {}, []
        self._held = ExitStack()
        if not (journal or resume):
            return
        self.record = BatchRecord(journal_dir(), batch_id)
        if not resume and self.record.folder.exists():
            raise InputError(f"batch {batch_id} exists already; resume it "
                             f"(resume={batch_id!r}, --resume {batch_id})")
        if resume and not self.record.exists():
            raise InputError(f"--resume {batch_id}: no batch at {self.record.folder}")
        with ExitStack() as stack:
            stack.enter_context(locked(self.record.lock_path, f"batch {batch_id}"))
            self._open(resume, scenario)
            self._held = stack.pop_all()  # kept until close()

    def _open(self, resume: bool, scenario: str) -> None:
        record = self.record
        runs = [BatchRun(parts=job_parts(job), inputs=job.inputs) for job in self.jobs]
        manifest = BatchManifest(batch_id=self.batch_id, scenario=scenario, runs=runs)
        if resume:
            record.check(record.manifest(), runs)
            self.earlier = record.results()
            self.finished = record.finished_runs()
        else:
            record.manifest_path.write_text(manifest.model_dump_json(), encoding="utf-8")
        self.todo = []
        for job in self.jobs:
            if job.run_id in self.finished:
                continue
            parts = job_parts(job)
            journal = Journal(record.folder, job.run_id, run_key(parts), parts)
            steps = journal.open(resume=journal.path.exists())
            self.todo.append(job.model_copy(update={"resumed": steps,
                                                    "journal_dir": str(record.folder)}))

    def finish(self, result: RunResult) -> None:
        """Record a finished run, whatever its status: a resume runs it again unless it is
        ``ok``, and the batch's ``run_totals`` count what every invocation sent."""
        if self.record is not None:
            self.record.record(result)



def prepare_run(chain: Chain | str, strategy: StrategyName = "hybrid",
                inputs: Mapping[str, Any] | None = None, *, objective: Objective = "latency",
                config: SessionConfig | None = None, resume: str | None = None,
                run_id: str | None = None, journal: bool = True) -> PreparedRun:
    """Everything ``Session.run`` does before it sends anything, with no Ray: the run
    checked, its journal opened and locked (``resume``: the steps it holds as finished
    loaded). Run it with ``Session.run_prepared``; close it (``with``) afterwards."""
    job = prepare_job(chain, strategy, inputs, objective, configure(config),
                      run_id=resume or run_id)
    return PreparedRun(job, resume=resume is not None, journal=journal)


def prepare_batch(runs: Iterable[RunSpec], strategy: StrategyName = "hybrid", *,
                  objective: Objective = "latency", config: SessionConfig | None = None,
                  resume: str | None = None, batch_id: str | None = None,
                  journal: bool = True) -> PreparedBatch:
    """``prepare_run`` for ``Session.run_many``: every item checked, the batch's folder
    written (or, ``resume``, checked against these runs and read), and locked."""
    config = configure(config)
    pairs = [item if isinstance(item, tuple) else (item, None) for item in runs]
    jobs = [prepare_job(chain, strategy, inputs, objective, config)
            for chain, inputs in pairs]
    label = ", ".join(dict.fromkeys(job.chain.name for job in jobs))
    return PreparedBatch(jobs, resume or batch_id or f"b{new_run_id()}",
                         resume=resume is not None, journal=journal, scenario=label)
