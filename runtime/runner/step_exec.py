"""What one step does, free of Ray: fill its prompt, call the LLM or the Python callable, and
report a ``StepResult`` (never raise: failures are results the Coordinator acts on)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from chainray import telemetry
from chainray.call.adaptations import adaptation_key
from chainray.call.endpoint import CallServices, LLMReply, LLMRequest
from chainray.call.error_table import TOO_LARGE, error_code
from chainray.call.llm import Call
from chainray.errors import EndpointError
from chainray.results import StepResult
from chainray.runner.journal import append_step
from chainray.spec.chain import DEFAULT_MAX_TOKENS, DEFAULT_MODEL, ModelSettings, Step, resolve_call
from chainray.spec.prompts import render_prompt
from chainray.spec.templates import fill_template
from chainray.telemetry import TraceContext
from chainray.text import error_text, one_line
from chainray.tokens import estimate_prompt_tokens

__all__ = ["StepRequest", "execute_llm_step", "execute_python_step", "llm_request",
           "build_messages", "falls_back"]

log = logging.getLogger("chainray.steps")


class StepRequest(BaseModel):
    """Everything a step task needs besides its upstream results (which arrive as refs)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    task_name: str
    step: Step
    settings: ModelSettings
    inputs: dict[str, str | None]
    sees: tuple[str, ...]
    depends_on: tuple[str, ...]
    priority: float = 0.0
    # The run's journal file and the node whose disk holds it: a step that finishes there
    # journals its own reply before returning it, so a driver killed meanwhile loses nothing.
    journal: str | None = None
    journal_node: str | None = None
    trace: TraceContext | None = None  # the run's trace, when traced (chainray.telemetry)


def _upstream_texts(request: StepRequest, upstream: Sequence[StepResult]) -> dict[str, str]:
    by_id = {result.id: result for result in upstream}
    return {step_id: by_id[step_id].as_upstream() for step_id in request.sees}


def _result(request: StepRequest, started: float, context: Callable[[], tuple], **fields):
    finished = time.time()
    node_id, task_id = context()
    result = StepResult(id=request.step.id, depends_on=request.depends_on, started_at=started,
                        finished_at=finished, latency_ms=(finished - started) * 1000,
                        node_id=node_id, task_id=task_id, **fields)
    if request.journal is not None and node_id == request.journal_node:
        append_step(Path(request.journal), result)  # before anything else can be lost
    return result


def build_messages(request: StepRequest, upstream: Sequence[StepResult]) -> list[dict]:
    step, seen = request.step, _upstream_texts(request, upstream)
    prompt = render_prompt(step.prompt or "", request.inputs, seen, step.after)
    messages = []
    if request.settings.system:
        values = {**{k: v or "" for k, v in request.inputs.items()}, **seen}
        messages.append({"role": "system", "content": fill_template(request.settings.system,
                                                                     values)})
    messages.append({"role": "user", "content": prompt})
    return messages


def falls_back(error: Exception) -> bool:
    """Whether another model may answer where this one failed: the model is missing or
    refused (404, a 400 whose code or parameter names the model), or it kept failing
    (retries exhausted on 5xx or malformed replies). Never on 401, 403 or exhausted quota:
    those stop the run."""
    if not isinstance(error, EndpointError):
        return False
    if error.status == 404:
        return True
    if error.status == 400:
        return "model" in (error.code or "") or error.param == "model"
    return error.retryable and (error.status or 0) >= 500 or error.code == "malformed_reply"


def llm_request(request: StepRequest, messages: list[dict], model: str,
                base_url: str) -> LLMRequest:
    """The request a step sends to ``model`` (online, or as a Batch API line)."""
    settings = request.settings
    max_tokens = settings.max_tokens or DEFAULT_MAX_TOKENS
    return LLMRequest(
        model=model, messages=tuple(messages), max_tokens=max_tokens,
        temperature=settings.temperature, params=settings.params or {},
        response_schema=request.step.output_schema,
        stream=settings.stream if settings.stream is not None else True,
        tag=request.task_name, priority=request.priority,
        estimated_tokens=estimate_prompt_tokens(messages) + max_tokens,
        adaptation_key=adaptation_key(base_url, model))


def _reply_fields(reply: LLMReply) -> dict:
    """A step result's fields from what its calls did (a failed call's too)."""
    return dict(attempts=reply.attempts, rate_limited=reply.rate_limited,
                queued_ms=reply.queued_s * 1000, prompt_tokens=reply.prompt_tokens,
                completion_tokens=reply.completion_tokens, cached_tokens=reply.cached_tokens,
                hedged=reply.hedged,
                attempt_log=tuple(reply.attempt_log))


