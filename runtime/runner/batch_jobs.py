"""Batch API lines and jobs, free of Ray and of HTTP: what one step sends as a line, what a
result line means for it, and the job log a batch keeps so that a resume polls a job that
exists instead of creating (and paying for) it again.

A line's ``custom_id`` is ``RUN_ID/STEP_ID`` (run ids hold no ``/``); results come back in
any order and are mapped by it. A line's body is built by the same code as an online call
(``llm_request``: model settings, ``response_format`` for structured output), adapted as the
call path adapts it (reasoning models' ``max_completion_tokens``, dropped sampling settings,
parameters the model rejected), never streamed.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from chainray.call.adaptations import Adaptation, adapt, known_adaptations
from chainray.call.batch_client import CHAT_URL
from chainray.call.completion import Completion, read_completion
from chainray.call.endpoint import LLMReply
from chainray.call.error_table import NO_RETRY_429
from chainray.errors import EndpointError
from chainray.runner.step_exec import StepRequest, llm_request

__all__ = ["custom_id", "split_custom_id", "LineState", "line_outcome", "JobLog", "JobEntry",
           "journaled_jobs"]


def custom_id(run_id: str, step_id: str) -> str:
    return f"{run_id}/{step_id}"


def split_custom_id(value: str) -> tuple[str, str]:
    run_id, _, step_id = value.partition("/")
    return run_id, step_id


@dataclass
class LineState:
    """One llm step on its way through jobs: the messages it sends (a schema correction
    adds to them), the model it is at (fallbacks in order), lines sent so far, and what
    its lines cost, added up as an online step's calls are."""

    request: StepRequest
    messages: list[dict]
    models: list[str]
    model_index: int = 0
    lines_sent: int = 0
    corrected: bool = False
    first_sent_at: float = 0.0
    sent_body: dict[str, Any] = field(default_factory=dict)  # of its last line
    reply: LLMReply = field(default_factory=LLMReply)

    @property
    def model(self) -> str:
        return self.models[self.model_index]

    @property
    def custom_id(self) -> str:
        return custom_id(self.request.run_id, self.request.step.id)

    def body(self, base_url: str, learned: Mapping[str, Adaptation]) -> dict[str, Any]:
        """The chat completion request this line sends, as the call path would send it."""
        asked = llm_request(self.request, self.messages, self.model, base_url)
        kwargs = asked.model_copy(update={"stream": False}).as_kwargs()
        kwargs.pop("extra_headers", None)  # the step's tag header: a line has no headers
        return adapt(kwargs, {**known_adaptations(self.model), **learned})

    def line(self, base_url: str, learned: Mapping[str, Adaptation]) -> dict[str, Any]:
        return {"custom_id": self.custom_id, "method": "POST", "url": CHAT_URL,
                "body": self.body(base_url, learned)}


def _line_error(line: Mapping[str, Any]) -> EndpointError:
    """The error a result line reports: the request's own (status and body), or the batch's
    (``batch_expired``, ``batch_cancelled``, ...)."""
    response = line.get("response") if isinstance(line.get("response"), dict) else {}
    status = response.get("status_code") if isinstance(response.get("status_code"), int) \
        else None
    body = response.get("body") if isinstance(response.get("body"), dict) else {}
    error = body.get("error") if isinstance(body.get("error"), dict) else \
        line.get("error") if isinstance(line.get("error"), dict) else {}
    code = error.get("code") if isinstance(error.get("code"), str) else None
    kind = error.get("type") if isinstance(error.get("type"), str) else None
    param = error.get("param") if isinstance(error.get("param"), str) else None
    message = str(error.get("message") or f"the batch line failed (HTTP {status})")
    retryable = (status is None and code != "batch_cancelled") or (status or 0) >= 500 or \
        status in (408, 409) or (status == 429 and code not in NO_RETRY_429
                                  and kind != "insufficient_quota")
    return EndpointError(f"batch line: {message}"[:500], status=status, code=code, type=kind,
                         param=param, retryable=retryable)


