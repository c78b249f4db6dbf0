"""The spend cap's reservation book and the response cache (no Ray, no network)."""

from __future__ import annotations

import random
import threading

import pytest

from chainray.guards.cache import CachedReply, ResponseCache
from chainray.guards.spend import SpendBook, worst_case_prompt_tokens


def test_reservations_keep_spent_plus_in_flight_under_the_cap():
    rng = random.Random(3)
    book = SpendBook(cap_usd=0.05)
    in_flight: list[tuple[int, float]] = []
    for _ in range(2000):  # 100+ calls in flight at times, settled in random order
        if in_flight and (len(in_flight) > 150 or rng.random() < 0.4):
            reservation, worst = in_flight.pop(rng.randrange(len(in_flight)))
            book.settle(reservation, worst * rng.uniform(0, 1))
        else:
            worst = rng.uniform(0.0001, 0.002)
            if (reservation := book.reserve(worst)) is not None:
                in_flight.append((reservation, worst))
        assert book.committed_usd <= book.cap_usd + 1e-9
    for reservation, worst in in_flight:
        book.settle(reservation, worst)
    assert book.spent_usd <= book.cap_usd and book.refused > 0
    assert book.spent_usd >= 0.5 * book.cap_usd


def test_the_prompt_bound_is_never_below_a_byte_per_token():
    messages = [{"role": "user", "content": "日本語のテキスト and ascii"}]
    assert worst_case_prompt_tokens(messages) >= len(messages[0]["content"].encode())


def test_the_cache_key_covers_what_shapes_the_answer_but_not_headers(tmp_path):
    cache = ResponseCache(tmp_path)
    base = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "seed": 1}
    key = cache.key("http://x/v1", base)
    assert key == cache.key("http://x/v1/", {**base, "extra_headers": {"x": "y"}})
    assert len({key, cache.key("http://x/v1", {**base, "seed": 2}),
                cache.key("http://y/v1", base),
                cache.key("http://x/v1", {**base, "model": "n"})}) == 4


def test_entries_round_trip_and_concurrent_writers_never_leave_a_torn_file(tmp_path):
    cache = ResponseCache(tmp_path)
    reply = CachedReply(text="x" * 100_000, prompt_tokens=3, completion_tokens=4)
    key = cache.key("http://x/v1", {"model": "m"})
    threads = [threading.Thread(target=cache.put, args=(key, reply)) for _ in range(8)]
    reads = []
    reader = threading.Thread(target=lambda: reads.extend(cache.get(key) for _ in range(200)))
    for thread in [*threads, reader]:
        thread.start()
    for thread in [*threads, reader]:
        thread.join(timeout=30)
    assert all(r is None or r == reply for r in reads)
    assert cache.get(key) == reply
    assert cache.stats()["entries"] == 1 and cache.clear() == 1 and cache.get(key) is None
    (tmp_path / key[:2] / f"{key}.json").parent.mkdir(exist_ok=True)
    (tmp_path / key[:2] / f"{key}.json").write_text("{torn")
    assert cache.get(key) is None  # an unreadable entry is a miss, not a crash


def test_the_spend_ledger_waits_while_calls_in_flight_may_free_room_then_stops_for_good():
    from chainray.actors.spend import WAIT, SpendLedger

    ledger = SpendLedger(cap_usd=1.0)  # gpt-4o-mini: $0.15 / $0.60 per 1M tokens
    first = ledger.reserve("gpt-4o-mini", 0, 1_000_000)  # $0.60 worst case
    assert isinstance(first, int) and first > 0
    assert ledger.reserve("gpt-4o-mini", 0, 1_000_000) == WAIT  # fits once the first settles
    ledger.settle(first, "gpt-4o-mini", 0, 500_000)  # really $0.30
    second = ledger.reserve("gpt-4o-mini", 0, 1_000_000)
    assert isinstance(second, int) and second > 0
    ledger.settle(second, "gpt-4o-mini", 0, 1_000_000)  # spent $0.90
    assert ledger.reserve("gpt-4o-mini", 0, 1_000_000) is None  # can never fit: stop
    assert ledger.reserve("gpt-4o-mini", 1, 1) is None  # nothing new starts, however small
    state = ledger.state()
    assert state["stopped"] and abs(state["spent_usd"] - 0.9) < 1e-9


