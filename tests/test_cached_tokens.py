"""Cached prompt tokens, as the server reports them (``usage.prompt_tokens_details
.cached_tokens``): counted per step and per run on the plain and the streamed path, priced at
the cached-input price, settled so by the spend cap, shown in the bench table and the timeline.
Against tests/plain_server.py (not the simulator), without Ray."""

from __future__ import annotations

import io
import json

import pytest
from pydantic import SecretStr
from rich.console import Console

from chainray.actors.spend import SpendLedger
from chainray.call.endpoint import CallServices, Endpoint, make_client
from chainray.guards.call_guards import CallGuards
from chainray.limit.permit_book import Limits, PermitBook
from chainray.plan.cost import load_prices
from chainray.plan.schedule import resolve
from chainray.report.bench_table import print_bench
from chainray.report.run_table import print_run
from chainray.report.timeline import timeline_html
from chainray.runner.step_exec import StepRequest, execute_llm_step
from chainray.runner.summary import summarize_run
from chainray.spec.chain import ModelSettings, chain_from_dict
from tests.plain_server import PlainServer

MODEL, CACHED = "gpt-4o-mini", 64
CHAIN = chain_from_dict({"name": "cached", "defaults": {"model": MODEL, "max_tokens": 30},
                         "steps": [{"id": "a", "prompt": "p" * 400},
                                   {"id": "b", "after": ["a"], "prompt": "q" * 400 + "{a}"}]})


class LocalBudget:
    """The spend actor's own logic (``SpendLedger``), called in-process."""

    def __init__(self, cap_usd: float) -> None:
        self.ledger = SpendLedger(cap_usd)

    async def reserve(self, model, prompt_tokens, completion_tokens):
        return self.ledger.reserve(model, prompt_tokens, completion_tokens)

    async def settle(self, reservation, model, prompt_tokens, completion_tokens,
                     cached_tokens=0):
        self.ledger.settle(reservation, model, prompt_tokens, completion_tokens, cached_tokens)


async def run_chain(base_url: str, stream: bool, budget: LocalBudget | None = None):
    endpoint = Endpoint(base_url=base_url, api_key=SecretStr("sk-test-0123456789"),
                        timeout_s=5.0, max_attempts=2, backoff_s=0.01)
    limiter = PermitBook(Limits(rpm=60_000, tpm=10_000_000, max_concurrency=4))
    services = CallServices(make_client(endpoint), endpoint, {MODEL: limiter},
                            guards=CallGuards(budget=budget))
    schedule = resolve(CHAIN, "hybrid")
    results = {}
    for step in CHAIN.steps:  # in order: b sees a
        settings = ModelSettings(model=MODEL, max_tokens=30, stream=stream)
        request = StepRequest(run_id="r", task_name=step.id, step=step, settings=settings,
                              inputs={}, sees=tuple(step.after), depends_on=tuple(step.after))
        results[step.id] = await execute_llm_step(request, [results[d] for d in step.after],
                                                  services)
    return summarize_run(CHAIN, schedule, results, 1000.0, "r", load_prices())


@pytest.fixture(scope="module")
def caching():
    """A server that reports CACHED prompt tokens as cached, streaming when asked to."""
    with PlainServer(latency_s=0.01, cached_tokens=CACHED, stream=True).running() as base_url:
        yield base_url


@pytest.fixture(scope="module")
def plain():
    with PlainServer(latency_s=0.01).running() as base_url:
        yield base_url


@pytest.mark.parametrize("stream", [False, True])
async def test_cached_tokens_are_what_the_server_reported(caching, stream):
    run = await run_chain(caching, stream)
    assert run.status == "ok"
    assert [s.cached_tokens for s in run.steps] == [CACHED, CACHED]
    assert run.cached_tokens == run.run_totals.cached_tokens == 2 * CACHED
    assert all((s.ttft_ms is not None) == stream for s in run.steps)  # the path it says
    assert not any(s.usage_estimated for s in run.steps)
    data = json.loads(run.model_dump_json())
    assert data["cached_tokens"] == 2 * CACHED
    assert [s["cached_tokens"] for s in data["steps"]] == [CACHED, CACHED]
    # Each cached prompt token costs the cached-input price, not the input price.
    price = load_prices().models[MODEL]
    full = sum(load_prices().cost(MODEL, s.prompt_tokens, s.completion_tokens)
               for s in run.steps)
    saved = 2 * CACHED * (price.input - price.cached_input) / 1e6
    assert run.estimated_cost == pytest.approx(full - saved, abs=1e-6)


async def test_no_cached_tokens_reported_counts_none(plain):
    run = await run_chain(plain, stream=False)
    assert run.cached_tokens == 0 and all(s.cached_tokens == 0 for s in run.steps)


async def test_the_spend_cap_settles_at_the_cached_price(caching):
    budget = LocalBudget(cap_usd=1.0)
    run = await run_chain(caching, stream=True, budget=budget)
    prices = load_prices()
    assert budget.ledger.book.spent_usd == pytest.approx(sum(
        prices.cost(MODEL, s.prompt_tokens, s.completion_tokens, s.cached_tokens)
        for s in run.steps))
    assert budget.ledger.book.spent_usd < sum(
        prices.cost(MODEL, s.prompt_tokens, s.completion_tokens) for s in run.steps)
    assert not budget.ledger.book.reserved


def test_a_price_without_a_cached_input_price_charges_the_input_price():
    table = load_prices().model_copy()
    price = table.models[MODEL].model_copy(update={"cached_input": None})
    table = table.model_copy(update={"models": {MODEL: price}})
    assert table.cost(MODEL, 1000, 0, 600) == table.cost(MODEL, 1000, 0)
    assert table.cost(MODEL, 1000, 0, 5000) == table.cost(MODEL, 1000, 0)  # never > prompt


async def test_the_run_and_bench_tables_and_the_timeline_show_cached_tokens(caching):
    run = await run_chain(caching, stream=False)
    out = io.StringIO()
    print_bench("cached", [run], Console(file=out, width=200))
    assert f"{2 * CACHED} cached" in out.getvalue()
    out = io.StringIO()
    print_run(run, Console(file=out, width=200))
    assert f"tokens {run.total_tokens} ({2 * CACHED} cached)" in out.getvalue()
    page = timeline_html([run])
    assert f"({2 * CACHED} cached)" in page
    assert f"{CACHED} of {run.steps[0].prompt_tokens} prompt tokens cached" in page
