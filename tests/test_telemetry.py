"""OpenTelemetry traces of runs (docs/telemetry.md): off and free unless configured; on, one
trace per run with a span per step and per HTTP attempt (GenAI conventions), the permit wait,
retry backoff, cache hits and spend reservations; the step spans' tokens add up to the run's.
In-process against tests/plain_server.py with the SDK's in-memory exporter, and once as a
real ``chainray run`` exporting over OTLP/HTTP to a loopback receiver."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from chainray import telemetry
from chainray.call.endpoint import CallServices, Endpoint, make_client
from chainray.errors import InputError
from chainray.guards.cache import ResponseCache
from chainray.guards.call_guards import CallGuards
from chainray.limit.permit_book import Limits, PermitBook
from chainray.plan.cost import load_prices
from chainray.plan.schedule import resolve
from chainray.runner.step_exec import StepRequest, execute_llm_step
from chainray.runner.summary import run_attributes, summarize_run
from chainray.spec.chain import ModelSettings, chain_from_dict
from tests.plain_server import PlainServer

MODEL, KEY = "gpt-4o-mini", "sk-test-never-exported-0123456789"
CHAIN = chain_from_dict({"name": "traced", "defaults": {"model": MODEL, "max_tokens": 30},
                         "steps": [{"id": "a", "prompt": "SECRET-PROMPT-A " * 20},
                                   {"id": "b", "prompt": "SECRET-PROMPT-B " * 20},
                                   {"id": "c", "after": ["a", "b"], "prompt": "join {a} {b}"}]})
SETTINGS = telemetry.TraceSettings(endpoint="http://127.0.0.1:9/v1/traces")


class LocalBudget:
    """A spend cap that admits everything, called in-process."""

    def __init__(self) -> None:
        self.reserved = 0

    async def reserve(self, model, prompt_tokens, completion_tokens):
        self.reserved += 1
        return self.reserved

    async def settle(self, reservation, model, prompt_tokens, completion_tokens,
                     cached_tokens=0):
        pass


class LocalCache:
    def __init__(self, folder: Path) -> None:
        self.cache = ResponseCache(folder)

    async def get(self, key):
        return self.cache.get(key)

    async def put(self, key, reply):
        self.cache.put(key, reply)


@pytest.fixture
def exported(monkeypatch):
    """Every span chainray exports in this process, caught by the SDK's in-memory exporter."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from chainray.telemetry import otel

    exporter = InMemorySpanExporter()
    monkeypatch.setattr(otel, "make_exporter", lambda settings: exporter)
    monkeypatch.setattr(otel, "_providers", {})
    return exporter


async def run_traced(base_url: str, settings: telemetry.TraceSettings | None,
                     guards: CallGuards | None = None):
    """The chain's steps in order under one run span, as the Coordinator runs them."""
    endpoint = Endpoint(base_url=base_url, api_key=SecretStr(KEY), timeout_s=5.0,
                        max_attempts=3, backoff_s=0.01)
    limiter = PermitBook(Limits(rpm=60_000, tpm=10_000_000, max_concurrency=4))
    services = CallServices(make_client(endpoint), endpoint, {MODEL: limiter},
                            guards=guards or CallGuards())
    trace = telemetry.run_trace(settings)
    results = {}
    with telemetry.run_span(trace, "chainray.run traced", {"chainray.run.id": "r"}) as span:
        for step in CHAIN.steps:
            request = StepRequest(
                run_id="r", task_name=f"traced:hybrid:{step.id}", step=step,
                settings=ModelSettings(model=MODEL, max_tokens=30, stream=step.id == "b"),
                inputs={}, sees=tuple(step.after), depends_on=tuple(step.after),
                trace=telemetry.child_trace(trace))
            results[step.id] = await execute_llm_step(
                request, [results[d] for d in step.after], services)
        run = summarize_run(CHAIN, resolve(CHAIN, "hybrid"), results, 1000.0, "r",
                            load_prices())
        span.set(run_attributes(run))
    await telemetry.aflush(trace)
    return run


@pytest.fixture
def limited():
    """A server that reports cached tokens, streams when asked, and answers 429 once."""
    server = PlainServer(latency_s=0.01, cached_tokens=8, stream=True, rate_limit_first=1,
                         retry_after="0")
    with server.running() as base_url:
        yield base_url


@pytest.fixture
def plain():
    with PlainServer(latency_s=0.01).running() as base_url:
        yield base_url


