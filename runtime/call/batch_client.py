"""The provider's Batch API through the ``openai`` client: upload a JSONL file of requests,
create a job, poll it with backoff, read its output and error files, cancel it.

One seam, as ``Call`` is for one request: every foreign error becomes an ``EndpointError``
in ``map_exceptions``; every wait is bounded (a poll by the endpoint's timeout, the polling
by a deadline, which defaults to the provider's completion window plus an hour: a job that
has not ended by then is one the provider has expired).

    client = BatchClient(endpoint)
    file_id = client.upload(lines)                    # lines: custom_id, method, url, body
    job = client.create(file_id, {"chainray_batch": "b1"})
    job = client.wait(job.id)                         # status completed, failed, expired, ...
    outputs = client.read(job.output_file_id)         # [{"custom_id", "response", "error"}]
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from chainray.call.endpoint import Endpoint
from chainray.call.error_table import map_exceptions
from chainray.errors import EndpointError

if TYPE_CHECKING:
    import openai

__all__ = ["BatchClient", "BatchJob", "COMPLETION_WINDOW_S", "ENDED", "CHAT_URL", "Stopped"]

CHAT_URL = "/v1/chat/completions"
# OpenAI's only promise: a job ends within its completion window, "24h" (the only value).
COMPLETION_WINDOW = "24h"
COMPLETION_WINDOW_S = 24 * 3600.0
ENDED = {"completed", "failed", "expired", "cancelled"}


@dataclass(frozen=True)
class BatchJob:
    """What a poll says about a job (the fields of OpenAI's batch object chainray uses)."""

    id: str
    status: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    errors: str = ""  # why a job failed as a whole (validation), one line
    error_codes: tuple[str, ...] = ()  # the codes of ``errors``

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    @classmethod
    def of(cls, batch: Any) -> BatchJob:
        counts = batch.request_counts
        errors = getattr(getattr(batch, "errors", None), "data", None) or []
        return cls(id=batch.id, status=batch.status, output_file_id=batch.output_file_id,
                   error_file_id=batch.error_file_id,
                   total=counts.total if counts else 0,
                   completed=counts.completed if counts else 0,
                   failed=counts.failed if counts else 0,
                   errors="; ".join(f"{e.code}: {e.message}" for e in errors)[:500],
                   error_codes=tuple(str(e.code) for e in errors if e.code))


class Stopped(Exception):  # noqa: N818 (a state, not a fault)
    """The client was told to stop (``BatchClient.stopping``) while it waited."""


def _transient(error: BaseException) -> bool:
    return isinstance(error, EndpointError) and error.retryable


class BatchClient:
    """The Batch API of one endpoint. ``poll_first_s`` doubles up to ``poll_max_s`` between
    polls; a poll that fails with a retryable error (5xx, 429, a dropped connection) is
    repeated within the endpoint's attempts. Threads may share it; once ``stopping`` is set,
    every wait of theirs ends at once and no request is sent (``Stopped``)."""

    def __init__(self, endpoint: Endpoint, poll_first_s: float = 0.5,
                 poll_max_s: float = 60.0) -> None:
        self.endpoint = endpoint
        self.poll_first_s, self.poll_max_s = poll_first_s, poll_max_s
        self.client = _sync_client(endpoint)
        self.requests = 0  # HTTP requests this client sent (uploads, creates, polls, reads)
        self.stopping = threading.Event()
        self._counting = threading.Lock()

    def _call(self, what: Callable[[], Any]) -> Any:
        """One Batch API request, repeated on transient errors within the endpoint's
        attempts (the client's own retries are off)."""
        for attempt in Retrying(stop=stop_after_attempt(self.endpoint.max_attempts),
                                wait=wait_exponential(self.endpoint.backoff_s, max=30),
                                retry=retry_if_exception(_transient), reraise=True,
                                sleep=self.pause):
            self.pause(0)  # once told to stop, no request is sent
            with attempt, map_exceptions(self.endpoint.api_key.get_secret_value()):
                with self._counting:
                    self.requests += 1
                return what()
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    def upload(self, lines: Sequence[dict]) -> str:
        """Upload the lines as one JSONL file (``purpose=batch``); its file id."""
        data = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
        file = ("chainray-batch.jsonl", io.BytesIO(data.encode()), "application/jsonl")
        return self._call(lambda: self.client.files.create(file=file, purpose="batch")).id

    def create(self, file_id: str, metadata: dict[str, str]) -> BatchJob:
        return BatchJob.of(self._call(lambda: self.client.batches.create(
            input_file_id=file_id, endpoint=CHAT_URL, completion_window=COMPLETION_WINDOW,
            metadata=metadata)))

    def retrieve(self, job_id: str) -> BatchJob:
        return BatchJob.of(self._call(lambda: self.client.batches.retrieve(job_id)))

    def find(self, file_id: str, limit: int = 100) -> BatchJob | None:
        """The job created from ``file_id`` among the newest ``limit``, if any (a driver
        killed between creating a job and journaling its id finds it here)."""
        page = self._call(lambda: self.client.batches.list(limit=limit))
        found = next((b for b in page.data if b.input_file_id == file_id), None)
        return None if found is None else BatchJob.of(found)

    def cancel(self, job_id: str) -> BatchJob:
        return BatchJob.of(self._call(lambda: self.client.batches.cancel(job_id)))

    def wait(self, job_id: str, timeout_s: float = COMPLETION_WINDOW_S + 3600,
             on_poll: Callable[[BatchJob], object] = lambda _: None) -> BatchJob:
        """Poll until the job ends or ``timeout_s`` passes (then the job as last seen);
        the pause between polls doubles from ``poll_first_s`` up to ``poll_max_s``."""
        ends, pause = time.monotonic() + timeout_s, self.poll_first_s
        while True:
            job = self.retrieve(job_id)
            on_poll(job)
            left = ends - time.monotonic()
            if job.ended or left <= 0:
                return job
            self.pause(min(pause, left))
            pause = min(pause * 2, self.poll_max_s)

    def pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or raise ``Stopped`` as soon as ``stopping`` is set."""
        if self.stopping.wait(seconds):
            raise Stopped("the batch client was told to stop")

    def read(self, file_id: str | None) -> list[dict]:
        """The JSON lines of an output or error file (none for no file); a line that is not
        JSON is skipped (its request is then found missing and sent again)."""
        if not file_id:
            return []
        text = self._call(lambda: self.client.files.content(file_id).text)
        lines = []
        for line in text.splitlines():
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict) and isinstance(value.get("custom_id"), str):
                lines.append(value)
        return lines


def _sync_client(endpoint: Endpoint) -> openai.OpenAI:
    import openai

    key = endpoint.api_key.get_secret_value()
    timeout = openai.Timeout(endpoint.timeout_s, connect=5.0)
    if endpoint.api_version:
        return openai.AzureOpenAI(azure_endpoint=endpoint.base_url, api_key=key,
                                  api_version=endpoint.api_version, max_retries=0,
                                  timeout=timeout)
    return openai.OpenAI(base_url=endpoint.base_url, api_key=key, max_retries=0,
                         timeout=timeout)