def test_a_hedge_takes_the_first_answer_and_cancels_the_other():
    import asyncio
    from types import SimpleNamespace

    from chainray.guards.call_guards import StragglerLimits
    from chainray.guards.hedge import Charge, hedged, loser_charge

    async def scenario():
        charge, events = Charge(), []

        async def send(duplicate: bool, progress):
            charge.leave()
            try:
                await asyncio.sleep(0.01 if duplicate else 5)
            except asyncio.CancelledError:
                events.append(f"cancelled duplicate={duplicate}")
                await asyncio.wait_for(charge.settled.wait(), 2)  # as the call path does
                events.append(loser_charge(charge, progress, [{"content": "hi"}]))
                raise
            return SimpleNamespace(text="duplicate" if duplicate else "first",
                                   prompt_tokens=3, completion_tokens=4), 0.01

        async def limits() -> StragglerLimits:  # not streamed: only the whole-duration rule applies
            return StragglerLimits(duration_s=0.05, per_char_s=0.001)

        (answer, _), _ = await asyncio.wait_for(hedged(send, limits, charge), 2)
        return answer, events

    answer, events = asyncio.run(scenario())
    assert answer.text == "duplicate" and events[0] == "cancelled duplicate=False"
    # A reply not streamed may have been generated whole: charged as much as the winner.
    assert events[1] == (3, 4)


def hedge_send_times(limits, first_token_s: float, chunks: int, chunk_s: float,
                     duplicate_chunk_s: float) -> list[tuple[bool, float]]:
    """Race ``hedged`` over streams of ``chunks`` 5-character chunks: the first request's first
    token after ``first_token_s`` and then one chunk every ``chunk_s``; a duplicate's after
    0.01 s, every ``duplicate_chunk_s``. Returns (duplicate, sent at) per request sent."""
    import asyncio
    import time
    from types import SimpleNamespace

    from chainray.guards.hedge import Charge, hedged

    async def scenario():
        charge, sends = Charge(), []

        async def send(duplicate: bool, progress):
            charge.leave()
            sends.append((duplicate, time.monotonic()))
            progress.streamed = True
            await asyncio.sleep(0.01 if duplicate else first_token_s)
            for _ in range(chunks):
                progress.on_text("abcde")
                await asyncio.sleep(duplicate_chunk_s if duplicate else chunk_s)
            return SimpleNamespace(text="abcde" * chunks, prompt_tokens=5,
                                   completion_tokens=chunks), 0.1

        async def look_up():
            return limits

        await asyncio.wait_for(hedged(send, look_up, charge, streaming=True), 8)
        return sends

    return asyncio.run(scenario())


@pytest.mark.parametrize("first_token_s, duplicated", [(0.3, False), (5.0, True)])
def test_a_late_first_token_is_a_straggler_only_past_the_duration_quantile(first_token_s,
                                                                            duplicated):
    from chainray.guards.call_guards import Latencies

    latencies = Latencies(min_samples=10)
    for i in range(20):  # first tokens after 0.05-0.1 s, whole answers after about 0.5 s
        latencies.add("m", "step", 10, 0.5 + i / 1000, 0.05 + i / 400, 0.001, 50)
    # After its first token, it answers at a normal pace.
    sends = hedge_send_times(latencies.limits("m", "step", 10, 0.9), first_token_s,
                             chunks=10, chunk_s=0.005, duplicate_chunk_s=0.005)
    # A duplicate pays the prompt again: a request late to its first token gets one only once
    # it has been in flight longer than the step's requests take whole.
    assert [duplicate for duplicate, _ in sends] == [False, True][:1 + duplicated]
    if duplicated:
        assert 0.45 <= sends[1][1] - sends[0][1] < 2.0