def by_name(spans, prefix: str) -> list:
    return [s for s in spans if s.name.startswith(prefix)]


async def test_one_trace_per_run_whose_step_tokens_add_up(exported, limited):
    run = await run_traced(limited, SETTINGS, CallGuards(budget=LocalBudget()))
    assert run.status == "ok" and run.prompt_tokens > 0
    spans = exported.get_finished_spans()
    assert len({s.context.trace_id for s in spans}) == 1  # one trace: the run's
    (root,) = by_name(spans, "chainray.run")
    assert root.parent is None and root.attributes["chainray.prompt_tokens"] == run.prompt_tokens
    steps = by_name(spans, "chainray.step")
    assert sorted(s.attributes["chainray.step.id"] for s in steps) == ["a", "b", "c"]
    assert all(s.parent.span_id == root.context.span_id for s in steps)
    assert sum(s.attributes["chainray.prompt_tokens"] for s in steps) == run.prompt_tokens
    assert sum(s.attributes["chainray.completion_tokens"] for s in steps) == \
        run.completion_tokens
    # One CLIENT span per request that was answered or refused, under its step.
    attempts = by_name(spans, f"chat {MODEL}")
    assert len(attempts) == run.api_calls == 4  # the first request met a 429
    step_ids = {s.context.span_id for s in steps}
    assert all(a.parent.span_id in step_ids and a.kind.name == "CLIENT" for a in attempts)
    answered = [a for a in attempts if a.attributes["chainray.attempt.outcome"] == "ok"]
    assert len(answered) == 3
    for attempt in answered:
        attrs = attempt.attributes
        assert attrs["gen_ai.operation.name"] == "chat"
        assert attrs["gen_ai.request.model"] == MODEL
        assert attrs["gen_ai.response.model"] and attrs["gen_ai.response.finish_reasons"]
        assert attrs["gen_ai.usage.cache_read.input_tokens"] == 8
        assert attrs["server.address"] == "127.0.0.1"
    assert sum(a.attributes["gen_ai.usage.input_tokens"] for a in answered) == run.prompt_tokens
    assert sum(a.attributes["gen_ai.usage.output_tokens"] for a in answered) == \
        run.completion_tokens
    (refused,) = [a for a in attempts if a not in answered]
    assert refused.attributes["error.type"] == "rate_limit_exceeded"
    # The waits: one permit wait per request, the backoff after the 429.
    assert len(by_name(spans, "chainray.permit_wait")) == 4
    assert len(by_name(spans, "chainray.retry_backoff")) == 1
    events = [e.name for s in steps for e in s.events]
    assert events.count("chainray.spend_reservation") == 4


async def test_no_content_unless_asked_and_never_the_key(exported, plain):
    asked = SETTINGS.model_copy(update={"capture_content": True})
    await run_traced(plain, SETTINGS)
    quiet = "".join(s.to_json() for s in exported.get_finished_spans())
    exported.clear()
    await run_traced(plain, asked)
    captured = "".join(s.to_json() for s in exported.get_finished_spans())
    assert "SECRET-PROMPT" not in quiet and "gen_ai.input.messages" not in quiet
    assert "SECRET-PROMPT-A" in captured and "gen_ai.output.messages" in captured
    assert KEY not in quiet + captured


async def test_a_cache_hit_is_an_event_and_sends_nothing(exported, plain, tmp_path):
    guards = CallGuards(cache=LocalCache(tmp_path))
    await run_traced(plain, SETTINGS, guards)
    exported.clear()
    again = await run_traced(plain, SETTINGS, guards)
    spans = exported.get_finished_spans()
    assert again.api_calls == 0 and not by_name(spans, "chat ")
    steps = by_name(spans, "chainray.step")
    assert all([e.name for e in s.events] == ["chainray.cache_hit"] for s in steps)
    assert all(s.attributes["chainray.cached"] for s in steps)


