"""The spend cap's reservation book and the response cache (no Ray, no network)."""

from __future__ import annotations

import random
import threading

from chainray.exec.cache import CachedReply, ResponseCache
from chainray.exec.spend import SpendBook, worst_case_prompt_tokens


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

    from chainray.exec.hedge import Charge, hedged

    async def scenario():
        charge, events = Charge(), []

        async def send(duplicate: bool):
            charge.sent.set()
            try:
                await asyncio.sleep(0.01 if duplicate else 5)
            except asyncio.CancelledError:
                events.append(f"cancelled duplicate={duplicate}")
                raise
            return SimpleNamespace(text="duplicate" if duplicate else "first",
                                   prompt_tokens=3, completion_tokens=4), 0.01

        (answer, _), = [await asyncio.wait_for(hedged(send, 0.05, charge), 2)]
        return answer, events, charge.loser

    answer, events, charged = asyncio.run(scenario())
    assert answer.text == "duplicate" and events == ["cancelled duplicate=False"]
    assert charged == (3, 4)  # the cancelled request is charged as much as the winner


def test_the_hedging_quantile_needs_enough_finished_requests():
    from chainray.exec.guards import Latencies

    latencies = Latencies(min_samples=10)
    for seconds in range(1, 10):
        latencies.add("m", float(seconds))
    assert latencies.quantile("m", 0.9) is None
    latencies.add("m", 10.0)
    assert latencies.quantile("m", 0.9) == 10.0 and latencies.quantile("m", 0.5) == 6.0
    assert latencies.quantile("other", 0.5) is None
