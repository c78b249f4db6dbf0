"""The simulator's Batch API: ``/v1/files`` (upload a JSONL file, read a file's content) and
``/v1/batches`` (create, retrieve, list, cancel), in OpenAI's shapes.

A job is ``validating`` when created, ``in_progress`` after that, and ends
``batch_turnaround_s`` (divided by ``speed``) after its creation: its lines are answered then,
all at once, as the chat endpoint would answer them (same replies, reasoning models' 400s,
structured output), without the online rate limits (a Batch API has its own queue). The
settings make it fail on purpose: ``batch_fail_every`` (each Nth line answers 500),
``batch_expire_every`` (each Nth job expires with only its first half of lines done); a
cancelled job ends ``cancelled`` and its unanswered lines say ``batch_cancelled``. State is
computed when a job is read, so nothing runs in the background.
"""

from __future__ import annotations

import itertools
import json
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

from chainray.sim.config import SimConfig
from chainray.sim.reasoning import is_reasoning_model, reject_parameter
from chainray.sim.replies import plan_reply, sampled
from chainray.sim.structured import conforming_json, schema_of
from chainray.tokens import estimate_prompt_tokens

__all__ = ["BatchDesk"]

CHAT_URL = "/v1/chat/completions"


def _error(status: int, message: str, code: str | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "invalid_request_error",
                                        "param": None, "code": code}}, status=status)