def test_settings_follow_the_standard_variables():
    assert telemetry.trace_settings({}) is None  # not configured: nothing is traced
    assert telemetry.trace_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"},
                                    enabled=False) is None
    base = telemetry.trace_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/",
                                     "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer t0k",
                                     "OTEL_SERVICE_NAME": "mine"})
    assert base.endpoint == "http://c:4318/v1/traces" and base.service_name == "mine"
    assert "t0k" not in repr(base) and "t0k" not in base.model_dump_json()
    assert not base.capture_content
    own = telemetry.trace_settings({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t/x",
                                    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                                    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"})
    assert own.endpoint == "http://t/x" and own.capture_content
    assert telemetry.trace_settings({}, enabled=True).endpoint == \
        "http://localhost:4318/v1/traces"
    for off in ({"OTEL_SDK_DISABLED": "true"}, {"OTEL_TRACES_EXPORTER": "none"}):
        assert telemetry.trace_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", **off}) \
            is None


def test_otel_without_the_extra_is_bad_input(monkeypatch):
    monkeypatch.setattr(telemetry, "find_spec", lambda name: None)
    with pytest.raises(InputError, match=r"chainray\[otel\]"):
        telemetry.trace_settings({}, enabled=True)
    assert telemetry.trace_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}) is None


def test_untraced_steps_import_no_opentelemetry():
    """Not configured, a step runs without chainray importing OpenTelemetry at all."""
    script = textwrap.dedent(f"""
        import asyncio, sys
        sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
        from tests.test_telemetry import run_traced
        from tests.plain_server import PlainServer
        with PlainServer(latency_s=0.01).running() as base_url:
            run = asyncio.run(run_traced(base_url, None))
        assert run.status == "ok", run.error
        print(sorted(m for m in sys.modules if m.startswith(("opentelemetry",
                                                             "chainray.telemetry.otel"))))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out.strip() == "[]"


def test_a_real_run_exports_one_trace_over_otlp_http(ray_session, sim):
    """A run on Ray: the run (in the Coordinator), its steps (in other worker processes) and
    their requests arrive at an OTLP/HTTP collector as one trace, with the collector's
    header carried to every worker and neither the prompt nor the API key in what was sent."""
    import chainray
    from tests.otlp_receiver import OtlpReceiver

    chain = chain_from_dict({
        "name": "tiny", "defaults": {"model": MODEL, "max_tokens": 20},
        "steps": [{"id": "a", "prompt": "SECRET-PROMPT-A"}, {"id": "b", "prompt": "PROMPT-B"},
                  {"id": "c", "after": ["a", "b"], "prompt": "join {a} {b}"}]})
    with OtlpReceiver() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OPENAI_API_KEY": KEY,
               "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer otlp-t0ken",
               "OTEL_SERVICE_NAME": "chainray-test"}
        result = chainray.run(chain, base_url=sim.base_url, env=env, learn=False,
                              journal=False)
        # Flushed before the result returned; a flush that outlasted its wait on this loaded
        # machine hands its spans over moments later (bounded wait, then the counts below).
        deadline = time.monotonic() + 30
        while len(spans := receiver.spans()) < 4 + result.api_calls * 2 and \
                time.monotonic() < deadline:
            time.sleep(0.1)
        headers, bodies = receiver.headers, b"".join(receiver.bodies)
    assert result.status == "ok", result.error
    run = json.loads(result.model_dump_json())
    assert len({s["trace_id"] for s in spans}) == 1
    (root,) = [s for s in spans if s["name"] == "chainray.run tiny"]
    assert root["attributes"]["chainray.run.id"] == run["run_id"] and not root["parent"]
    steps = [s for s in spans if s["name"].startswith("chainray.step ")]
    assert sorted(s["attributes"]["chainray.step.id"] for s in steps) == ["a", "b", "c"]
    assert {s["parent"] for s in steps} == {root["span_id"]}
    assert sum(s["attributes"]["chainray.prompt_tokens"] for s in steps) == run["prompt_tokens"]
    assert sum(s["attributes"]["chainray.completion_tokens"] for s in steps) == \
        run["completion_tokens"]
    attempts = [s for s in spans if s["name"] == f"chat {MODEL}"]
    assert len(attempts) == run["api_calls"]
    assert {a["parent"] for a in attempts} <= {s["span_id"] for s in steps}
    assert all(a["attributes"]["gen_ai.request.model"] == MODEL and
               "gen_ai.usage.input_tokens" in a["attributes"] for a in attempts)
    assert len([s for s in spans if s["name"] == "chainray.permit_wait"]) == run["api_calls"]
    assert {s["service"] for s in spans} == {"chainray-test"}
    assert all(h.get("authorization") == "Bearer otlp-t0ken" for h in headers)
    assert b"SECRET-PROMPT" not in bodies and KEY.encode() not in bodies
    assert b"otlp-t0ken" not in bodies


def test_the_otel_flag_is_one_session_field():
    from chainray.cli.flags import config_from_args
    from chainray.cli.main import build_parser

    parser = build_parser("run")
    assert config_from_args(parser.parse_args(["run", "demo", "--otel"])).otel is True
    assert config_from_args(parser.parse_args(["run", "demo"])).otel is None


async def test_python_steps_and_hedges_are_traced(exported):
    import asyncio
    from types import SimpleNamespace

    from chainray.guards.call_guards import StragglerLimits
    from chainray.guards.hedge import Charge, hedged
    from chainray.runner.step_exec import execute_python_step
    from chainray.spec.chain import Step

    trace = telemetry.run_trace(SETTINGS)
    request = StepRequest(run_id="r", task_name="t:p", step=Step(
        id="p", kind="python", call=lambda inputs, upstream: "done"), settings=ModelSettings(),
        inputs={}, sees=(), depends_on=(), trace=trace)
    assert (await asyncio.to_thread(execute_python_step, request, ())).status == "ok"
    charge = Charge()

    async def send(duplicate: bool, progress):
        charge.leave()
        await asyncio.sleep(0.01 if duplicate else 5)
        return SimpleNamespace(text="x", prompt_tokens=1, completion_tokens=1), 0.01

    async def limits() -> StragglerLimits:
        return StragglerLimits(duration_s=0.05)

    with telemetry.step_span(trace, "chainray.step h", {}):
        await asyncio.wait_for(hedged(send, limits, charge), 3)
    telemetry.flush(trace)
    spans = {s.name: s for s in exported.get_finished_spans()}
    assert spans["chainray.step p"].attributes["chainray.step.kind"] == "python"
    assert [e.name for e in spans["chainray.step h"].events] == ["chainray.hedge"]


def test_a_collector_that_fails_holds_no_step(monkeypatch):
    """Once an export has failed, a step's flush hands its spans over without waiting for
    the collector (whose exporter may retry for seconds)."""
    import threading

    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from chainray.telemetry import otel

    class Failing(SpanExporter):
        def __init__(self) -> None:
            self.exports, self.release, self.finished = 0, threading.Event(), False

        def export(self, spans):
            self.exports += 1
            if self.exports > 1:  # a collector that hangs, then fails
                self.release.wait(60)
                self.finished = True
            return SpanExportResult.FAILURE

        def shutdown(self) -> None:
            self.release.set()

    failing = Failing()
    monkeypatch.setattr(otel, "make_exporter", lambda settings: failing)
    monkeypatch.setattr(otel, "_providers", {})
    monkeypatch.setattr(telemetry, "FLUSH_S", 120.0)  # were it to wait, it would wait long
    trace = telemetry.run_trace(SETTINGS)
    try:
        with telemetry.run_span(trace, "first", {}):
            pass
        telemetry.flush(trace)  # the collector answers at once: a failure
        assert failing.exports == 1
        with telemetry.run_span(trace, "second", {}):
            pass
        telemetry.flush(trace)
        assert not failing.finished  # returned while the export still hangs
    finally:
        failing.release.set()


def test_a_run_joins_the_callers_trace(exported):
    """Code that has its own span open when it starts a run gets the run inside its trace."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    app = TracerProvider().get_tracer("app")
    with trace.use_span(app.start_span("request"), end_on_exit=True) as outer:
        carried = telemetry.run_trace(SETTINGS)
    with telemetry.run_span(carried, "chainray.run x", {}):
        pass
    telemetry.flush(carried)
    (run,) = exported.get_finished_spans()
    assert run.context.trace_id == outer.get_span_context().trace_id
    assert run.parent.span_id == outer.get_span_context().span_id


@pytest.fixture
def refusing():
    """A server that answers every request 429."""
    with PlainServer(latency_s=0.01, rate_limit_first=10_000, retry_after="0").running() as url:
        yield url


async def test_a_failed_step_is_an_error_span_with_its_code(exported, refusing):
    run = await run_traced(refusing, SETTINGS)
    assert run.status == "failed"
    spans = exported.get_finished_spans()
    steps = by_name(spans, "chainray.step")
    codes = {step.id: step.error_code for step in run.steps}  # the result's error codes
    assert steps and all(s.status.status_code.name == "ERROR" and s.attributes["error.type"]
                         == codes[s.attributes["chainray.step.id"]] == "rate_limited"
                         for s in steps)
    assert len(by_name(spans, "chainray.retry_backoff")) == run.api_calls - len(steps)
    (root,) = by_name(spans, "chainray.run")
    assert root.attributes["chainray.status"] == "failed"
