"""The simulator, driven by the unchanged openai client: shape, latency, limits, faults, stats."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import openai
import pytest

from chainray.durations import format_duration, parse_duration

MSG = [{"role": "user", "content": "Research quantum hardware: qubits and error rates."}]


def client(sim, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0, **kw)


def test_completion_shape_usage_and_headers(sim):
    raw = client(sim).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MSG, max_tokens=40)
    completion = raw.parse()
    assert completion.object == "chat.completion"
    usage = completion.usage
    assert usage.completion_tokens <= 40 and usage.total_tokens == (
        usage.prompt_tokens + usage.completion_tokens)
    text = completion.choices[0].message.content.lower()
    assert any(term in text for term in ("quantum", "hardware", "qubits", "error"))
    for dim in ("requests", "tokens"):
        assert int(raw.headers[f"x-ratelimit-limit-{dim}"]) > 0
        assert int(raw.headers[f"x-ratelimit-remaining-{dim}"]) >= 0
        parse_duration(raw.headers[f"x-ratelimit-reset-{dim}"])
    assert raw.headers["x-request-id"].startswith("req_")
    stats = sim.stats()
    assert stats["by_status"] == {"200": 1} and stats["total_tokens"] == usage.total_tokens


def test_content_is_deterministic_at_temperature_0_sampled_above_and_draws_on_inputs(sim):
    prompt = [{"role": "user", "content": "Synthesize.\nHardware: a\nSoftware: b\nSecurity: c"}]

    def ask(**settings):
        return client(sim).chat.completions.create(model="m", messages=prompt, max_tokens=60,
                                                   **settings)

    one, two = ask(temperature=0), ask(temperature=0)
    text = one.choices[0].message.content
    assert text == two.choices[0].message.content
    assert "3 inputs (Hardware, Software, Security)" in text
    # sampled (temperature above 0, or none given): worded anew, as long
    hot = [ask(temperature=0.7), ask(temperature=0.7), ask()]
    assert len({a.choices[0].message.content for a in hot} | {text}) == 4
    assert {a.usage.completion_tokens for a in hot} == {one.usage.completion_tokens}


async def test_async_streaming_sends_usage_chunk_and_same_text(sim):
    async_client = openai.AsyncOpenAI(base_url=sim.base_url, api_key="k", max_retries=0)
    stream = await async_client.chat.completions.create(
        model="gpt-4o-mini", messages=MSG, max_tokens=30, stream=True, temperature=0,
        stream_options={"include_usage": True})
    pieces, usage = [], None
    async for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
        if chunk.usage:
            usage = chunk.usage
    plain = await async_client.chat.completions.create(model="gpt-4o-mini", messages=MSG,
                                                       max_tokens=30, temperature=0)
    assert "".join(pieces).strip() == plain.choices[0].message.content
    assert usage is not None and usage.completion_tokens == plain.usage.completion_tokens
    await async_client.close()


def test_latency_follows_the_model(sim):
    # No spread: ttft exactly 0.5 s, 70 tokens/s, everything twice as fast (slow enough
    # that a busy machine's tens of milliseconds stay inside the margin).
    sim.configure(speed=2.0, ttft_sigma=0.0)
    c = client(sim)
    started = time.perf_counter()
    completion = c.chat.completions.create(model="m", messages=MSG, max_tokens=140)
    elapsed = time.perf_counter() - started
    n = completion.usage.completion_tokens
    expected = (0.5 + (n - 1) / 70) / 2
    assert expected * 0.9 < elapsed < expected * 1.1 + 0.03


def test_streaming_time_to_first_token(sim):
    sim.configure(speed=2.0, ttft_sigma=0.0)
    stream = client(sim).chat.completions.create(model="m", messages=MSG, max_tokens=100,
                                                 stream=True)
    started = time.perf_counter()
    first = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.perf_counter() - started
    assert 0.225 < first < 0.325  # 0.5 s / 2


def _stream_chunks(sim, max_tokens: int) -> tuple[list[str], float, int]:
    """(content pieces, seconds from first to last piece, completion tokens) of one stream."""
    stream = client(sim).chat.completions.create(
        model="m", messages=MSG, max_tokens=max_tokens, stream=True, temperature=0,
        stream_options={"include_usage": True})
    pieces, times, tokens = [], [], 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
            times.append(time.perf_counter())
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    return pieces, times[-1] - times[0], tokens


def test_a_fast_stream_holds_every_token_due_in_one_chunk_and_keeps_its_pace(sim):
    # 70 tokens/s at speed 100: a token every 0.14 ms; chunks leave at most every 5 ms.
    sim.configure(speed=100.0, ttft_sigma=0.0, itl_jitter=0.0)
    pieces, seconds, tokens = _stream_chunks(sim, 600)
    expected = (tokens - 1) / 70 / 100
    assert len(pieces) < tokens / 5, "one chunk per token at 0.14 ms apart"
    assert expected * 0.9 < seconds < expected + 0.05
    plain = client(sim).chat.completions.create(model="m", messages=MSG, max_tokens=600,
                                                temperature=0)
    assert "".join(pieces).strip() == plain.choices[0].message.content
    assert plain.usage.completion_tokens == tokens


def test_a_stream_at_real_pace_sends_one_chunk_per_token(sim):
    sim.configure(speed=2.0, ttft_sigma=0.0, itl_jitter=0.0)  # 7 ms apart
    pieces, _, tokens = _stream_chunks(sim, 40)
    assert len(pieces) == tokens


def test_burst_beyond_rpm_gets_openai_429s(sim):
    sim.configure(rpm=5)

    async def burst():
        c = openai.AsyncOpenAI(base_url=sim.base_url, api_key="k", max_retries=0)
        results = await asyncio.gather(*(c.chat.completions.create(
            model="gpt-4o-mini", messages=MSG, max_tokens=10) for _ in range(8)),
            return_exceptions=True)
        await c.close()
        return results

    results = asyncio.run(burst())
    errors = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert len(errors) == 3 and len(results) - len(errors) == 5
    error = errors[0]
    assert error.code == "rate_limit_exceeded" and error.type == "requests"
    assert "Please try again in" in error.message
    headers = error.response.headers
    assert float(headers["retry-after-ms"]) > 0 and int(headers["retry-after"]) >= 1
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert parse_duration(headers["x-ratelimit-reset-requests"]) > 0
    assert sim.stats()["by_status"] == {"200": 5, "429": 3}


def test_tokens_are_charged_at_admission(sim):
    # replies that use 90 % of max_tokens: the unused 10 % is refunded after each reply, so
    # two calls leave less than the third one's prompt + max_tokens
    sim.configure(tpm=1000, lengths={"share": [0.9, 0.9]})
    c = client(sim)
    c.chat.completions.create(model="m", messages=MSG, max_tokens=400)
    c.chat.completions.create(model="m", messages=MSG, max_tokens=400)
    with pytest.raises(openai.RateLimitError) as info:
        c.chat.completions.create(model="m", messages=MSG, max_tokens=400)
    assert info.value.type == "tokens"
    with pytest.raises(openai.RateLimitError) as too_large:
        c.chat.completions.create(model="m", messages=MSG, max_tokens=5000)
    assert "Request too large" in too_large.value.message
    assert too_large.value.response.headers["x-should-retry"] == "false"


def test_fault_500(sim):
    sim.configure(faults={"error_500": 1.0})
    with pytest.raises(openai.InternalServerError):
        client(sim).chat.completions.create(model="m", messages=MSG, max_tokens=5)
    assert sim.stats()["by_outcome"] == {"server_error": 1}


def test_fault_share_is_seeded(sim):
    sim.configure(faults={"error_500": 0.3}, speed=100.0)
    c = client(sim)

    def outcomes():
        out = []
        for _ in range(30):
            try:
                c.chat.completions.create(model="m", messages=MSG, max_tokens=3)
                out.append(200)
            except openai.InternalServerError:
                out.append(500)
        return out

    first = outcomes()
    sim.reset()
    assert outcomes() == first and 3 <= first.count(500) <= 16


def test_fault_drop_and_hang(sim):
    sim.configure(faults={"drop": 1.0}, speed=50.0)
    with pytest.raises(openai.APIConnectionError):
        client(sim).chat.completions.create(model="m", messages=MSG, max_tokens=5)
    sim.configure(faults={"drop": 0.0, "hang": 1.0, "hang_s": 5.0})
    with pytest.raises(openai.APITimeoutError):
        client(sim, timeout=0.5).chat.completions.create(model="m", messages=MSG, max_tokens=5)
    assert sim.stats()["by_outcome"] == {"hung": 1}


def test_fault_slow(sim):
    sim.configure(speed=10.0, ttft_sigma=0.0, faults={"slow": 1.0, "slow_factor": 4.0})
    started = time.perf_counter()
    client(sim).chat.completions.create(model="m", messages=MSG, max_tokens=2)
    assert time.perf_counter() - started > 0.2 * 0.9  # 4 x 0.05 s


def test_insufficient_quota(sim):
    sim.configure(faults={"quota_exhausted": True})
    with pytest.raises(openai.RateLimitError) as info:
        client(sim).chat.completions.create(model="m", messages=MSG, max_tokens=5)
    assert info.value.code == "insufficient_quota"


def test_api_key_check(sim):
    sim.configure(api_key="sk-right")
    with pytest.raises(openai.AuthenticationError):
        client(sim).chat.completions.create(model="m", messages=MSG, max_tokens=5)
    ok = openai.OpenAI(base_url=sim.base_url, api_key="sk-right", max_retries=0)
    assert ok.chat.completions.create(model="m", messages=MSG, max_tokens=5).usage
    assert "sk-right" not in str(sim.configure(api_key="sk-right"))


def test_stats_record_each_request_with_times(sim):
    c = client(sim)
    for _ in range(3):
        c.chat.completions.create(model="m", messages=MSG, max_tokens=5,
                                  extra_headers={"x-chainray-step": "demo:a"})
    log = sim.stats()["request_log"]
    assert [r["tag"] for r in log] == ["demo:a"] * 3
    assert all(r["start"] < r["end"] for r in log)
    assert log[0]["end"] <= log[1]["start"]


def test_models_endpoint(sim):
    assert "gpt-4o-mini" in [m.id for m in client(sim).models.list()]


def test_binds_loopback_by_default(simulator):
    assert simulator.base_url.startswith("http://127.0.0.1:")


@pytest.mark.parametrize("flags", [["--rpm", "0"], ["--error-500", "2"], ["--speed", "-1"],
                                   ["--api-key-env", "CHAINRAY_UNSET_VAR"]])
def test_bad_flags_exit_2(flags):
    done = subprocess.run([sys.executable, "-m", "chainray.cli.main", "sim", "--port", "0", *flags],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "error" in done.stderr


def test_go_durations_round_trip():
    for seconds in (0.012, 1.0, 2.5, 172.8, 360.0):
        assert abs(parse_duration(format_duration(seconds)) - seconds) < 0.001
    assert parse_duration("2m52.8s") == pytest.approx(172.8)
    with pytest.raises(ValueError):
        parse_duration("soon")


def test_each_model_has_its_own_rate_limit(sim):
    # OpenAI limits each model apart, and chainray keeps one limiter per model: so does the
    # simulator (one shared bucket made a two-model chain meet 429s its limiters never saw).
    sim.configure(speed=50.0, rpm=3, tpm=1_000_000)

    def status(model: str) -> int:
        try:
            client(sim).chat.completions.create(model=model, messages=MSG, max_tokens=5)
            return 200
        except openai.RateLimitError:
            return 429

    assert [status("gpt-4o-mini") for _ in range(4)] == [200, 200, 200, 429]
    assert [status("gpt-4o") for _ in range(3)] == [200, 200, 200]
