"""Issue 24 part 4: the simulator caches prompt prefixes as OpenAI does (at least 1,024 tokens,
128-token steps, usable from the writer's first token) and reports the reused part in
``usage.prompt_tokens_details.cached_tokens`` and its /stats."""

from __future__ import annotations

import asyncio

import openai

from chainray.sim.prefix_cache import PromptCache

SHARED = "The codebase under review follows. " + "def f(x):\n    return x * 2\n" * 300


def ask(angle: str) -> list[dict]:
    return [{"role": "system", "content": "You review code."},
            {"role": "user", "content": SHARED + f"\nReview it for {angle}."}]


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_prefix_is_read_only_after_its_writer_wrote_it_in_128_token_steps():
    cache = PromptCache(1024)
    first = cache.lookup(ask("security"), 2500)
    again = cache.lookup(ask("style"), 2500)
    assert first.cached == again.cached == 0  # sent together: nothing written yet
    cache.write(first)
    hit = cache.lookup(ask("style"), 2500)
    assert hit.cached >= 1024 and hit.cached % 128 == 0
    assert cache.lookup([{"role": "user", "content": "short"}], 10).cached == 0
    assert cache.lookup([{"role": "user", "content": "x" + SHARED}], 2500).cached == 0


def test_entries_expire_unused_and_the_minimum_is_settable():
    clock = Clock()
    cache = PromptCache(1024, ttl_s=600, clock=clock)
    cache.write(cache.lookup(ask("security"), 2500))
    clock.now = 599
    assert cache.lookup(ask("style"), 2500).cached > 0  # a read keeps it alive
    clock.now = 1198
    assert cache.lookup(ask("tests"), 2500).cached > 0
    clock.now = 1900
    assert cache.lookup(ask("tests"), 2500).cached == 0
    big = PromptCache(10_000)
    big.write(big.lookup(ask("security"), 2500))
    assert big.lookup(ask("style"), 2500).cached == 0


async def _review(client: openai.AsyncOpenAI, angle: str, stream: bool):
    if not stream:
        answer = await client.chat.completions.create(model="gpt-4.1-mini",
                                                      messages=ask(angle), max_tokens=20)
        return answer.usage
    chunks = await client.chat.completions.create(
        model="gpt-4.1-mini", messages=ask(angle), max_tokens=20, stream=True,
        stream_options={"include_usage": True})
    usage = None
    async for chunk in chunks:
        usage = chunk.usage or usage
    return usage


async def test_the_simulator_reports_cached_tokens_from_the_writers_first_token(sim):
    client = openai.AsyncOpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0)
    together = await asyncio.gather(*(_review(client, a, True) for a in ("a", "b", "c")))
    assert [u.prompt_tokens_details.cached_tokens for u in together] == [0, 0, 0]
    for stream in (True, False):
        usage = await _review(client, f"later {stream}", stream)
        cached = usage.prompt_tokens_details.cached_tokens
        assert 1024 <= cached < usage.prompt_tokens and cached % 128 == 0
    stats = sim.stats()
    assert stats["cached_tokens"] == sum(r["cached_tokens"] for r in stats["request_log"]) \
        == 2 * cached


async def test_the_prompt_cache_can_be_turned_off(sim):
    sim.configure(prompt_cache=False)
    client = openai.AsyncOpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0)
    await _review(client, "a", False)
    usage = await _review(client, "b", False)
    assert usage.prompt_tokens_details is None
    assert sim.stats()["cached_tokens"] == 0


def test_a_run_with_prefix_warmup_reads_the_cache_of_the_simulator(ray_session, sim):
    import chainray
    from chainray.spec.chain import chain_from_dict

    chain = chain_from_dict({
        "name": "sim_reviews", "inputs": {"code": SHARED},
        "defaults": {"model": "gpt-4.1-mini", "max_tokens": 40},
        "steps": [*({"id": a, "prompt": f"{{code}}\n\nReview it for {a}."}
                    for a in ("security", "style", "tests")),
                  {"id": "report", "after": ["security", "style", "tests"],
                   "prompt": "Combine: {security} {style} {tests}"}]})
    run = chainray.run(chain, base_url=sim.base_url, journal=False, learn=False,
                       rpm=100_000, tpm=10_000_000)
    stats = sim.stats()
    by_step = {r["tag"].rsplit(":", 1)[-1]: r["cached_tokens"] for r in stats["request_log"]}
    assert run.status == "ok" and run.cached_tokens == stats["cached_tokens"]
    assert sorted(v > 0 for k, v in by_step.items() if k != "report") == [False, True, True]
