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