def test_a_slow_decoder_is_hedged_by_its_pace_soon_after_its_first_token():
    from chainray.guards.call_guards import StragglerLimits

    # Whole answers take 5 s; 1 ms a character is slow. The first token comes after the
    # hedge starts watching, then 5 characters every 0.1 s: 20x slower than the limit.
    limits = StragglerLimits(duration_s=5.0, per_char_s=0.001, reply_chars=500,
                             median_per_char_s=0.0002, median_first_token_s=0.05)
    sends = hedge_send_times(limits, 0.05, chunks=100, chunk_s=0.1, duplicate_chunk_s=0.001)
    # ~0.3 s after its first token it is 200 characters behind the limit: a duplicate leaves
    # then, not when the duration limit (5 s) is reached.
    assert [duplicate for duplicate, _ in sends] == [False, True]
    assert sends[1][1] - sends[0][1] < 1.5


def test_a_streamed_hedge_is_decided_at_the_first_token_and_the_loser_charged_its_prompt():
    import asyncio
    import time
    from types import SimpleNamespace

    from chainray.guards.call_guards import StragglerLimits
    from chainray.guards.hedge import Charge, hedged, loser_charge
    from chainray.tokens import estimate_prompt_tokens

    messages = [{"role": "user", "content": "say something about tea " * 10}]

    async def scenario():
        charge, events = Charge(), {}

        async def send(duplicate: bool, progress):
            charge.leave()
            progress.streamed = True
            try:  # the first request never starts answering; its duplicate answers slowly
                await asyncio.sleep(5 if not duplicate else 0.02)
                for word in ("tea ", "is ", "good"):
                    progress.on_text(word)
                    await asyncio.sleep(0.2)
            except asyncio.CancelledError:
                cut_at = time.monotonic()
                await asyncio.wait_for(charge.settled.wait(), 2)  # as the call path does
                events[duplicate] = (cut_at, loser_charge(charge, progress, messages))
                raise
            return SimpleNamespace(text="tea is good", prompt_tokens=30,
                                   completion_tokens=3), 0.6

        async def limits() -> StragglerLimits:  # no answer within 0.05 s: a straggler
            return StragglerLimits(duration_s=0.05)

        started = time.monotonic()
        (answer, _), progress = await asyncio.wait_for(
            hedged(send, limits, charge, streaming=True), 3)
        return started, time.monotonic(), answer, progress, events

    started, ended, answer, progress, events = asyncio.run(scenario())
    assert answer.text == "tea is good" and progress.started.is_set()
    cancelled_at, charged = events[False]
    # The loser is cut at the winner's first token (~0.07 s), not when the winner ends (~0.67 s).
    assert cancelled_at - started < 0.4 < ended - started
    # ... and charged, once the winner's usage is known, its prompt as the winner's and no
    # output (it had delivered none).
    assert charged == (30, 0) != (estimate_prompt_tokens(messages), 0)
    assert True not in events  # the winner ran to its end


@pytest.mark.parametrize("median_per_char_s,sent,cut", [(0.001, 2, [False]), (0.05, 1, [])])
def test_a_slow_stream_gets_a_duplicate_only_if_that_is_expected_to_end_sooner(
        median_per_char_s, sent, cut):
    import asyncio
    import time
    from types import SimpleNamespace

    from chainray.guards.call_guards import StragglerLimits
    from chainray.guards.hedge import Charge, hedged

    async def scenario():
        charge, events, sends = Charge(), {}, []

        async def send(duplicate: bool, progress):
            charge.leave()
            sends.append(duplicate)
            progress.streamed = True
            pace = 0.001 if duplicate else 0.02  # the first request decodes 20x slower
            try:
                await asyncio.sleep(0.05 if duplicate else 0.0)
                for _ in range(20):
                    progress.on_text("abcde")
                    await asyncio.sleep(5 * pace)
            except asyncio.CancelledError:
                events[duplicate] = time.monotonic()
                raise
            return SimpleNamespace(text="x" * 100, prompt_tokens=5, completion_tokens=25), 1.0

        async def limits() -> StragglerLimits:  # a reply is 100 characters; 1 ms each is slow
            return StragglerLimits(duration_s=10.0, per_char_s=0.001, reply_chars=100,
                                   median_per_char_s=median_per_char_s)

        (answer, _), _ = await asyncio.wait_for(hedged(send, limits, charge, True), 5)
        return events, sends

    events, sends = asyncio.run(scenario())
    # ~0.2 s in, the first request is 200 characters behind the 1 ms limit, with ~90 of 100
    # characters to come at its pace (~1.8 s). A duplicate at the median pace would take
    # 0.1 s: it is sent, and the first request is cut when it starts answering. At a slow
    # median pace (5 s) a duplicate would end later: none is sent.
    assert len(sends) == sent and list(events) == cut


