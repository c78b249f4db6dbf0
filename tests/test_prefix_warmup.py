"""Issue 24 part 2: prefix warm-up. Steps ready together that share a cacheable prompt prefix
go one first and the rest at its first token (or its finish), so the provider's automatic
prompt cache serves them. The grouping and the release rule without Ray; a run against
tests/cache_server.py (not the simulator), whose bill the run's cached tokens and cost match."""

from __future__ import annotations

import asyncio

import pytest
from cache_server import CacheServer

import chainray
from chainray.plan.cost import load_prices
from chainray.plan.prefix import cacheable_tokens, prefix_groups, serialize, shared_tokens
from chainray.plan.schedule import resolve
from chainray.results import StepResult
from chainray.runner.dispatch import dispatch
from chainray.runner.prefix_warmup import PrefixWarmup
from chainray.spec.chain import chain_from_dict

MODEL = "gpt-4.1-mini"  # $0.40 per 1M input, $0.10 cached, $1.60 output
CODE = "def handler(request):\n    return process(request.body)  # noqa\n" * 222  # ~3,500 tokens
REVIEWS = ("security", "performance", "style", "tests")
FAST = {"rpm": 100_000, "tpm": 10_000_000, "learn": False}


def review_chain(code_first: bool = True, stream: bool = True):
    """Four reviews of one codebase, then a combined report."""
    def prompt(angle: str) -> str:
        return (f"{{code}}\n\nReview the code above for {angle}." if code_first
                else f"Review for {angle} the code below.\n\n{{code}}")
    return chain_from_dict({
        "name": "reviews", "inputs": {"code": CODE},
        "defaults": {"model": MODEL, "max_tokens": 60, "stream": stream},
        "steps": [*({"id": a, "prompt": prompt(a)} for a in REVIEWS),
                  {"id": "report", "after": list(REVIEWS), "final": True,
                   "prompt": "Combine: " + " ".join(f"{{{a}}}" for a in REVIEWS)}]})


def messages(text: str) -> list[dict]:
    return [{"role": "system", "content": "You review code."},
            {"role": "user", "content": text}]


# --- the grouping -----------------------------------------------------------------------

def test_steps_sharing_a_long_prefix_group_behind_the_first_and_short_ones_do_not():
    prompts = {a: (MODEL, serialize(messages(CODE + a))) for a in REVIEWS}
    prompts["short"] = (MODEL, serialize(messages("hello " + CODE[:100])))
    prompts["other_model"] = ("gpt-4o", serialize(messages(CODE + "x")))
    assert prefix_groups(prompts, 1024) == [list(REVIEWS)]
    varied = {a: (MODEL, serialize(messages(a + CODE))) for a in REVIEWS}  # varies first
    assert prefix_groups(varied, 1024) == []
    shared = shared_tokens(prompts["security"][1], prompts["style"][1])
    assert 3000 < shared < 4000
    assert prefix_groups(prompts, shared + 1) == []  # the endpoint's minimum is honoured


def test_cacheable_tokens_follow_the_providers_1024_minimum_and_128_token_steps():
    assert cacheable_tokens(1023) == 0
    assert cacheable_tokens(1024) == 1024
    assert cacheable_tokens(1300) == 1280
    assert cacheable_tokens(3500) == 3456
    assert cacheable_tokens(3000, min_tokens=4096) == 0


# --- the release rule, with dispatch stepped by hand (no Ray) ---------------------------

class FakeSteps:
    """Steps that record when they start; a review leads by announcing its first token."""

    def __init__(self, fail: bool = False, announce: bool = True) -> None:
        self.events: list[str] = []
        self.fail, self.announce = fail, announce
        self.warmup: PrefixWarmup | None = None
        self.go = asyncio.Event()  # the leader finishes once every follower started

    def prompt_of(self, step_id, results):
        return None if step_id == "report" else (MODEL, messages(CODE + step_id))

    async def _run(self, step_id: str) -> StepResult:
        await asyncio.sleep(0)
        leads = self.warmup is not None and step_id in self.warmup.first
        if leads and self.fail:
            self.events.append(f"failed:{step_id}")
            return StepResult(id=step_id, status="error", error="refused", error_code="x")
        if leads and self.announce:
            self.events.append(f"first:{step_id}")
            self.warmup.first_token(step_id)
        if leads:
            await asyncio.wait_for(self.go.wait(), 10)
        self.events.append(f"done:{step_id}")
        if sum(e.startswith("start:") for e in self.events) >= len(REVIEWS):
            self.go.set()
        return StepResult(id=step_id, status="ok", output=step_id)

    def start(self, step_id, upstream):
        self.events.append(f"start:{step_id}")
        if sum(e.startswith("start:") for e in self.events) >= len(REVIEWS):
            self.go.set()
        return asyncio.ensure_future(self._run(step_id))

    def starts(self) -> list[str]:
        return [e for e in self.events if e.startswith(("start:", "first:", "failed:"))]