class BatchDesk:
    """Files and batch jobs of one simulator; ``config`` reads its current settings."""

    def __init__(self, config: Callable[[], SimConfig]) -> None:
        self.config = config
        self.files: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.lines_seen = itertools.count(1)
        self.counts = {"files": 0, "jobs": 0, "lines": 0, "failed_lines": 0, "cancelled": 0}

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/files", self.upload),
                web.get("/v1/files/{file_id}/content", self.content),
                web.post("/v1/batches", self.create),
                web.get("/v1/batches", self.list_jobs),
                web.get("/v1/batches/{batch_id}", self.retrieve),
                web.post("/v1/batches/{batch_id}/cancel", self.cancel),
                web.get("/sim/batches", self.stats)]

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.counts)

    def _store(self, data: bytes, purpose: str, name: str) -> dict[str, Any]:
        file = {"id": f"file-{uuid.uuid4().hex[:24]}", "object": "file", "bytes": len(data),
                "created_at": int(time.time()), "filename": name, "purpose": purpose,
                "status": "processed"}
        self.files[file["id"]] = {**file, "data": data}
        return file

    async def upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload, purpose = form.get("file"), str(form.get("purpose") or "")
        if upload is None or not hasattr(upload, "file") or purpose != "batch":
            return _error(400, "Upload a file with purpose=batch (multipart form).")
        self.counts["files"] += 1
        return web.json_response(self._store(upload.file.read(), purpose,
                                             str(upload.filename)))

    async def content(self, request: web.Request) -> web.Response:
        file = self.files.get(request.match_info["file_id"])
        if file is None:
            return _error(404, "No such File object.", "not_found")
        return web.Response(body=file["data"], content_type="application/octet-stream")

    async def create(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            file = self.files[body["input_file_id"]]
        except (ValueError, KeyError, TypeError):
            return _error(400, "Create a batch with an uploaded input_file_id.")
        if body.get("endpoint") != CHAT_URL or body.get("completion_window") != "24h":
            return _error(400, f"endpoint must be {CHAT_URL} and completion_window 24h.")
        lines, errors = _parse(file["data"])
        now, number = int(time.time()), len(self.jobs) + 1
        job = {"id": f"batch_{uuid.uuid4().hex[:24]}", "object": "batch", "endpoint": CHAT_URL,
               "errors": None, "input_file_id": file["id"], "completion_window": "24h",
               "status": "validating", "output_file_id": None, "error_file_id": None,
               "created_at": now, "in_progress_at": None, "expires_at": now + 86400,
               "finalizing_at": None, "completed_at": None, "failed_at": None,
               "expired_at": None, "cancelling_at": None, "cancelled_at": None,
               "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
               "metadata": body.get("metadata"), "_lines": lines, "_created": time.time(),
               "_expire": bool(self.config().batch_expire_every)
               and number % self.config().batch_expire_every == 0}
        if errors:
            job.update(status="failed", failed_at=now, errors={"object": "list", "data": errors})
        self.jobs[job["id"]] = job
        self.counts["jobs"] += 1
        return web.json_response(_public(job))

    def _job(self, request: web.Request) -> dict[str, Any] | None:
        job = self.jobs.get(request.match_info["batch_id"])
        if job is not None:
            self._advance(job)
        return job

    async def retrieve(self, request: web.Request) -> web.Response:
        job = self._job(request)
        return _error(404, "No such Batch.", "not_found") if job is None else \
            web.json_response(_public(job))

    async def list_jobs(self, request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", "20"))
        jobs = list(self.jobs.values())[::-1][:limit]
        for job in jobs:
            self._advance(job)
        data = [_public(job) for job in jobs]
        return web.json_response({"object": "list", "data": data, "has_more": False,
                                  "first_id": data[0]["id"] if data else None,
                                  "last_id": data[-1]["id"] if data else None})

    async def cancel(self, request: web.Request) -> web.Response:
        job = self._job(request)
        if job is None:
            return _error(404, "No such Batch.", "not_found")
        if job["status"] in ("validating", "in_progress"):
            self.counts["cancelled"] += 1
            self._finish(job, "cancelled", answered=0)
        return web.json_response(_public(job))

    def _advance(self, job: dict[str, Any]) -> None:
        """Move a job on by the clock: in progress at once, ended after the turnaround."""
        if job["status"] == "validating":
            job.update(status="in_progress", in_progress_at=int(time.time()))
        config = self.config()
        due = job["_created"] + config.batch_turnaround_s / config.speed
        if job["status"] == "in_progress" and time.time() >= due:
            lines = job["_lines"]
            if job["_expire"]:
                self._finish(job, "expired", answered=len(lines) // 2)
            else:
                self._finish(job, "completed", answered=len(lines))

    def _finish(self, job: dict[str, Any], status: str, answered: int) -> None:
        """Answer the first ``answered`` lines; the rest end with the job's status."""
        outputs, errors, config = [], [], self.config()
        rng = random.Random(f"{config.seed}:{job['id']}")
        for i, line in enumerate(job["_lines"]):
            if i >= answered:
                code = "batch_expired" if status == "expired" else "batch_cancelled"
                errors.append({"id": f"batch_req_{uuid.uuid4().hex[:12]}",
                               "custom_id": line["custom_id"], "response": None,
                               "error": {"code": code, "message": f"This line was not "
                                         f"executed: the batch {status}."}})
                continue
            self.counts["lines"] += 1
            status_code, body = self._answer(line["body"], next(self.lines_seen), rng)
            record = {"id": f"batch_req_{uuid.uuid4().hex[:12]}",
                      "custom_id": line["custom_id"],
                      "response": {"status_code": status_code,
                                   "request_id": uuid.uuid4().hex[:16], "body": body},
                      "error": None}
            (outputs if status_code == 200 else errors).append(record)
        self.counts["failed_lines"] += len(errors)
        now = int(time.time())
        job.update(status=status, **{f"{status}_at": now},
                   request_counts={"total": len(job["_lines"]),
                                   "completed": len(outputs), "failed": len(errors)})
        for key, records in (("output_file_id", outputs), ("error_file_id", errors)):
            if records:
                data = "".join(json.dumps(r) + "\n" for r in records).encode()
                job[key] = self._store(data, "batch_output", f"{job['id']}.jsonl")["id"]

    def _answer(self, body: dict, number: int, rng: random.Random) -> tuple[int, dict]:
        """One line's chat completion, as the chat endpoint answers it (usage included)."""
        config = self.config()
        model, messages = str(body.get("model")), body.get("messages") or []
        if config.batch_fail_every and number % config.batch_fail_every == 0:
            return 500, {"error": {"message": "The server had an error while processing "
                                   "this line.", "type": "server_error", "param": None,
                                   "code": None}}
        if is_reasoning_model(model, config.reasoning_models) and (
                rejected := reject_parameter(body)) is not None:
            message, param, code = rejected
            return 400, {"error": {"message": message, "type": "invalid_request_error",
                                   "param": param, "code": code}}
        prompt_tokens = estimate_prompt_tokens(messages)
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens")
                         or config.default_max_tokens)
        prompt = "\n".join(str(m.get("content") or "") for m in messages)
        reply = plan_reply(config, prompt, prompt_tokens, max_tokens, rng, sample=sampled(body))
        if (schema := schema_of(body.get("response_format"))) is not None:
            reply = reply.with_text(conforming_json(schema, prompt, reply.text.split()))
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(reply.tokens),
                 "total_tokens": prompt_tokens + len(reply.tokens),
                 "prompt_tokens_details": {"cached_tokens": 0},
                 "completion_tokens_details": {"reasoning_tokens": 0}}
        return 200, {"id": f"chatcmpl-{uuid.uuid4().hex[:16]}", "object": "chat.completion",
                     "created": int(time.time()), "model": model,
                     "choices": [{"index": 0, "message": {"role": "assistant",
                                                          "content": reply.text,
                                                          "refusal": None},
                                  "logprobs": None, "finish_reason": reply.finish_reason}],
                     "usage": usage}


def _parse(data: bytes) -> tuple[list[dict], list[dict]]:
    """The lines of an input file, and OpenAI-shaped errors for those that do not validate
    (any error fails the whole job, as OpenAI's validation does)."""
    lines, errors, seen = [], [], set()
    for number, text in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
            assert isinstance(line, dict) and line.get("method") == "POST"
            assert line.get("url") == CHAT_URL and isinstance(line.get("body"), dict)
            assert isinstance(line["body"].get("messages"), list) and line["body"].get("model")
            assert isinstance(line.get("custom_id"), str) and line["custom_id"] not in seen
        except (ValueError, AssertionError):
            errors.append({"code": "invalid_request", "line": number, "param": None,
                           "message": f"Line {number} is not a valid request for "
                           f"{CHAT_URL} (custom_id unique, method POST, body with model "
                           "and messages)."})
            continue
        seen.add(line["custom_id"])
        lines.append(line)
    if not lines and not errors:
        errors.append({"code": "empty_file", "line": None, "param": None,
                       "message": "The input file has no requests."})
    return lines, errors


def _public(job: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in job.items() if not k.startswith("_")}