def test_the_hedging_quantile_needs_enough_finished_requests():
    from chainray.guards.call_guards import Latencies

    latencies = Latencies(min_samples=10)
    for seconds in range(1, 10):
        latencies.add("m", "a", 100, float(seconds))
    assert latencies.threshold("m", "a", 100, 0.9) is None
    latencies.add("m", "a", 100, 10.0)
    # The q-quantile: the smallest duration that at least q of the known ones do not exceed.
    assert latencies.threshold("m", "a", 100, 0.9) == 9.0
    assert latencies.threshold("m", "a", 100, 0.95) == 10.0
    assert latencies.threshold("m", "a", 100, 0.5) == 5.0
    assert latencies.threshold("other", "a", 100, 0.5) is None


def test_a_step_with_no_history_is_judged_per_requested_token_of_its_model():
    from chainray.guards.call_guards import Latencies

    latencies = Latencies(min_samples=10)
    for i in range(10):  # a 300-token step takes about 3 s
        latencies.add("m", "short", 300, 3.0 + i / 100)
    # A 1500-token step of the same model is a straggler only after about 15 s, not 3 s.
    assert 15.0 <= latencies.threshold("m", "long", 1500, 0.9) <= 15.5
    for _ in range(10):  # once the step has its own history, that is what counts
        latencies.add("m", "long", 1500, 9.0)
    assert latencies.threshold("m", "long", 1500, 0.9) == 9.0


def test_the_hedging_views_keep_the_latest_samples_only():
    from chainray.actors.durations import DurationLog
    from chainray.guards.call_guards import Latencies

    latencies = Latencies(min_samples=10, window=20)
    for _ in range(20):
        latencies.add("m", "a", 100, 9.0, 1.0)
    for _ in range(20):  # the endpoint got faster: the old samples leave the view
        latencies.add("m", "a", 100, 3.0, 0.5)
    assert latencies.threshold("m", "a", 100, 0.95) == 3.0
    assert latencies.limits("m", "a", 100, 0.95).median_first_token_s == 0.5
    assert all(len(known) <= 20 for known in latencies.by_key.values())

    book = DurationLog(keep=10)
    cursor, _ = book.exchange("one", 0, [("m", "a", 100, 1.0, None, None)])
    for i in range(30):
        book.exchange("two", 0, [("m", "a", 100, float(i), None, None)])
    assert len(book.log) < 20  # bounded
    # A reader from before the oldest kept sample gets what is kept, and a cursor that
    # goes on from there.
    cursor, seen = book.exchange("one", cursor, [])
    assert seen == [sample for _, sample in book.log] and seen[-1][3] == 29.0
    assert book.exchange("one", cursor, []) == (cursor, [])


def test_step_runners_share_one_view_of_finished_requests():
    import asyncio
    from types import SimpleNamespace

    from chainray.actors.durations import DurationLog, SharedLatencies

    book = DurationLog()

    async def exchange(*args):
        return book.exchange(*args)

    handle = SimpleNamespace(exchange=SimpleNamespace(remote=exchange))

    async def scenario():
        one, two = (SharedLatencies(handle, period_s=0.0, min_samples=4) for _ in range(2))
        for seconds in (1.0, 1.1):
            one.add("m", "a", 100, seconds)
            await one.exchanging
        for seconds in (1.2, 9.0):
            two.add("m", "a", 100, seconds)
            await two.exchanging
        # Neither runner alone has four finished requests; together they do.
        await one.fresh()
        return one.by_key["m|a"], two.by_key["m|a"], one.threshold("m", "a", 100, 0.75)

    first, second, threshold = asyncio.run(scenario())
    assert first == second == [1.0, 1.1, 1.2, 9.0]  # the same samples, each counted once
    assert threshold == 1.2 and len(book.log) == 4
