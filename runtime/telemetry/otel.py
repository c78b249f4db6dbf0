"""The OpenTelemetry SDK behind ``chainray.telemetry``: imported only where tracing is on.

One ``TracerProvider`` per process and settings, private to chainray (the process's global
provider, a user's or Ray's, is left alone), exporting over OTLP/HTTP from a batch processor
that ``flush`` drains before a step's or run's result is returned. A collector that does not
answer must not slow the runs: once an export has failed or outlasted a flush's wait, ``flush``
starts the export and does not wait for it (the exporter's own retries would hold each step
for seconds) until an export succeeds again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.re import parse_env_headers

from chainray.telemetry import TraceSettings

__all__ = ["start", "child", "fail", "flush", "traceparent_of", "current_traceparent",
           "make_exporter", "SCOPE"]

log = logging.getLogger("chainray.telemetry")
SCOPE = "chainray"
_EXPORT_DELAY_MS = 500  # spans of a long step leave while it runs; flush sends the rest
_propagator = TraceContextTextMapPropagator()
_lock = threading.Lock()


class _Watched(SpanExporter):
    """An exporter that remembers whether its last export reached the collector."""

    def __init__(self, exporter: SpanExporter) -> None:
        self.exporter, self.ok = exporter, True

    def export(self, spans):
        result = self.exporter.export(spans)
        self.ok = result is SpanExportResult.SUCCESS
        return result

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.exporter.force_flush(timeout_millis)


# None: no exporter could be made in this process
_providers: dict[TraceSettings, tuple[TracerProvider, _Watched] | None] = {}


def _otlp_exporter(settings: TraceSettings) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    headers = parse_env_headers(settings.headers.get_secret_value(), liberal=True)
    return OTLPSpanExporter(endpoint=settings.endpoint, headers=headers or None,
                            timeout=settings.timeout_s)


# Tests swap in the SDK's InMemorySpanExporter here.
make_exporter: Callable[[TraceSettings], SpanExporter] = _otlp_exporter


def _provider(settings: TraceSettings) -> TracerProvider | None:
    with _lock:
        if settings not in _providers:
            attributes = parse_env_headers(settings.resource, liberal=True)
            resource = Resource.create({**attributes, "service.name": settings.service_name})
            provider = TracerProvider(resource=resource)
            try:
                exporter = _Watched(make_exporter(settings))
            except Exception:  # a broken exporter never fails a step: it goes untraced
                log.warning("cannot export traces to %s", settings.endpoint, exc_info=True)
                _providers[settings] = None
                return None
            provider.add_span_processor(BatchSpanProcessor(
                exporter, schedule_delay_millis=_EXPORT_DELAY_MS,
                export_timeout_millis=settings.timeout_s * 1000))
            _providers[settings] = provider, exporter
        known = _providers[settings]
        return None if known is None else known[0]


def _context(parent: Any):
    if parent is None:
        return None
    if isinstance(parent, str):
        return _propagator.extract({"traceparent": parent})
    return trace.set_span_in_context(parent)


def _tracer(settings: TraceSettings):
    provider = _provider(settings)
    return None if provider is None else provider.get_tracer(SCOPE)


def start(settings: TraceSettings, name: str, parent: str | None,
          attributes: Mapping[str, Any]) -> Any:
    """A run's or step's span under the ``traceparent`` given (None: a new trace)."""
    tracer = _tracer(settings)
    if tracer is None:
        return None
    return tracer.start_span(name, context=_context(parent), attributes=_clean(attributes))


def child(settings: TraceSettings, parent: Any, name: str, attributes: Mapping[str, Any],
          client: bool = False, start_s: float | None = None) -> Any:
    tracer = _tracer(settings)
    if tracer is None:
        return None
    return tracer.start_span(
        name, context=_context(parent), kind=SpanKind.CLIENT if client else SpanKind.INTERNAL,
        attributes=_clean(attributes),
        start_time=None if start_s is None else int(start_s * 1e9))


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in attributes.items() if value is not None}


def fail(span: Any, error_type: str, description: str | None) -> None:
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, description))


def traceparent_of(span: Any) -> str | None:
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent")


def current_traceparent() -> str | None:
    """The traceparent of the span the calling code has open (its own provider's), if any."""
    span = trace.get_current_span()
    return traceparent_of(span) if span.get_span_context().is_valid else None


def flush(settings: TraceSettings, timeout_s: float) -> None:
    """Export what is recorded; wait for it (at most ``timeout_s``) only while the collector
    answers."""
    if (known := _providers.get(settings)) is None:
        return
    provider, exporter = known
    worker = threading.Thread(target=provider.force_flush, args=(int(timeout_s * 1000),),
                              name="chainray-trace-flush", daemon=True)
    worker.start()
    if exporter.ok:
        worker.join(timeout_s)
        if worker.is_alive():  # slow or retrying: not waited for until an export succeeds
            exporter.ok = False
