"""Two processes on one machine with a Ray each keep two budgets: the second one says so."""

from __future__ import annotations

import subprocess
import sys

from chainray.limit.machine_budget import claim_budget
from tests.plain_server import PlainServer
from tests.test_limiter_actor import session_for_plain

HOLD = ("import sys; from chainray.limit.machine_budget import claim_budget; "
        "claim_budget(sys.argv[1]); print('held', flush=True); sys.stdin.read()")


def hold_budget(base_url: str) -> subprocess.Popen:
    """Another process claiming ``base_url`` (as a second chainray with its own Ray would)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, base_url], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def release(holder: subprocess.Popen) -> None:
    holder.stdin.close()
    holder.wait(timeout=30)


def test_a_second_process_is_told_its_budget_is_not_shared_and_how_to_share_it(
        ray_session, capsys):
    server = PlainServer(latency_s=0.01)
    with server.running() as base_url:
        holder = hold_budget(base_url)
        try:
            with session_for_plain(base_url, progress=True):
                pass
        finally:
            release(holder)
    err = capsys.readouterr().err
    assert f"another chainray process (PID {holder.pid}) is sending to {base_url}" in err
    assert "--address auto" in err
    assert server.log == []  # saying so sends nothing


def test_the_claim_ends_with_the_process_that_held_it():
    url = "http://127.0.0.1:9/v1-claim-test"
    holder = hold_budget(url)
    assert claim_budget(url + "-other").holder_pid is None  # another endpoint: no conflict
    taken = claim_budget(url)
    release(holder)
    assert taken.holder_pid == holder.pid
    assert claim_budget(url).holder_pid is None  # the kernel released the dead holder's lock
