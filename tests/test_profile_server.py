"""The profile server (tests/profile_server.py) keeps its promises: replies as long as it wants
whatever ``max_tokens`` says, every request and token counted, throughput shared beyond its
slots. Benchmarks of learned plans lean on these."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import openai
from profile_server import ProfileServer


def _client(base_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=30)


def test_reply_ignores_max_tokens_and_everything_is_counted():
    server = ProfileServer(ttft_s=0.01, tokens_per_s=2000, reply_tokens=30)

    async def ask(client: openai.AsyncOpenAI) -> tuple:
        plain = await client.chat.completions.create(
            model="m", max_tokens=5, messages=[{"role": "user", "content": "hello"}])
        stream = await client.chat.completions.create(
            model="m", max_tokens=5, stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "hello"}])
        chunks, usage, finish = [], None, None
        async for chunk in stream:
            usage = chunk.usage or usage
            for choice in chunk.choices:
                chunks.append(choice.delta.content or "")
                finish = choice.finish_reason or finish
        return plain, "".join(chunks), usage, finish

    with server.running() as base_url:
        plain, text, usage, finish = asyncio.run(ask(_client(base_url)))
        with urllib.request.urlopen(base_url.removesuffix("/v1") + "/counts", timeout=10) as r:
            remote = json.load(r)
    assert plain.usage.completion_tokens == 30 and plain.choices[0].finish_reason == "stop"
    assert len(plain.choices[0].message.content.split()) == 30
    assert usage.completion_tokens == 30 and len(text.split()) == 30 and finish == "stop"
    assert remote == server.counts()
    assert remote["requests"] == 2 and remote["streamed"] == 1 and remote["finished"] == 2
    assert remote["completion_tokens"] == 60


def test_length_follows_the_prompt_and_max_tokens_can_be_honoured():
    server = ProfileServer(reply_tokens=10, reply_spread=50, step_reply_tokens={"b": 7})
    assert server.reply_length("a prompt", "x") == server.reply_length("a prompt", "y")
    assert {server.reply_length(f"p{i}", "x") for i in range(20)} != {10}
    assert server.reply_length("anything", "b") == 7
    cut = ProfileServer(ttft_s=0.01, tokens_per_s=2000, reply_tokens=30,
                        honour_max_tokens=True)
    with cut.running() as base_url:
        reply = asyncio.run(_client(base_url).chat.completions.create(
            model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}]))
    assert reply.usage.completion_tokens == 5 and reply.choices[0].finish_reason == "length"


def test_beyond_its_slots_requests_share_the_throughput():
    """Six requests on two slots: each decodes at about a third of the full rate (its
    tokens over its own decode time), and the server saw six decoding at once."""
    server = ProfileServer(ttft_s=0.0, tokens_per_s=100, reply_tokens=40, slots=2)

    async def six(base_url: str) -> None:
        client = _client(base_url)
        await asyncio.gather(*(client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": f"q{i}"}]) for i in range(6)))

    with server.running() as base_url:
        asyncio.run(six(base_url))
    counts = server.counts()
    assert counts["requests"] == 6 and counts["completion_tokens"] == 240
    assert counts["peak_decoding"] == 6
    rates = [e["completion_tokens"] / (e["end"] - e["start"]) for e in server.log]
    # Alone, a request would decode 40 tokens in 0.4 s (100/s); shared six ways on two
    # slots it gets ~33/s. A loaded machine only makes it slower, so the bound is one-sided.
    assert max(rates) < 60, rates
