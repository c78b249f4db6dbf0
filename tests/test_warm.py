"""``chainray up`` / ``status`` / ``down``: a run uses the warm actors, down stops exactly what
up started, and a stale warm.json leaves a run cold and quiet. Each command is a process of
its own with CHAINRAY_HOME in a temporary folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.plain_server import PlainServer

CHAINRAY = [sys.executable, "-m", "chainray.cli.main"]


@pytest.fixture
def home(tmp_path):
    """A CHAINRAY_HOME of the test's own; whatever ``up`` started there is stopped after the
    test, also when it failed or timed out half-way."""
    env = {**os.environ, "CHAINRAY_HOME": str(tmp_path)}
    for name in ("RAY_ADDRESS", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        env.pop(name, None)
    yield tmp_path, env
    if (tmp_path / "warm.json").exists():
        chainray(env, "down", timeout=120)


def chainray(env, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([*CHAINRAY, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def status(env) -> dict:
    done = chainray(env, "status", "--json", timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}").exists() else ""
    return bool(stat) and stat.rsplit(")", 1)[-1].split()[0] != "Z"


def coordinator(state: dict) -> dict:
    return next(a for a in state["actors"] if a["kind"] == "Coordinator")


@pytest.mark.timeout(600)
def test_up_run_status_down(home):
    folder, env = home
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        up = chainray(env, "up", timeout=300)
        assert up.returncode == 0, up.stderr + up.stdout
        try:
            before = status(env)
            assert before["up"] and before["sim_url"].startswith("http://127.0.0.1:")
            assert coordinator(before)["state"] == "alive"
            assert coordinator(before)["runs_done"] == 0
            again = chainray(env, "up")  # a second up reuses the live one
            assert again.returncode == 0 and "already up" in again.stderr
            assert status(env)["pid"] == before["pid"]

            out = folder / "run.json"
            run = chainray(env, "run", "quantum_research", "--sim-speed", "100",
                           "--no-journal", "--json", str(out))
            assert run.returncode == 0, run.stderr[-2000:]
            assert f"using the warm Ray at {before['address']}" in run.stderr
            assert "starting a local Ray" not in run.stderr
            assert json.loads(out.read_text())["status"] == "ok"
            deadline = time.monotonic() + 30  # the daemon refreshes the actors' state
            while (after := status(env)) and coordinator(after).get("runs_done", 0) < 1:
                assert time.monotonic() < deadline, after
                time.sleep(0.5)
            # The run went through the warm Coordinator: same process, one run more, and
            # its runners sent the steps.
            assert coordinator(after)["pid"] == coordinator(before)["pid"]
            runners = [a for a in after["actors"] if a["kind"] == "StepRunner"]
            assert sum(r["steps_done"] for r in runners) > 0
            recorded = {after["pid"], after["sim_pid"],
                        *(pid for pids in after["ray_pids"].values() for pid in pids),
                        *(a["pid"] for a in after["actors"])}
            assert all(alive(pid) for pid in recorded)
            assert_a_killed_drivers_run_stops_on_the_warm_coordinator(folder, env)
        finally:
            down = chainray(env, "down", timeout=120)
        assert down.returncode == 0, down.stderr
        assert not [pid for pid in recorded if alive(pid)]
        assert alive(bystander.pid)  # nothing else was touched
        assert not (folder / "warm.json").exists()
        assert status(env) == {"up": False}
        assert "nothing is up" in chainray(env, "status").stdout
    finally:
        bystander.kill()
        bystander.wait(timeout=10)


def assert_a_killed_drivers_run_stops_on_the_warm_coordinator(folder: Path, env: dict) -> None:
    """The warm Coordinator outlives its drivers: kill -9 of one stops its batch there (nothing
    new sent a second after the kill), not only the driver."""
    server = PlainServer(latency_s=1.0)
    (folder / "fan.yaml").write_text(
        "name: fan\ninputs: {topic: tea}\ndefaults: {max_tokens: 20}\nsteps:\n"
        + "".join(f"  - {{id: s{i}, prompt: 'angle {i} of {{topic}}'}}\n" for i in range(5))
        + "  - {id: final, after: [s0, s1, s2, s3, s4], prompt: 'sum {s0} {s1} {s2}'}\n")
    (folder / "in.jsonl").write_text("".join(f'{{"topic": "t{i}"}}\n' for i in range(20)))
    with server.running() as base_url:
        driver = subprocess.Popen(
            [*CHAINRAY, "run", str(folder / "fan.yaml"), "--inputs", str(folder / "in.jsonl"),
             "--base-url", base_url, "--batch-window", "4", "--quiet"],
            env={**env, "OPENAI_API_KEY": "sk-test"}, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while server.started < 8:
                assert time.monotonic() < deadline and driver.poll() is None, \
                    "the batch never got going"
                time.sleep(0.05)
            killed_at = time.time()
            driver.kill()
            driver.wait(timeout=10)
            time.sleep(3)  # a second for the Coordinator to notice, and more to be sure
        finally:
            driver.kill()
        assert [t for t in server.start_times if t > killed_at + 1.0] == []
        assert server.started < 100  # not the whole batch


def test_stale_warm_file_runs_cold(ray_session, sim, tmp_path, monkeypatch, capsys):
    """A warm.json whose daemon is gone is removed, quietly, and the run goes on without it
    (here on the test session's Ray, as a process that has one already)."""
    from chainray.cli.main import main

    monkeypatch.setenv("CHAINRAY_HOME", str(tmp_path))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=30)
    (tmp_path / "warm.json").write_text(json.dumps({
        "address": "127.0.0.1:1", "pid": gone.pid, "started": time.time(),
        "sim_url": "http://127.0.0.1:1/v1", "sim_pid": gone.pid}))
    assert main(["run", "quantum_research", "--base-url", sim.base_url, "--no-journal"]) == 0
    assert "warm" not in capsys.readouterr().err  # nothing said about a dead daemon
    assert not (tmp_path / "warm.json").exists()
    env = {**os.environ, "CHAINRAY_HOME": str(tmp_path)}
    assert chainray(env, "down").stdout.strip() == "chainray: nothing is up"