async def run_fake(steps: FakeSteps, warmup: bool = True, wait_s: float = 10.0,
                   on_error: str = "fail") -> dict[str, StepResult]:
    if warmup:
        steps.warmup = PrefixWarmup(steps.prompt_of, 1024, wait_s=wait_s)
    return await asyncio.wait_for(dispatch(resolve(review_chain(), "hybrid"), steps.start,
                                           on_error, warmup=steps.warmup), 20)


async def test_followers_start_at_the_leaders_first_token_and_results_do_not_change():
    steps = FakeSteps()
    results = await run_fake(steps)
    leader = steps.events[0].split(":")[1]
    assert steps.starts()[:2] == [f"start:{leader}", f"first:{leader}"]
    assert sorted(steps.starts()[2:5]) == sorted(f"start:{a}" for a in REVIEWS if a != leader)
    assert steps.events.index(f"done:{leader}") > steps.events.index(steps.starts()[4])
    assert all(r.status == "ok" for r in results.values())
    assert results["report"].status == "ok"


async def test_without_warmup_every_ready_step_starts_at_once():
    steps = FakeSteps()
    results = await run_fake(steps, warmup=False)
    assert [e.split(":")[0] for e in steps.events[:4]] == ["start"] * 4
    assert all(r.status == "ok" for r in results.values())


async def test_a_failed_leader_releases_its_followers():
    steps = FakeSteps(fail=True)
    results = await run_fake(steps)  # on_error="fail": the others were ready with it, so go
    leader = steps.events[0].split(":")[1]
    others = [a for a in REVIEWS if a != leader]
    assert steps.events.index(f"failed:{leader}") < min(
        steps.events.index(f"start:{a}") for a in others)
    assert [a for a in REVIEWS if results[a].status == "ok"] == others
    assert results["report"].status == "skipped"


async def test_a_leader_with_no_first_token_releases_its_followers_after_the_wait():
    steps = FakeSteps(announce=False)  # it finishes only once all followers started
    results = await run_fake(steps, wait_s=0.05)
    leader = steps.events[0].split(":")[1]
    last_start = max(steps.events.index(f"start:{a}") for a in REVIEWS)
    assert steps.events.index(f"done:{leader}") > last_start
    assert all(r.status == "ok" for r in results.values())


# --- a run against a caching server that is not the simulator ----------------------------

def billed(server: CacheServer) -> float:
    price = load_prices().models[MODEL]
    return server.bill.cost(price.input, price.cached_input, price.output)


@pytest.mark.parametrize("stream", [True, False])
def test_a_run_reads_the_shared_prefix_from_the_cache_and_reports_the_servers_bill(
        ray_session, stream):
    chain = review_chain(stream=stream)
    runs = {}
    for warmup in (True, False):
        server = CacheServer(ttft_s=0.2, tokens_per_s=400, completion_tokens=40,
                             hold_first_stream=len(REVIEWS))
        with server.running() as base_url:
            run = chainray.run(chain, base_url=base_url, journal=False, max_concurrency=8,
                               prefix_warmup=warmup, **FAST)
        assert run.status == "ok", run.error
        reviews = [r for r in server.requests if r["tag"] in REVIEWS]
        leader = min(reviews, key=lambda r: r["start"])
        followers = [r for r in reviews if r is not leader]
        if warmup:  # the followers leave after the leader's first token, and hit the cache
            assert all(r["start"] >= leader["first"] for r in followers)
            assert all(r["cached"] >= 1024 for r in followers) and leader["cached"] == 0
            # streamed: released by its first token, while its reply was still coming
            assert leader.get("held_until_others", False) == stream
        else:  # all four leave before any first token: every one misses
            assert all(r["start"] < leader["first"] for r in followers)
            assert all(r["cached"] == 0 for r in reviews)
        assert run.cached_tokens == server.bill.cached_tokens
        assert run.prompt_tokens == server.bill.input_tokens
        assert run.estimated_cost == pytest.approx(billed(server), rel=0.01)
        runs[warmup] = run
    assert runs[True].estimated_cost <= 0.7 * runs[False].estimated_cost
    assert [s.output for s in runs[True].steps] == [s.output for s in runs[False].steps]


