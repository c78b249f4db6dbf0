"""The simulator answering like a self-hosted engine: replies as long as they want whatever
``max_tokens`` says, and decode throughput shared beyond N slots. Assertions lean on the
simulator's own counts and reported decode rates, one-sided where time is involved (a loaded
machine only makes decoding slower)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

import openai

from chainray.sim import start_simulator
from chainray.sim.capacity import DecodeSlots

MSG = [{"role": "user", "content": "Research quantum hardware: qubits and error rates."}]


def _client(sim) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.base_url, api_key="k", max_retries=0, timeout=60)


def test_a_reply_longer_than_max_tokens_keeps_finish_reason_stop(sim):
    sim.configure(ignore_max_tokens=True, reply_tokens=80)
    plain = _client(sim).chat.completions.create(model="m", messages=MSG, max_tokens=20)
    assert plain.usage.completion_tokens == 80 and plain.choices[0].finish_reason == "stop"
    stream = _client(sim).chat.completions.create(
        model="m", messages=MSG, max_tokens=20, stream=True,
        stream_options={"include_usage": True})
    finish, usage = None, None
    for chunk in stream:
        usage = chunk.usage or usage
        finish = next((c.finish_reason for c in chunk.choices if c.finish_reason), finish)
    assert usage.completion_tokens == 80 and finish == "stop"
    assert sim.stats()["completion_tokens"] == 160


def test_without_a_fixed_length_the_length_model_ignores_max_tokens_too(sim):
    sim.configure(ignore_max_tokens=True)
    reply = _client(sim).chat.completions.create(model="m", messages=MSG, max_tokens=20)
    # the length model's share (at least half) of default_max_tokens (512), not of 20
    assert reply.usage.completion_tokens > 200 and reply.choices[0].finish_reason == "stop"


def test_a_fixed_length_is_still_cut_by_max_tokens_unless_told_otherwise(sim):
    sim.configure(reply_tokens=80)
    cut = _client(sim).chat.completions.create(model="m", messages=MSG, max_tokens=20)
    assert cut.usage.completion_tokens == 20 and cut.choices[0].finish_reason == "length"
    whole = _client(sim).chat.completions.create(model="m", messages=MSG, max_tokens=200)
    assert whole.usage.completion_tokens == 80 and whole.choices[0].finish_reason == "stop"


def test_beyond_its_slots_each_request_decodes_at_a_share_of_the_speed(sim):
    """Six streams on two slots: each gets about 2/6 of 350 tokens/s (70 at speed 5)."""
    sim.configure(slots=2, speed=5.0, ttft_sigma=0.0, reply_tokens=60, itl_jitter=0.0)

    async def six() -> None:
        client = openai.AsyncOpenAI(base_url=sim.base_url, api_key="k", max_retries=0,
                                    timeout=60)

        async def one(i: int) -> None:
            stream = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": f"q{i}"}], stream=True)
            async for _ in stream:
                pass

        await asyncio.gather(*(one(i) for i in range(6)))
        await client.close()

    asyncio.run(six())
    stats = sim.stats()
    log = stats["request_log"]
    assert stats["completion_tokens"] == 360 and stats["peak_decoding"] == 6
    rates = [r["decode_tokens_per_s"] for r in log]
    assert all(rate < 0.6 * 350 for rate in rates), rates  # alone: 350/s; shared: ~117/s
    assert max(r["peak_decoding"] for r in log) == 6


def test_within_its_slots_requests_decode_at_full_speed(sim):
    sim.configure(slots=8, speed=5.0, ttft_sigma=0.0, reply_tokens=60, itl_jitter=0.0)
    client = _client(sim)
    client.chat.completions.create(model="m", messages=MSG)
    record = sim.stats()["request_log"][0]
    # 59 pauses of 1/350 s: the rate reported is never above the configured one
    assert record["peak_decoding"] == 1 and record["decode_tokens_per_s"] <= 350 * 1.01


async def test_decode_slots_make_k_requests_take_k_over_n_times_as_long():
    slots = DecodeSlots(2)
    assert slots.share() == 1.0
    due = [i * 0.005 for i in range(61)]  # 0.3 s of decode at full speed
    started = time.monotonic()
    seen = await asyncio.gather(*(slots.decode(due) for _ in range(6)))
    assert slots.decoding == 0 and slots.peak == 6 and all(s.peak == 6 for s in seen)
    # six on two slots: each gets a third of the speed, so no decode ends before 3 x 0.3 s
    assert all(s.seconds >= 0.3 * 3 * 0.95 for s in seen)
    assert time.monotonic() - started >= 0.85
    alone = await DecodeSlots(None).decode(due)
    assert alone.peak == 1 and alone.seconds >= 0.3 * 0.95


async def test_streamed_tokens_arrive_in_order_and_all_of_them():
    sent: list[tuple[int, int]] = []

    async def send(start: int, ready: int) -> None:
        sent.append((start, ready))

    await DecodeSlots(1).decode([i * 0.001 for i in range(40)], send, chunk_s=0.005)
    assert sent[0][0] == 0 and sent[-1][1] == 40
    assert all(a[1] == b[0] for a, b in zip(sent, sent[1:], strict=False))


def test_sim_flags_set_the_self_hosted_modes():
    with start_simulator("--slots", "3", "--reply-tokens", "50", "--ignore-max-tokens") as sim:
        with urllib.request.urlopen(f"{sim.root_url}/sim/config", timeout=30) as answer:
            config = json.load(answer)
        reply = _client(sim).chat.completions.create(model="m", messages=MSG, max_tokens=10)
    assert (config["slots"], config["reply_tokens"], config["ignore_max_tokens"]) == (3, 50, True)
    assert reply.usage.completion_tokens == 50 and reply.choices[0].finish_reason == "stop"