def test_a_stop_stops_only_the_runs_it_names(ray_session):
    """On a shared Coordinator (the warm one serves every driver), one driver's Ctrl-C stops
    its own runs; another's run, waiting for the same permits, goes on to the end."""
    import ray

    from tests.helpers import fan_chain, job
    from tests.plain_server import PlainServer
    from tests.test_limiter_actor import session_for_plain

    server = PlainServer(latency_s=1.0)
    mine, theirs = job(fan_chain(4, name="mine")), job(fan_chain(4, name="theirs"))
    with server.running() as base_url, session_for_plain(base_url, max_concurrency=3) as session:
        refs = [session.submit(mine), session.submit(theirs)]
        deadline = time.monotonic() + 60
        while server.started < 3:  # the permits are all taken: the other steps wait
            assert time.monotonic() < deadline
            time.sleep(0.01)
        ray.get(session.coordinator.stop.remote([mine.run_id]), timeout=30)
        stopped, other = ray.get(refs, timeout=120)
    assert other.status == "ok" and all(s.status == "ok" for s in other.steps)
    assert stopped.status != "ok"
    refused = [s for s in stopped.steps if s.status != "ok"]
    assert refused and all(s.attempts == 0 for s in refused)
    # Every request sent belongs to a step that finished ok: the stop lost no paid reply.
    assert server.started == sum(s.attempts for r in (stopped, other) for s in r.steps)


def test_a_warm_file_naming_a_live_process_that_is_no_daemon_is_stale(monkeypatch, tmp_path):
    from chainray.api.warm import read_warm

    monkeypatch.setenv("CHAINRAY_HOME", str(tmp_path))
    (tmp_path / "warm.json").write_text(json.dumps({  # this test's PID: alive, no daemon
        "address": "127.0.0.1:1", "pid": os.getpid(), "started": time.time(),
        "sim_url": "http://127.0.0.1:1/v1", "sim_pid": os.getpid()}))
    assert read_warm() is None
    assert not (tmp_path / "warm.json").exists()


def test_down_with_a_stale_file_signals_no_process_that_reused_its_pids(home):
    folder, env = home
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        (folder / "warm.json").write_text(json.dumps({
            "address": "127.0.0.1:1", "pid": bystander.pid, "started": time.time(),
            "sim_url": "http://127.0.0.1:1/v1", "sim_pid": bystander.pid,
            "ray_pids": {"raylet": [bystander.pid]}}))
        down = chainray(env, "down", timeout=60)
        assert down.returncode == 0, down.stderr
        assert alive(bystander.pid)
        assert not (folder / "warm.json").exists()
    finally:
        bystander.kill()
        bystander.wait(timeout=10)
