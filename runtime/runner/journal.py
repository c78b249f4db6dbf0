"""The run journal: each finished step's result on disk, so a run whose driver died can resume
without sending a finished step again.

One JSON-lines file per run: a header naming what the run was (chain content, strategy, inputs,
model override: each by value or hash), then one ``StepResult`` per finished step, appended and
fsynced as the step finishes (a line cut short by a crash is skipped; of two lines for one step
the first counts). A resume with anything different is refused, saying what differed; so is a
journal that is not one. Results hold outputs, never the API key. Run ids are plain names, so
no path escapes the runs folder.

A run or batch being executed holds an OS file lock (``fcntl.flock``) in its folder, which the
kernel releases when the process dies: a second invocation of the same run is refused at once,
naming the process that holds it, before anything is sent.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from chainray.errors import InputError
from chainray.home import chainray_home
from chainray.results import StepResult

__all__ = ["journal_dir", "Journal", "run_key", "run_parts", "check_run_id", "append_step",
           "locked", "find_run"]

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_BATCH_RUN = re.compile(r"^(?P<batch>[A-Za-z0-9][A-Za-z0-9_-]*)-\d+$")


def journal_dir() -> Path:
    return chainray_home() / "runs"


def check_run_id(run_id: str) -> str:
    """``run_id`` if it is a plain name (letters, digits, - and _), else an ``InputError``."""
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise InputError(f"--resume {run_id!r}: a run id is letters, digits, '-' and '_' "
                         "(as chainray printed it), at most 64 characters")
    return run_id


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_parts(chain_json: str, strategy: str, inputs: dict, model: str | None) -> dict:
    """What a run is, part by part, so that a refused resume can say which part differed."""
    return {"chain": _digest(chain_json), "strategy": strategy,
            "inputs": _digest(json.dumps(inputs, sort_keys=True)),
            "model": model or "(each step's own)"}


def run_key(parts: dict) -> str:
    """One hash of a run's parts: what a journal belongs to."""
    return _digest(json.dumps(parts, sort_keys=True))


def find_run(run_id: str) -> Path:
    """The folder holding run ``run_id``'s journal: the runs folder, or for a run of a batch
    (``BATCH-N``) the batch's folder; the runs folder when there is none yet."""
    runs = journal_dir()
    if not (runs / f"{check_run_id(run_id)}.jsonl").exists() and (
            match := _BATCH_RUN.match(run_id)):
        inside = runs / match["batch"]
        if (inside / f"{run_id}.jsonl").exists():
            return inside
    return runs


@contextmanager
def locked(path: Path, what: str) -> Iterator[None]:
    """Hold the OS lock file ``path`` while ``what`` (a run or batch) executes; refuse at once
    when another process holds it, naming that process. The kernel releases the lock when
    the process dies, so a killed driver never leaves its run locked."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise InputError(f"{what} is being executed by process {holder} (lock {path}); "
                         "nothing was sent; wait for it to finish or stop it, then resume"
                         ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def append_step(path: Path, result: StepResult) -> None:
    """Append one finished step to the journal at ``path``, on disk before this returns.
    Only ``ok`` steps: a failed step is sent again by a resume."""
    if result.status != "ok":
        return
    with path.open("a", encoding="utf-8") as file:
        file.write(result.model_dump_json() + "\n")
        file.flush()
        os.fsync(file.fileno())


_PART_NAMES = {"chain": "the chain file's content", "strategy": "the strategy",
               "inputs": "the inputs", "model": "the --model override"}


class Journal:
    """Append-only record of one run's finished steps."""

    def __init__(self, directory: Path, run_id: str, key: str,
                 parts: dict | None = None) -> None:
        self.path = directory / f"{check_run_id(run_id)}.jsonl"
        self.run_id, self.key, self.parts = run_id, key, parts or {}

    def start(self) -> None:
        """Write the header of a new journal (a journal that exists is kept as it is)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            header = {"run_id": self.run_id, "key": self.key, "parts": self.parts}
            with self.path.open("w", encoding="utf-8") as file:
                file.write(json.dumps(header) + "\n")
                file.flush()
                os.fsync(file.fileno())

    def open(self, resume: bool) -> dict[str, StepResult]:
        """Start the journal; when resuming, first the steps it holds as finished (refusing
        a journal that is missing, not one, or of another run)."""
        finished = self.finished_steps() if resume else {}
        self.start()
        return finished

    def record(self, result: StepResult) -> None:
        append_step(self.path, result)

    def _header(self, first_line: str) -> dict:
        try:
            header = json.loads(first_line)
        except ValueError:
            header = None
        if not isinstance(header, dict) or not isinstance(header.get("key"), str):
            raise InputError(f"--resume {self.run_id}: {self.path} is not a chainray journal "
                             "(its first line is not a journal header); start a new run")
        return header

    def _refuse(self, header: dict) -> InputError:
        theirs = header.get("parts") if isinstance(header.get("parts"), dict) else {}
        differed = [name for part, name in _PART_NAMES.items()
                    if part in theirs and theirs.get(part) != self.parts.get(part)]
        detail = ", ".join(differed) if differed else "the chain, strategy, inputs or model"
        extra = ""
        if "model" in theirs and theirs["model"] != self.parts.get("model"):
            extra = f" (the run used model {theirs['model']!r})"
        return InputError(f"--resume {self.run_id}: that run had other {detail}{extra}; "
                          "resume it with the same ones")

    def finished_steps(self) -> dict[str, StepResult]:
        """The steps a resumed run need not send again; refuses a journal of another run."""
        if not self.path.is_file():
            raise InputError(f"--resume {self.run_id}: no journal at {self.path}")
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeError) as exc:
            raise InputError(f"--resume {self.run_id}: cannot read {self.path}: {exc}") from None
        header = self._header(lines[0] if lines else "")
        if header["key"] != self.key:
            raise self._refuse(header)
        done: dict[str, StepResult] = {}
        for line in lines[1:]:
            try:
                result = StepResult.model_validate_json(line)
            except ValueError:
                continue  # a line cut short when the driver died
            done.setdefault(result.id, result)  # of two lines for one step, the first counts
        return done
