"""Error codes, not sentences: each failure a step reports carries one code of a closed set,
decided from the error's status and code (never its message), in the JSON as in Python.
Without Ray: the step executor against tests/fixture_server.py and the dispatch loop."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from chainray.call.endpoint import CallServices, Endpoint, make_client
from chainray.call.error_table import error_code
from chainray.errors import EndpointError, PermitRefused
from chainray.guards.call_guards import SPEND_CAP, CallGuards, stopped_by_cap
from chainray.limit.permit_book import Limits, PermitBook
from chainray.plan.cost import load_prices
from chainray.plan.schedule import resolve
from chainray.results import ERROR_CODES, StepResult
from chainray.runner.dispatch import dispatch
from chainray.runner.step_exec import StepRequest, execute_llm_step, execute_python_step
from chainray.runner.summary import summarize_run
from chainray.spec.chain import ModelSettings, Step, chain_from_dict
from tests.fixture_server import FixtureServer


@pytest.mark.parametrize("error, code", [
    (EndpointError("x", code="spend_cap"), "spend_cap"),
    (EndpointError("x", status=429, code="rate_limit_exceeded", retryable=True), "rate_limited"),
    (EndpointError("x", status=429, code="insufficient_quota"), "quota"),
    (EndpointError("x", status=429, type="insufficient_quota"), "quota"),
    (EndpointError("x", status=401, code="invalid_api_key"), "auth"),
    (EndpointError("x", status=403), "auth"),
    (EndpointError("x", status=404, code="model_not_found"), "bad_request"),
    (EndpointError("x", status=400, code="context_length_exceeded"), "too_large"),
    (EndpointError("x", status=413), "too_large"),
    (EndpointError("x", status=503, retryable=True), "server_error"),
    (EndpointError("x", code="timeout", retryable=True), "timeout"),
    (EndpointError("x", code="permit_timeout"), "timeout"),
    (EndpointError("x", code="connect_failed", retryable=True), "connection"),
    (EndpointError("x", status=200, code="malformed_reply", retryable=True), "malformed_reply"),
    (EndpointError("x", status=200, code="empty_content"), "empty_content"),
    (EndpointError("x", status=200, code="schema_mismatch"), "schema_mismatch"),
    (PermitRefused("larger than the limit"), "too_large"),
    (EndpointError("RuntimeError: boom"), "internal"),
    (ValueError("boom"), "internal"),
])
def test_each_failure_maps_to_one_code_of_the_closed_set(error, code):
    assert error_code(error) == code and code in ERROR_CODES


def test_the_code_comes_from_fields_not_from_the_message():
    assert error_code(EndpointError(SPEND_CAP, status=503)) == "server_error"
    cap = StepResult(id="a", status="error", error=f"{SPEND_CAP}; nothing was sent",
                     error_code="server_error")
    run = chain_from_dict({"name": "c", "steps": [{"id": "a", "prompt": "x"}]})
    summary = summarize_run(run, resolve(run, "hybrid"), {"a": cap}, 1.0, "r", load_prices())
    assert not stopped_by_cap(summary)
    refused = cap.model_copy(update={"error": "refused", "error_code": "spend_cap"})
    summary = summarize_run(run, resolve(run, "hybrid"), {"a": refused}, 1.0, "r", load_prices())
    assert stopped_by_cap(summary) and summary.error_code == "spend_cap"
    assert json.loads(summary.model_dump_json())["steps"][0]["error_code"] == "spend_cap"


@pytest.fixture(scope="module")
def hostile():
    with FixtureServer() as server:
        yield server


class Refusing:
    """A spend cap with nothing left: every reservation is refused."""

    async def reserve(self, model, prompt_tokens, completion_tokens):
        return None

    async def settle(self, reservation, model, prompt_tokens, completion_tokens):
        raise AssertionError("nothing was reserved")


async def run_step(server: FixtureServer, guards: CallGuards | None = None,
                   fallback: tuple[str, ...] | None = None) -> StepResult:
    endpoint = Endpoint(base_url=server.base_url, api_key=SecretStr("sk-test-0123456789"),
                        timeout_s=2.0, max_attempts=2, max_retry_s=5.0, backoff_s=0.01)
    settings = ModelSettings(model="m", stream=False, max_tokens=20, fallback_models=fallback)
    request = StepRequest(run_id="r", task_name="t", step=Step(id="a", prompt="hi"),
                          settings=settings, inputs={}, sees=(), depends_on=())
    limiter = PermitBook(Limits(rpm=60_000, tpm=10_000_000, max_concurrency=4))
    services = CallServices(make_client(endpoint), endpoint,
                            {model: limiter for model in ("m", *(fallback or ()))},
                            guards=guards or CallGuards())
    return await execute_llm_step(request, (), services)


@pytest.mark.parametrize("behaviour, code, requests", [
    ("unauthorized", "auth", 1),
    ("insufficient_quota", "quota", 1),
    ("context_length_exceeded", "too_large", 1),
    ("error_markup", "bad_request", 1),
    ("null_content", "empty_content", 1),
    ("retry_after_3600", "rate_limited", 1),
    ("html", "malformed_reply", 2),
])
async def test_a_failed_step_reports_its_code(hostile, behaviour, code, requests):
    hostile.behave(behaviour)
    result = await run_step(hostile)
    assert (result.status, result.error_code, result.attempts) == ("error", code, requests)
    assert hostile.requests == requests
    hostile.behave("ok")
    ok = await run_step(hostile)
    assert ok.status == "ok" and ok.error_code is None


async def test_a_400_about_the_context_is_not_the_models_own_failure(hostile):
    """Its message names the model ("This model's maximum context length"), but neither its
    code nor its parameter does: no fallback is tried."""
    hostile.behave("context_length_exceeded")
    result = await run_step(hostile, fallback=("m2",))
    assert result.error_code == "too_large" and result.model == "m"
    assert hostile.models == ["m"]


async def test_the_spend_cap_refuses_before_anything_is_sent(hostile):
    hostile.behave("ok")
    result = await run_step(hostile, CallGuards(budget=Refusing()))
    assert (result.status, result.error_code, result.attempts) == ("error", "spend_cap", 0)
    assert hostile.requests == 0


def _raises(inputs, upstream):
    raise RuntimeError("the callable failed")


def test_a_python_step_that_raises_is_python_error():
    request = StepRequest(run_id="r", task_name="t", step=Step(id="p", kind="python",
                                                                call=_raises),
                          settings=ModelSettings(), inputs={}, sees=(), depends_on=())
    result = execute_python_step(request, ())
    assert (result.status, result.error_code) == ("error", "python_error")


CHAIN = chain_from_dict({"name": "c", "steps": [
    {"id": "A", "prompt": "a"}, {"id": "B", "prompt": "b"},
    {"id": "C", "after": ["A"], "prompt": "{A}"},
    {"id": "D", "after": ["B", "C"], "prompt": "{B}{C}"}]})


def _starter(fail: str, raise_instead: bool = False):
    def start(step_id, upstream):
        async def run():
            if step_id == fail and raise_instead:
                raise RuntimeError("the step's process failed")
            if step_id == fail:
                return StepResult(id=step_id, status="error", error="boom",
                                  error_code="server_error")
            return StepResult(id=step_id, status="ok", output=step_id)
        return run()
    return start


async def test_skipped_steps_say_why_in_their_code():
    schedule = resolve(CHAIN, "hybrid")
    isolated = await dispatch(schedule, _starter("A"), on_error="isolate")
    assert [isolated[s].error_code for s in "ABCD"] == [
        "server_error", None, "upstream_failed", "upstream_failed"]
    raised = await dispatch(schedule, _starter("A", raise_instead=True), on_error="fail")
    assert raised["A"].error_code == "internal"
    assert {raised[s].error_code for s in "CD"} == {"skipped"}
    run = summarize_run(CHAIN, schedule, isolated, 1.0, "r", load_prices(), isolated=True)
    assert run.status == "partial" and run.error_code == "server_error"