def test_a_refused_review_does_not_hold_the_others_against_a_real_server(ray_session):
    server = CacheServer(ttft_s=0.1, tokens_per_s=400, fail_tags={"security"})
    with server.running() as base_url:
        run = chainray.run(review_chain(), base_url=base_url, journal=False,
                           on_error="continue", **FAST)
    steps = {s.id: s for s in run.steps}
    assert steps["security"].status == "error"
    assert all(steps[a].status == "ok" for a in REVIEWS[1:])
    assert {r["tag"] for r in server.requests} >= {*REVIEWS[1:], "report"}


# --- plan: predictions with and without warm-up, the advice, the hint --------------------

def test_plan_predicts_cost_and_makespan_with_and_without_warmup_and_weighs_them():
    chain = review_chain()
    for_cost = chainray.plan(chain, "cost")
    warm, cold = for_cost.predictions["hybrid"], for_cost.without_warmup["hybrid"]
    assert warm.cached_tokens >= 3 * 3000 and cold.cached_tokens == 0
    assert warm.cost <= 0.7 * cold.cost  # three of four reviews read ~3,500 tokens cached
    assert warm.makespan_s > cold.makespan_s  # by about the leader's first token
    assert for_cost.prefix_warmup
    for_latency = chainray.plan(chain, "latency")
    assert for_latency.strategy in ("hybrid", "parallel") and not for_latency.prefix_warmup
    assert any("--no-prefix-warmup" in reason for reason in for_latency.reasons)
    assert chainray.plan(chain, "quality").prefix_warmup  # same outputs: the cheaper way
    # a step after the reviews already reads what they wrote: sequential needs no warm-up
    assert for_cost.predictions["sequential"].cached_tokens > 0
    assert "sequential" not in for_cost.without_warmup
    assert for_cost.hints == ()


def test_auto_runs_with_the_advisors_warmup_unless_told(recorded, tmp_path):
    import yaml

    from chainray.cli.main import main

    path = tmp_path / "reviews.yaml"
    path.write_text(yaml.safe_dump(review_chain().model_dump(mode="json", exclude_none=True)))
    for objective, advised in (("latency", False), ("cost", True)):
        assert chainray.plan(review_chain(), objective).prefix_warmup is advised
        cli = recorded(main, ["run", str(path), "--strategy", "auto", "--objective", objective,
                              "--quiet"])
        api = recorded(chainray.run, review_chain(), "auto", objective=objective)
        assert cli[1]["prefix_warmup"] is api[1]["prefix_warmup"] is advised
    told = recorded(chainray.run, review_chain(), "auto", objective="cost",
                    prefix_warmup=False)
    assert told[1]["prefix_warmup"] is False  # the user's word stands
    assert recorded(chainray.run, review_chain(), "hybrid", objective="latency")[1][
        "prefix_warmup"] is True  # a strategy given: the default


def test_plan_points_out_siblings_whose_shared_context_is_not_a_common_prefix(capsys):
    late = chainray.plan(review_chain(code_first=False))
    assert len(late.hints) == 1 and late.hints[0].startswith(
        "put {code} first in security, performance, style and tests to share a cached prefix")
    assert late.without_warmup == {}  # nothing to warm up until the prompts change
    short = chain_from_dict({**review_chain(code_first=False).model_dump(exclude_none=True),
                             "inputs": {"code": "x = 1\n"}})
    assert chainray.plan(short).hints == ()  # under 1,024 tokens: nothing to cache


def test_chainray_plan_prints_both_predictions_and_the_hint(tmp_path, capsys):
    import yaml

    from chainray.cli.main import main

    path = tmp_path / "reviews.yaml"
    path.write_text(yaml.safe_dump(review_chain().model_dump(mode="json", exclude_none=True)))
    assert main(["plan", str(path), "--objective", "cost"]) == 0
    out = capsys.readouterr().out
    assert "without prefix warm-up (--no-prefix-warmup): makespan" in out
    assert "prefix warm-up: " in out and "keep it on" in out


def test_the_minimum_prefix_must_be_a_positive_whole_number():
    from chainray.errors import InputError

    assert chainray.SessionConfig(cache_min_prefix_tokens=2048).cache_min_prefix_tokens == 2048
    with pytest.raises(InputError, match="cache_min_prefix_tokens"):
        chainray.SessionConfig(cache_min_prefix_tokens=0)
