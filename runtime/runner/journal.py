"""The run journal: each finished step's result on disk, so a run whose driver died can resume
without sending a finished step again.

One JSON-lines file per run: a header naming what the run was (chain content, strategy, inputs,
model override: each by value or hash), then one ``StepResult`` per finished step. A resume
with anything different is refused, saying what differed; so is a journal that is not one.
Results hold outputs, never the API key. Run ids are plain names, so no path escapes the runs
folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from chainray.errors import InputError
from chainray.home import chainray_home
from chainray.results import StepResult

__all__ = ["journal_dir", "Journal", "run_key", "run_parts", "check_run_id"]

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def journal_dir() -> Path:
    return chainray_home() / "runs"


def check_run_id(run_id: str) -> str:
    """``run_id`` if it is a plain name (letters, digits, - and _), else an ``InputError``."""
    if not _RUN_ID.match(run_id or ""):
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


_PART_NAMES = {"chain": "the chain file's content", "strategy": "the strategy",
               "inputs": "the inputs", "model": "the --model override"}


class Journal:
    """Append-only record of one run's finished steps."""

    def __init__(self, directory: Path, run_id: str, key: str,
                 parts: dict | None = None) -> None:
        self.path = directory / f"{check_run_id(run_id)}.jsonl"
        self.run_id, self.key, self.parts = run_id, key, parts or {}

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            header = {"run_id": self.run_id, "key": self.key, "parts": self.parts}
            self.path.write_text(json.dumps(header) + "\n", encoding="utf-8")

    def record(self, result: StepResult) -> None:
        if result.status != "ok":
            return
        with self.path.open("a", encoding="utf-8") as file:
            file.write(result.model_dump_json() + "\n")
            file.flush()
            os.fsync(file.fileno())

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
        done = {}
        for line in lines[1:]:
            try:
                result = StepResult.model_validate_json(line)
            except ValueError:
                continue  # a line cut short when the driver died
            done[result.id] = result
        return done