def _span_name(request: StepRequest) -> str:
    return f"chainray.step {request.step.id}"


def _span_attributes(request: StepRequest) -> dict:
    return {"chainray.run.id": request.run_id, "chainray.step.id": request.step.id,
            "chainray.step.kind": request.step.kind}


def _traced(span: telemetry.Span, result: StepResult) -> StepResult:
    """The step span's figures: these tokens add up to the run's ``prompt_tokens`` and
    ``completion_tokens`` (the attempt spans carry each request's ``gen_ai.usage.*``)."""
    span.set({"chainray.step.status": result.status, "chainray.model": result.model,
              "chainray.prompt_tokens": result.prompt_tokens,
              "chainray.completion_tokens": result.completion_tokens,
              "chainray.cached_tokens": result.cached_tokens,
              "chainray.attempts": result.attempts, "chainray.rate_limited": result.rate_limited,
              "chainray.queued_ms": round(result.queued_ms, 1), "chainray.cached": result.cached,
              "chainray.hedged": result.hedged})
    if result.status == "error":
        span.fail(result.error_code or "error", result.error)
    return result


async def execute_llm_step(request: StepRequest, upstream: Sequence[StepResult],
                           services: CallServices,
                           context: Callable[[], tuple] = lambda: (None, None)) -> StepResult:
    """Call the step's model, then each fallback model in turn (each under its own
    RateLimiter) while the failure is the model's own. Traced, its spans are handed to the
    collector before the result returns."""
    with telemetry.step_span(request.trace, _span_name(request),
                             _span_attributes(request)) as span:
        result = _traced(span, await _llm_step(request, upstream, services, context))
    await telemetry.aflush(request.trace)
    return result


async def _llm_step(request: StepRequest, upstream: Sequence[StepResult],
                    services: CallServices, context: Callable[[], tuple]) -> StepResult:
    started = time.time()
    settings = request.settings
    messages = build_messages(request, upstream)
    models = [settings.model or DEFAULT_MODEL, *(settings.fallback_models or ())]
    reply = LLMReply()  # one for the step: attempts and tokens of every model's call add up
    for model in models:
        asked = llm_request(request, messages, model, services.endpoint.base_url)
        try:
            await Call.of(services, asked, reply).run()
            break
        except Exception as exc:  # a step reports its failure; it never raises to dispatch
            if model != models[-1] and falls_back(exc):
                log.debug("step %s: %s failed, falling back", request.task_name, model,
                          exc_info=True)
                continue
            log.debug("step %s failed", request.task_name, exc_info=True)
            error = error_text(exc)
            if isinstance(exc, EndpointError) and exc.code in TOO_LARGE:
                error = one_line(f"step {request.step.id!r}: its request of about "
                                 f"{asked.estimated_tokens:,} tokens (prompt + "
                                 f"max_tokens) is too large for {model}: {error}")
            return _result(request, started, context, status="error", error=error,
                           error_code=error_code(exc), model=model, **_reply_fields(reply))
    decode = (reply.completion_tokens - 1) / reply.decode_s if reply.decode_s else None
    return _result(request, started, context, status="ok", output=reply.text, model=model,
                   usage_estimated=reply.usage_estimated, truncated=reply.truncated,
                   cached=reply.cached, **_reply_fields(reply),
                   ttft_ms=None if reply.ttft_s is None else reply.ttft_s * 1000,
                   decode_tokens_per_s=None if decode is None else round(decode, 2))


def execute_python_step(request: StepRequest, upstream: Sequence[StepResult],
                        context: Callable[[], tuple] = lambda: (None, None)) -> StepResult:
    """Call the step's ``function(inputs, upstream)``; it returns the step's text output."""
    with telemetry.step_span(request.trace, _span_name(request),
                             _span_attributes(request)) as span:
        result = _traced(span, _python_step(request, upstream, context))
    telemetry.flush(request.trace)
    return result


def _python_step(request: StepRequest, upstream: Sequence[StepResult],
                 context: Callable[[], tuple]) -> StepResult:
    started = time.time()
    try:
        function = resolve_call(request.step.call)
        output = function(dict(request.inputs), _upstream_texts(request, upstream))
    except Exception as exc:  # a user's callable may raise anything; report, do not crash
        log.debug("python step %s failed", request.task_name, exc_info=True)
        return _result(request, started, context, status="error", attempts=1,
                       error=error_text(exc), error_code="python_error")
    return _result(request, started, context, status="ok", output=str(output), attempts=1)
