"""A Batch API fixture server that is not our simulator: ``/v1/files`` and ``/v1/batches`` in
OpenAI's shapes, implemented its own way, counting every request it gets.

A job ends after ``polls_to_finish`` retrieves (not by the clock, so tests do not depend on
a loaded machine's timing), or never while ``hold`` is set or fewer than ``hold_until``
jobs have been created. A file whose lines ask for more than one model is refused
(``one_model_per_file``, as many providers do). A job of a model in ``broken_polls`` is in
progress while another job is, and then every poll of it answers 500. Lines of the steps named in
``fail_once`` answer 500 the first time; lines of ``reject`` always answer 400. Every line
answered 200 is billed in ``billed`` (prompt = characters / 4, completion = min(40,
max_tokens)), so a test compares what chainray counted with what the server charged.
``batch_api=False`` serves chat completions only (the Batch API routes answer 404); lines of
a model in ``missing_models`` answer 404 ``model_not_found``; a line that asks for
``response_format`` gets JSON. With ``enqueued_limit`` (per model, as OpenAI's, or a model's
own in ``model_limits``), a job whose prompt tokens, with those of the model's jobs still
running, pass it fails at once as OpenAI's do (``token_limit_exceeded``, the limit stated in
the message); ``enqueued`` keeps each created job's prompt tokens, and ``others`` tokens of
other jobs hold the queue until ``others_for`` jobs have been refused.

    server = BatchServer(fail_once={"security"})
    with server.running() as base_url:
        ...
    server.count["chat"], server.count["batch_create"], server.billed
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from aiohttp import web
from plain_server import serve_routes  # beside this file, as this module is imported

__all__ = ["BatchServer"]


@dataclass
class BatchServer:
    polls_to_finish: int = 2
    hold: bool = False
    hold_until: int = 0
    one_model_per_file: bool = True
    fail_once: set[str] = field(default_factory=set)
    reject: set[str] = field(default_factory=set)
    batch_api: bool = True
    missing_models: set[str] = field(default_factory=set)  # lines of these answer 404
    broken_polls: set[str] = field(default_factory=set)  # models whose jobs' polls answer 500
    count: Counter = field(default_factory=Counter)
    billed: list[dict] = field(default_factory=list)  # custom_id, model, prompt, completion
    files: dict[str, bytes] = field(default_factory=dict)
    jobs: dict[str, dict] = field(default_factory=dict)
    failed_once: set[str] = field(default_factory=set)
    created_ids: list[str] = field(default_factory=list)
    retrieved: Counter = field(default_factory=Counter)  # polls per job id
    enqueued_limit: int | None = None
    model_limits: dict[str, int] = field(default_factory=dict)
    enqueued: dict[str, int] = field(default_factory=dict)  # prompt tokens per job id
    others: int = 0
    others_for: int = 0
    refused: int = 0

    async def chat(self, request: web.Request) -> web.Response:
        self.count["chat"] += 1
        return web.json_response({"error": {"message": "no online calls here"}}, status=418)

    async def upload(self, request: web.Request) -> web.Response:
        self.count["file_upload"] += 1
        form = await request.post()
        file_id = f"f{len(self.files)}"
        self.files[file_id] = form["file"].file.read()
        return web.json_response({"id": file_id, "object": "file", "bytes": 0,
                                  "created_at": 0, "filename": "x", "purpose": "batch"})

    async def content(self, request: web.Request) -> web.Response:
        self.count["file_content"] += 1
        return web.Response(body=self.files[request.match_info["id"]])

    async def create(self, request: web.Request) -> web.Response:
        self.count["batch_create"] += 1
        body = await request.json()
        job_id = f"job{len(self.jobs)}"
        lines = [json.loads(x) for x in self.files[body["input_file_id"]].splitlines()]
        self.jobs[job_id] = {"id": job_id, "object": "batch", "status": "in_progress",
                             "input_file_id": body["input_file_id"], "endpoint": body["endpoint"],
                             "completion_window": body["completion_window"],
                             "created_at": int(time.time()), "output_file_id": None,
                             "error_file_id": None, "errors": None,
                             "request_counts": {"total": len(lines), "completed": 0,
                                                "failed": 0}, "_lines": lines}
        self.created_ids.append(job_id)
        models = {line["body"]["model"] for line in lines}
        if self.one_model_per_file and len(models) > 1:
            return self._refuse(job_id, "mixed_models", "A batch's input file may use one "
                                f"model; this one uses {len(models)}.")
        model = lines[0]["body"]["model"]
        self.enqueued[job_id] = sum(_prompt_tokens(line["body"]) for line in lines)
        waiting = sum(self.enqueued[j["id"]] for j in self.jobs.values()
                      if j["status"] == "in_progress" and j["_lines"][0]["body"]["model"]
                      == model)
        waiting += self.others if self.refused < self.others_for else 0
        limit = self.model_limits.get(model, self.enqueued_limit)
        if limit is not None and waiting > limit:
            self.refused += 1
            return self._refuse(job_id, "token_limit_exceeded", f"Enqueued token limit "
                                f"reached for {model} in organization org-fixture. Limit: "
                                f"{limit:,} enqueued tokens. Please try again once some "
                                "in_progress batches have been completed.")
        return web.json_response(_public(self.jobs[job_id]))

    def _refuse(self, job_id: str, code: str, message: str) -> web.Response:
        self.jobs[job_id].update(status="failed", errors={"object": "list", "data": [{
            "code": code, "param": None, "line": None, "message": message}]})
        return web.json_response(_public(self.jobs[job_id]))

    async def retrieve(self, request: web.Request) -> web.Response:
        self.count["batch_retrieve"] += 1
        job = self.jobs[request.match_info["id"]]
        if job["_lines"][0]["body"]["model"] in self.broken_polls:
            if any(other["status"] == "in_progress" for other in self.jobs.values()
                   if other is not job):
                return web.json_response(_public(job))
            return web.json_response({"error": {"message": "poll failed",
                                                "type": "server_error"}}, status=500)
        self.retrieved[job["id"]] += 1
        if job["status"] == "in_progress" and not self.hold and \
                len(self.created_ids) >= self.hold_until and \
                self.retrieved[job["id"]] >= self.polls_to_finish:
            self._finish(job)
        return web.json_response(_public(job))

    async def cancel(self, request: web.Request) -> web.Response:
        self.count["batch_cancel"] += 1
        job = self.jobs[request.match_info["id"]]
        if job["status"] == "in_progress":
            job["status"] = "cancelled"  # nothing ran: no output or error file
        return web.json_response(_public(job))

    async def listing(self, request: web.Request) -> web.Response:
        self.count["batch_list"] += 1
        return web.json_response({"object": "list", "has_more": False,
                                  "data": [_public(j) for j in self.jobs.values()]})

    def _finish(self, job: dict) -> None:
        good, bad = [], []
        for line in job["_lines"]:
            step = line["custom_id"].rsplit("/", 1)[-1]
            status, body = self._answer(line, step)
            (good if status == 200 else bad).append(
                {"id": "r", "custom_id": line["custom_id"], "error": None,
                 "response": {"status_code": status, "request_id": "q", "body": body}})
        for key, rows in (("output_file_id", good), ("error_file_id", bad)):
            if rows:
                file_id = f"out{len(self.files)}"
                self.files[file_id] = "".join(json.dumps(r) + "\n" for r in rows).encode()
                job[key] = file_id
        job.update(status="completed", request_counts={
            "total": len(job["_lines"]), "completed": len(good), "failed": len(bad)})

    def _answer(self, line: dict, step: str) -> tuple[int, dict]:
        cid, body = line["custom_id"], line["body"]
        if step in self.reject:
            return 400, {"error": {"message": f"line {cid} is not a valid request",
                                   "type": "invalid_request_error", "param": None,
                                   "code": "invalid_value"}}
        if body["model"] in self.missing_models:
            return 404, {"error": {"message": f"The model {body['model']} does not exist",
                                   "type": "invalid_request_error", "param": None,
                                   "code": "model_not_found"}}
        if step in self.fail_once and cid not in self.failed_once:
            self.failed_once.add(cid)
            return 500, {"error": {"message": "try again", "type": "server_error",
                                   "param": None, "code": None}}
        prompt = _prompt_tokens(body)
        limit = body.get("max_tokens") or body.get("max_completion_tokens") or 10**6
        completion = min(40, int(limit))
        self.billed.append({"custom_id": cid, "model": body["model"],
                            "prompt": prompt, "completion": completion, "body": body})
        text = json.dumps({"answer": step}) if body.get("response_format") else \
            f"{step} answer " + "w " * completion
        return 200, {"id": "c", "object": "chat.completion", "created": 0,
                     "model": body["model"],
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant",
                                              "content": text}}],
                     "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                               "total_tokens": prompt + completion}}

    @contextlib.contextmanager
    def running(self) -> Iterator[str]:
        """Serve on a free loopback port in a thread; yields the base URL."""
        routes = [web.post("/v1/chat/completions", self.chat)]
        if self.batch_api:
            routes += [web.post("/v1/files", self.upload),
                       web.get("/v1/files/{id}/content", self.content),
                       web.post("/v1/batches", self.create),
                       web.get("/v1/batches", self.listing),
                       web.get("/v1/batches/{id}", self.retrieve),
                       web.post("/v1/batches/{id}/cancel", self.cancel)]
        with serve_routes(routes) as base_url:
            yield base_url


def _prompt_tokens(body: dict) -> int:
    return len(" ".join(str(m.get("content", "")) for m in body["messages"])) // 4


def _public(job: dict) -> dict:
    return {k: v for k, v in job.items() if not k.startswith("_")}
