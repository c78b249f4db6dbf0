"""A Ctrl-C stops admission at once and keeps every reply already paid for."""

from __future__ import annotations

import _thread
import threading
import time

from tests.helpers import fan_chain, job
from tests.plain_server import PlainServer
from tests.test_limiter_actor import session_for_plain


def interrupt_when(condition, timeout_s: float = 30.0) -> dict:
    """Raise KeyboardInterrupt in the main thread (as a Ctrl-C does) once ``condition()``."""
    fired: dict = {}

    def watch() -> None:
        deadline = time.monotonic() + timeout_s
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.01)
        fired["at"] = time.time()
        _thread.interrupt_main()

    threading.Thread(target=watch, daemon=True).start()
    return fired


def test_a_ctrl_c_sends_nothing_new_and_keeps_every_reply_in_flight(ray_session):
    server = PlainServer(latency_s=1.5)
    runs = [job(fan_chain(4, name=f"c{i}")) for i in range(3)]
    with server.running() as base_url, session_for_plain(base_url, max_concurrency=6) as session:
        fired = interrupt_when(lambda: len(server.log) == 0 and server.started >= 6)
        results = list(session.run_many(runs, window=2))
        assert session.interrupted
    started = server.started
    assert started >= 6 and fired
    # Every request the server saw was answered and counted as an ok step: nothing paid is lost.
    assert [e["status"] for e in server.log] == [200] * started
    steps = [s for r in results for s in r.steps]
    assert sum(r.api_calls for r in results) == started
    assert sum(s.status == "ok" for s in steps) == started
    # Nothing new was sent after the interrupt: steps waiting for a permit were refused, the
    # rest skipped, and the third run, not yet admitted, never started.
    stopped = [s for s in steps if s.status != "ok"]
    assert stopped and all("interrupted" in s.error and s.attempts == 0 for s in stopped)
    assert len(results) == 2 and all(r.status != "ok" for r in results)
    assert max(server.start_times) < fired["at"] + 1.0
