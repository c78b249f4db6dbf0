"""OpenTelemetry traces of runs: one trace per run, a span per step and per HTTP attempt.

Off unless configured (``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``..._TRACES_ENDPOINT`` set, or
``SessionConfig(otel=True)`` / ``--otel``). Off, every function here is a cheap no-op and
OpenTelemetry is never imported; on, ``chainray.telemetry.otel`` (the SDK and the OTLP/HTTP
exporter of the ``chainray[otel]`` extra) is imported in the processes that trace.

The settings travel with the run (``RunJob.trace``, ``StepRequest.trace``) together with the
parent span's W3C ``traceparent``, so that a step on any node joins its run's trace and each Ray
worker configures its own exporter from them, not from its own environment::

    with run_span(job.trace, "chainray.run demo", {"chainray.run.id": job.run_id}) as span:
        step_trace = child_trace(job.trace)     # rides in the step's request
        ...
        span.set({"chainray.prompt_tokens": 120})
    await aflush(job.trace)                     # exported before the result is returned

The code on a step's path (the call, its permit, retries, guards) reports through ``span``,
``past_span`` and ``event``, which act on the step span the worker opened (``step_span``)
and do nothing outside one. Names: ``docs/telemetry.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from importlib.util import find_spec
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr

from chainray.errors import InputError

__all__ = ["TraceSettings", "TraceContext", "Span", "NO_SPAN", "trace_settings", "run_trace",
           "run_span", "step_span", "child_trace", "span", "past_span", "event", "enabled",
           "capture_content", "flush", "aflush", "EXTRA"]

log = logging.getLogger("chainray.telemetry")
EXTRA = 'pip install "chainray[otel]"'
_EXPORTER = "opentelemetry.exporter.otlp.proto.http"
# Bound on waiting for the collector before a step's result returns (a local collector takes
# milliseconds); once an export has failed, nobody waits (chainray.telemetry.otel.flush).
FLUSH_S = 2.0


class TraceSettings(BaseModel):
    """Where traces go, read once from the driver's ``OTEL_*`` variables. The headers (they
    may hold a collector's token) never appear in repr or dumps."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoint: str  # OTLP/HTTP traces URL, .../v1/traces
    headers: SecretStr = SecretStr("")  # OTEL_EXPORTER_OTLP_(TRACES_)HEADERS, as written
    service_name: str = "chainray"
    resource: str = ""  # OTEL_RESOURCE_ATTRIBUTES, as written
    capture_content: bool = False  # prompt and reply text on attempt spans
    timeout_s: float = 10.0