def line_outcome(line: Mapping[str, Any] | None,
                 messages: list[dict]) -> Completion | EndpointError:
    """What one result line says: a completion, or the error (a line missing from both
    files, as an expired or cancelled job leaves it, is a retryable ``batch_missing``)."""
    if line is None:
        return EndpointError("batch line: no result (the job ended before it ran)",
                             code="batch_missing", retryable=True)
    response = line.get("response")
    if isinstance(response, dict) and response.get("status_code") == 200 and not \
            line.get("error"):
        body = response.get("body")
        try:
            return read_completion(json.dumps(body).encode(), messages)
        except EndpointError as error:
            return error
    return _line_error(line)


@dataclass(frozen=True)
class JobEntry:
    """One job as the log knows it: its lines and, once created, its id."""

    file_id: str
    models: dict[str, str]  # custom_id -> the model its line asked
    job_id: str | None = None
    created_at: float | None = None
    collected: bool = False
    turnaround_s: float | None = None


class JobLog:
    """``jobs.jsonl`` in a batch's folder: each job's upload (before the job is created),
    creation (before it is polled) and collection (after its results are journaled), each
    line on disk before the next step, and each model's enqueued-token limit once the
    endpoint has stated it. A resume polls created jobs not yet collected, looks up an
    uploaded file's job when the driver died between creating and logging it, and cuts its
    jobs to the limits learned. ``path`` None keeps the log in memory (a batch without a
    journal). Threads (a job per model) may share it."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[str, JobEntry] = {}  # by file id, in order
        self.limits: dict[tuple[str, str], int] = {}  # (endpoint, model) -> enqueued tokens
        self._writing = threading.Lock()
        if path is not None and path.is_file():
            for text in path.read_text(encoding="utf-8").splitlines():
                try:
                    self._apply(json.loads(text))
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a crash

    def _apply(self, event: dict) -> None:
        if event["event"] == "limit":
            self.limits[event.get("endpoint", ""), event["model"]] = int(event["tokens"])
            return
        file_id = event["file"]
        if event["event"] == "uploaded":
            self.entries[file_id] = JobEntry(file_id, dict(event["lines"]))
        elif event["event"] == "created":
            self.entries[file_id] = replace(self.entries[file_id], job_id=event["job"],
                                            created_at=event["at"])
        elif event["event"] == "collected":
            self.entries[file_id] = replace(self.entries[file_id], collected=True,
                                            turnaround_s=event.get("turnaround_s"))

    def _write(self, event: dict) -> None:
        with self._writing:
            self._apply(event)
            if self.path is None:
                return
            with self.path.open("a", encoding="utf-8") as file:
                file.write(json.dumps(event) + "\n")
                file.flush()
                os.fsync(file.fileno())

    def uploaded(self, file_id: str, models: Mapping[str, str]) -> None:
        self._write({"event": "uploaded", "file": file_id, "lines": dict(models)})

    def created(self, file_id: str, job_id: str) -> None:
        self._write({"event": "created", "file": file_id, "job": job_id, "at": time.time()})

    def collected(self, file_id: str, turnaround_s: float | None) -> None:
        self._write({"event": "collected", "file": file_id, "turnaround_s": turnaround_s})

    def limit(self, model: str, tokens: int, endpoint: str) -> None:
        """The endpoint stated ``model``'s enqueued-token limit (kept for a resume and for
        the deadline advisor)."""
        self._write({"event": "limit", "model": model, "tokens": tokens,
                     "endpoint": endpoint})

    def limits_at(self, endpoint: str) -> dict[str, int]:
        """Each model's enqueued-token limit ``endpoint`` stated, by model."""
        return {model: tokens for (at, model), tokens in self.limits.items() if at == endpoint}

    def unfinished(self) -> list[JobEntry]:
        """Jobs uploaded or created whose results were not collected, oldest first."""
        return [entry for entry in self.entries.values() if not entry.collected]

    def turnarounds(self) -> list[float]:
        return [e.turnaround_s for e in self.entries.values() if e.turnaround_s is not None]


def journaled_jobs(runs_dir: Path) -> list[JobLog]:
    """The job logs of the batches under ``runs_dir``, oldest first (what they measured:
    turnarounds; what they learned: each model's enqueued-token limit)."""
    return [JobLog(path) for path in sorted(runs_dir.glob("*/jobs.jsonl"),
                                            key=lambda path: path.stat().st_mtime)]
