"""The simulator's HTTP face (aiohttp): OpenAI's chat completions and models, plus /stats and
/sim/config for tests and benchmarks."""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import random
import time
import uuid

from aiohttp import web
from pydantic import ValidationError

from chainray.durations import format_duration
from chainray.sim.batches import BatchDesk
from chainray.sim.capacity import Admission, DecodeSlots, LimitBuckets, due_times
from chainray.sim.config import SimConfig
from chainray.sim.prefix_cache import Lookup, PromptCache
from chainray.sim.reasoning import is_reasoning_model, reject_parameter
from chainray.sim.replies import Reply, plan_reply, sampled
from chainray.sim.stats import RequestRecord, ServerStats
from chainray.sim.structured import conforming_json, schema_of
from chainray.tokens import estimate_prompt_tokens

__all__ = ["Simulator", "TAG_HEADER"]

TAG_HEADER = "x-chainray-step"  # optional client label, recorded in /stats


def _error(status: int, message: str, type_: str, code: str | None,
           headers: dict[str, str] | None = None, param: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=headers)


class Simulator:
    """One simulated endpoint. ``app`` is the aiohttp application to serve."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.stats = ServerStats()
        self.buckets: dict[str, LimitBuckets] = {}  # per model, as OpenAI limits each
        self.slots = DecodeSlots(config.slots)
        self.rng = random.Random(config.seed)
        self.fault_rng = random.Random(f"faults:{config.seed}")  # apart from latency draws
        self.prompt_cache = PromptCache(config.prompt_cache_min_tokens)
        self.app = web.Application()
        self.app.add_routes([
            web.post("/v1/chat/completions", self.chat_completions),
            # Azure OpenAI's shape: the deployment names the model, ?api-version= is required
            web.post("/openai/deployments/{deployment}/chat/completions",
                     self.chat_completions),
            web.get("/v1/models", self.models),
            web.get("/stats", self.get_stats),
            web.post("/sim/reset", self.reset),
            web.get("/sim/config", self.get_config),
            web.post("/sim/config", self.set_config),
            *BatchDesk(lambda: self.config).routes(),  # /v1/files, /v1/batches
        ])

    # -- admin ------------------------------------------------------------------------------
    async def get_stats(self, request: web.Request) -> web.Response:
        brief = request.query.get("requests") == "0"
        return web.json_response(self.stats.summary(include_requests=not brief))

    async def reset(self, request: web.Request) -> web.Response:
        self._apply(self.config)
        return web.json_response({"reset": True})

    async def get_config(self, request: web.Request) -> web.Response:
        return web.json_response(self.config.model_dump(mode="json", exclude={"api_key"}))

    async def set_config(self, request: web.Request) -> web.Response:
        """Merge a partial config (faults included), validate it, reset stats and buckets."""
        try:
            changes = await request.json()
            merged = self.config.model_dump()
            faults = {**merged["faults"], **changes.pop("faults", {})}
            config = SimConfig.model_validate({**merged, **changes, "faults": faults})
        except (ValidationError, ValueError, AttributeError) as exc:
            return _error(400, f"bad simulator config: {exc}", "invalid_request_error", None)
        self._apply(config)
        return web.json_response(config.model_dump(mode="json", exclude={"api_key"}))

    def _apply(self, config: SimConfig) -> None:
        self.config = config
        self.stats = ServerStats()
        self.buckets: dict[str, LimitBuckets] = {}  # per model, as OpenAI limits each
        self.slots = DecodeSlots(config.slots)
        self.rng = random.Random(config.seed)
        self.fault_rng = random.Random(f"faults:{config.seed}")
        self.prompt_cache = PromptCache(config.prompt_cache_min_tokens)

    # -- OpenAI API -------------------------------------------------------------------------
    async def models(self, request: web.Request) -> web.Response:
        if (denied := self._check_key(request)) is not None:
            return denied
        names = ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "o4-mini", "gpt-5-mini"]
        return web.json_response({"object": "list", "data": [
            {"id": n, "object": "model", "created": 0, "owned_by": "chainray-sim"}
            for n in names]})

    def _check_key(self, request: web.Request) -> web.Response | None:
        expected = self.config.api_key
        if expected is None:
            return None
        given = (request.headers.get("api-key")  # Azure sends its key in its own header
                 or request.headers.get("Authorization", "").removeprefix("Bearer "))
        if hmac.compare_digest(given.encode(), expected.encode()):
            return None
        shown = f"{given[:3]}{'*' * max(0, len(given) - 7)}{given[-4:]}" if given else "none"
        return _error(401, f"Incorrect API key provided: {shown}.", "invalid_request_error",
                      "invalid_api_key")

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        record = self.stats.begin(RequestRecord(
            id=f"req_{uuid.uuid4().hex[:16]}", tag=request.headers.get(TAG_HEADER), model="",
            stream=False, start=time.time()))
        try:
            response = await self._complete(request, record)
        except (asyncio.CancelledError, ConnectionResetError):  # the client went away
            self.stats.finish(record, 499, "client_closed" if record.outcome == "pending"
                              else record.outcome)
            raise
        if response is None:
            self.stats.finish(record, 0, "dropped")
            return web.Response(status=500)  # never sent: the transport is closed
        if record.outcome == "pending":
            self.stats.finish(record, response.status, _outcome(response.status))
        return response

    async def _complete(self, request: web.Request, record: RequestRecord):
        config = self.config
        if (denied := self._check_key(request)) is not None:
            return denied
        try:
            body = await request.json()
            messages = body["messages"]
            if (deployment := request.match_info.get("deployment")) is not None:
                if not request.query.get("api-version"):
                    return _error(404, "Resource not found (Azure needs ?api-version=).",
                                  "invalid_request_error", "404")
                body.setdefault("model", deployment)
            record.model = str(body["model"])
            assert isinstance(messages, list) and messages
        except (ValueError, KeyError, TypeError, AssertionError):
            return _error(400, "The request needs JSON with 'model' and a non-empty "
                          "'messages' list.", "invalid_request_error", None)
        record.stream = bool(body.get("stream"))
        if is_reasoning_model(record.model, config.reasoning_models):
            if (rejected := reject_parameter(body)) is not None:
                message, param, code = rejected
                return _error(400, message, "invalid_request_error", code, param=param)
        if config.faults.quota_exhausted:
            record.outcome = "insufficient_quota"
            self.stats.finish(record, 429, record.outcome)
            return _error(429, "You exceeded your current quota, please check your plan and "
                          "billing details.", "insufficient_quota", "insufficient_quota")
        prompt_tokens = estimate_prompt_tokens(messages)
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens")
                         or config.default_max_tokens)
        admission = self._buckets(record.model).admit(prompt_tokens + max_tokens)
        if not admission.admitted:
            return self._rate_limited(admission, record.model, prompt_tokens + max_tokens)
        fault = self._draw_fault()
        if fault != "none":
            if (answer := await self._fault(fault, request, record)) is not False:
                self._buckets(record.model).refund(prompt_tokens + max_tokens)
                return answer
        prompt = "\n".join(str(m.get("content") or "") for m in messages)
        found = self.prompt_cache.lookup(messages, prompt_tokens) if config.prompt_cache \
            else Lookup(0, ())
        prefill = prompt_tokens - found.cached * (1 - config.cached_prefill_share)
        reply = plan_reply(config, prompt, prefill, max_tokens, self.rng, slow=fault == "slow",
                           sample=sampled(body))
        if (schema := schema_of(body.get("response_format"))) is not None:
            reply = reply.with_text(conforming_json(schema, prompt, reply.text.split()))
        record.prompt_tokens, record.completion_tokens = prompt_tokens, len(reply.tokens)
        record.cached_tokens = found.cached
        if config.refund_unused:
            self._buckets(record.model).refund(max_tokens - len(reply.tokens))
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(reply.tokens),
                 "total_tokens": prompt_tokens + len(reply.tokens)}
        if config.prompt_cache:
            usage["prompt_tokens_details"] = {"cached_tokens": found.cached}
        if record.stream:
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return await self._stream(request, record, reply, usage if include_usage else None,
                                      found)
        await asyncio.sleep(reply.ttft_s)
        self.prompt_cache.write(found)  # the first token exists: later requests may read it
        record.decoded(await self.slots.decode(due_times(reply.itl_s)))
        return web.json_response(_completion(record, reply, usage), headers=self._headers(record))

    def _buckets(self, model: str) -> LimitBuckets:
        """``model``'s rate-limit buckets (each model has its own, as OpenAI's do)."""
        if model not in self.buckets:
            self.buckets[model] = LimitBuckets.for_config(self.config)
        return self.buckets[model]

    def _headers(self, record: RequestRecord) -> dict[str, str]:
        elapsed_ms = int((time.time() - record.start) * 1000)
        return {**self._buckets(record.model).headers(), "x-request-id": record.id,
                "openai-processing-ms": str(elapsed_ms)}

    def _rate_limited(self, admission: Admission, model: str, requested: int) -> web.Response:
        buckets = self._buckets(model)
        headers = buckets.headers()
        limit = buckets.tokens if admission.dimension == "tokens" else buckets.requests
        unit = "tokens per min (TPM)" if admission.dimension == "tokens" else \
            "requests per min (RPM)"
        if admission.too_large:
            headers["x-should-retry"] = "false"
            message = (f"Request too large for {model} in organization org-sim on {unit}: "
                       f"Limit {limit.limit_per_min}, Requested {requested}. The input or "
                       "output tokens must be reduced in order to run successfully.")
        else:
            wait = admission.retry_after_s
            message = (f"Rate limit reached for {model} in organization org-sim on {unit}: "
                       f"Limit {limit.limit_per_min}, Requested "
                       f"{requested if admission.dimension == 'tokens' else 1}. "
                       f"Please try again in {format_duration(wait)}.")
            if self.config.retry_after_headers:
                headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
                headers["retry-after"] = str(max(1, math.ceil(wait)))
        return _error(429, message, admission.dimension or "requests", "rate_limit_exceeded",
                      headers)

    def _draw_fault(self) -> str:
        faults, draw = self.config.faults, self.fault_rng.random()
        for name in ("error_500", "error_429", "drop", "hang", "slow"):
            share = getattr(faults, name)
            if draw < share:
                return name
            draw -= share
        return "none"

    async def _fault(self, fault: str, request: web.Request, record: RequestRecord):
        """Answer a drawn fault; ``False`` means go on (a slow reply is served normally)."""
        if fault == "error_500":
            return _error(500, "The server had an error while processing your request.",
                          "server_error", None, self._buckets(record.model).headers())
        if fault == "error_429":
            headers = {**self._buckets(record.model).headers(), "retry-after-ms": "200",
                       "retry-after": "1"}
            return _error(429, "Rate limit reached (simulated spike). Please try again in 200ms.",
                          "requests", "rate_limit_exceeded", headers)
        if fault == "drop":
            await asyncio.sleep(self.config.ttft_median_s / self.config.speed)
            record.outcome = "dropped"
            if request.transport is not None:
                request.transport.close()
            return None
        if fault == "hang":
            record.outcome = "hung"
            await asyncio.sleep(self.config.faults.hang_s)
            return _error(504, "Gateway timeout (simulated hang).", "server_error", None)
        return False

    async def _stream(self, request: web.Request, record: RequestRecord, reply: Reply,
                      usage: dict | None, found: Lookup) -> web.StreamResponse:
        record.completion_tokens = 0  # a client that leaves is charged what it was sent
        response = web.StreamResponse(headers={**self._headers(record),
                                               "Content-Type": "text/event-stream"})
        await response.prepare(request)
        base = {"id": f"chatcmpl-{record.id}", "object": "chat.completion.chunk",
                "created": int(record.start), "model": record.model}

        async def send(payload: dict | str) -> None:
            data = payload if isinstance(payload, str) else json.dumps(payload)
            await response.write(f"data: {data}\n\n".encode())

        await asyncio.sleep(reply.ttft_s)
        self.prompt_cache.write(found)
        await send({**base, "choices": [{"index": 0, "delta": {"role": "assistant",
                                                                "content": ""},
                                         "finish_reason": None}]})
        # Each token is due at its own time after the first (later when more requests decode
        # than there are slots); every chunk holds what is due.
        tokens = reply.tokens

        async def send_due(sent: int, ready: int) -> None:
            await send({**base, "choices": [{"index": 0,
                                             "delta": {"content": "".join(tokens[sent:ready])},
                                             "finish_reason": None}]})
            record.completion_tokens = ready

        record.decoded(await self.slots.decode(due_times(reply.itl_s), send_due,
                                                self.config.chunk_s))
        await send({**base, "choices": [{"index": 0, "delta": {},
                                         "finish_reason": reply.finish_reason}]})
        if usage is not None:
            await send({**base, "choices": [], "usage": usage})
        await send("[DONE]")
        await response.write_eof()
        return response


def _completion(record: RequestRecord, reply: Reply, usage: dict) -> dict:
    return {
        "id": f"chatcmpl-{record.id}", "object": "chat.completion",
        "created": int(record.start), "model": record.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text,
                                             "refusal": None},
                     "logprobs": None, "finish_reason": reply.finish_reason}],
        "usage": usage,
    }


def _outcome(status: int) -> str:
    return {200: "ok", 429: "rate_limited", 401: "unauthorized", 400: "bad_request",
            500: "server_error", 504: "hung"}.get(status, f"http_{status}")