class TraceContext(BaseModel):
    """The settings and the W3C ``traceparent`` of the span a run or step continues (None: a
    new trace)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    settings: TraceSettings
    traceparent: str | None = None


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def trace_settings(env: Mapping[str, str], enabled: bool | None = None) -> TraceSettings | None:
    """The trace settings ``env`` describes, or None (not configured: nothing is traced).

    ``enabled`` True traces even without an endpoint (the OTLP default, localhost:4318),
    False never traces, None traces when an OTLP endpoint is set. ``OTEL_SDK_DISABLED=true``
    and ``OTEL_TRACES_EXPORTER=none`` turn it off as they turn off any SDK."""
    traces = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if enabled is False or (enabled is None and not (traces or base)):
        return None
    if _true(env.get("OTEL_SDK_DISABLED")) or env.get("OTEL_TRACES_EXPORTER") == "none":
        return None
    if find_spec(_EXPORTER.rsplit(".", 1)[0]) is None or find_spec(_EXPORTER) is None:
        if enabled:
            raise InputError(f"--otel needs the OTLP exporter: {EXTRA}")
        log.warning("OTEL_EXPORTER_OTLP_* is set but the OTLP exporter is not installed "
                    "(%s): no traces are sent", EXTRA)
        return None
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    if protocol != "http/protobuf":
        log.warning("chainray sends traces over OTLP http/protobuf, not %s", protocol)
    endpoint = traces or (base.rstrip("/") + "/v1/traces" if base else
                          "http://localhost:4318/v1/traces")
    timeout = env.get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") or env.get(
        "OTEL_EXPORTER_OTLP_TIMEOUT")
    return TraceSettings(
        endpoint=endpoint,
        headers=SecretStr(env.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
                          or env.get("OTEL_EXPORTER_OTLP_HEADERS") or ""),
        service_name=env.get("OTEL_SERVICE_NAME") or "chainray",
        resource=env.get("OTEL_RESOURCE_ATTRIBUTES", ""),
        capture_content=_true(env.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT")),
        timeout_s=float(timeout) / 1000 if timeout and timeout.isdigit() else 10.0)


class Span:
    """One span as chainray's code sees it; without a span behind it (``NO_SPAN``) every
    method does nothing, so callers never ask whether tracing is on."""

    __slots__ = ("otel",)

    def __init__(self, otel: Any = None) -> None:
        self.otel = otel

    def set(self, attributes: Mapping[str, Any]) -> None:
        if self.otel is not None:
            self.otel.set_attributes({k: v for k, v in attributes.items() if v is not None})

    def event(self, name: str, attributes: Mapping[str, Any] | None = None) -> None:
        if self.otel is not None:
            self.otel.add_event(name, {k: v for k, v in (attributes or {}).items()
                                       if v is not None})

    def fail(self, error_type: str, description: str | None = None) -> None:
        """Mark the span failed (``error.type``: an error code, never a message)."""
        if self.otel is not None:
            from chainray.telemetry import otel

            otel.fail(self.otel, error_type, description)

    def end(self, end_s: float | None = None) -> None:
        if self.otel is not None:
            self.otel.end(end_time=None if end_s is None else int(end_s * 1e9))


NO_SPAN = Span()


@dataclass(frozen=True)
class _Active:
    settings: TraceSettings
    span: Span  # the run's or step's span: the parent of what the code on its path reports


_active: ContextVar[_Active | None] = ContextVar("chainray_trace", default=None)


def enabled() -> bool:
    """Whether a run or step span is open here (what is reported goes somewhere)."""
    return _active.get() is not None


def capture_content() -> bool:
    """Whether prompt and reply text go on attempt spans (the user asked for it)."""
    active = _active.get()
    return active is not None and active.settings.capture_content


def run_trace(settings: TraceSettings | None) -> TraceContext | None:
    """What a run carries: ``settings`` and, when the driver's code has a span open, its
    context (the run then joins the caller's trace)."""
    if settings is None:
        return None
    parent = None
    if "opentelemetry.trace" in sys.modules:  # the caller uses OpenTelemetry: never import it
        from chainray.telemetry import otel

        parent = otel.current_traceparent()
    return TraceContext(settings=settings, traceparent=parent)


@contextlib.contextmanager
def _root(trace: TraceContext | None, name: str,
          attributes: Mapping[str, Any]) -> Iterator[Span]:
    if trace is None:
        yield NO_SPAN
        return
    from chainray.telemetry import otel

    opened = otel.start(trace.settings, name, trace.traceparent, attributes)
    if opened is None:  # the exporter could not be made here: the work goes on untraced
        yield NO_SPAN
        return
    handle = Span(opened)
    token = _active.set(_Active(trace.settings, handle))
    try:
        yield handle
    except BaseException as exc:
        handle.fail(type(exc).__name__)
        raise
    finally:
        _active.reset(token)
        handle.end()


run_span = _root  # a run's span: the root of its trace (or a child of the caller's span)
step_span = _root  # a step's span, in the worker that runs it, a child of the run span


def child_trace(trace: TraceContext | None) -> TraceContext | None:
    """``trace`` continued from the span open here (what a step's request carries)."""
    active = _active.get()
    if trace is None or active is None or active.span.otel is None:
        return trace
    from chainray.telemetry import otel

    return trace.model_copy(update={"traceparent": otel.traceparent_of(active.span.otel)})


def span(name: str, attributes: Mapping[str, Any], client: bool = False) -> Span:
    """Start a span under the open run or step span (``NO_SPAN`` outside one); the caller
    ends it (``Span.end``). ``client``: an outgoing request (kind CLIENT)."""
    active = _active.get()
    if active is None or active.span.otel is None:
        return NO_SPAN
    from chainray.telemetry import otel

    return Span(otel.child(active.settings, active.span.otel, name, attributes, client))


def past_span(name: str, start_s: float, end_s: float, attributes: Mapping[str, Any]
              | None = None, parent: Span | None = None) -> None:
    """Record a span that has already happened (Unix seconds), under ``parent`` or the open
    run or step span: time queued for a permit, a retry's backoff."""
    active = _active.get()
    under = parent if parent is not None and parent.otel is not None else (
        active.span if active is not None else NO_SPAN)
    if active is None or under.otel is None:
        return
    from chainray.telemetry import otel

    done = Span(otel.child(active.settings, under.otel, name, attributes or {},
                           start_s=start_s))
    done.end(max(start_s, end_s))


def event(name: str, attributes: Mapping[str, Any] | None = None) -> None:
    """An event on the open run or step span (a cache hit, a spend reservation, a hedge)."""
    active = _active.get()
    if active is not None:
        active.span.event(name, attributes)


def flush(trace: TraceContext | None) -> None:
    """Hand what this process has recorded to the collector (waiting at most ``FLUSH_S``,
    and not at all while the collector does not answer)."""
    if trace is not None:
        from chainray.telemetry import otel

        otel.flush(trace.settings, FLUSH_S)


async def aflush(trace: TraceContext | None) -> None:
    """``flush`` off the event loop, so that other steps in this worker go on meanwhile."""
    if trace is not None:
        await asyncio.to_thread(flush, trace)
