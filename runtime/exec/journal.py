"""The run journal: each finished step's result on disk, so a run whose driver died can resume
without sending a finished step again.

One JSON-lines file per run: a header naming the chain, strategy and inputs (by hash), then one
``StepResult`` per finished step. Results hold outputs, never the API key.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from chainray.errors import InputError
from chainray.results import StepResult

__all__ = ["journal_dir", "Journal", "run_key"]


def journal_dir() -> Path:
    return Path(os.environ.get("CHAINRAY_HOME", Path.home() / ".chainray")) / "runs"


def run_key(chain_json: str, strategy: str, inputs: dict) -> str:
    """What a journal belongs to: the chain's content, the strategy and the inputs."""
    text = json.dumps([chain_json, strategy, inputs], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Journal:
    """Append-only record of one run's finished steps."""

    def __init__(self, directory: Path, run_id: str, key: str) -> None:
        self.path = directory / f"{run_id}.jsonl"
        self.run_id, self.key = run_id, key

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            self.path.write_text(json.dumps({"run_id": self.run_id, "key": self.key}) + "\n",
                                 encoding="utf-8")

    def record(self, result: StepResult) -> None:
        if result.status != "ok":
            return
        with self.path.open("a", encoding="utf-8") as file:
            file.write(result.model_dump_json() + "\n")
            file.flush()
            os.fsync(file.fileno())

    def finished_steps(self) -> dict[str, StepResult]:
        """The steps a resumed run need not send again; refuses a journal of another run."""
        if not self.path.exists():
            raise InputError(f"--resume {self.run_id}: no journal at {self.path}")
        lines = self.path.read_text(encoding="utf-8").splitlines()
        header = json.loads(lines[0]) if lines else {}
        if header.get("key") != self.key:
            raise InputError(f"--resume {self.run_id}: that run had another chain, strategy "
                             "or inputs; resume it with the same ones")
        done = {}
        for line in lines[1:]:
            try:
                result = StepResult.model_validate_json(line)
            except ValueError:
                continue  # a line cut short when the driver died
            done[result.id] = result
        return done
