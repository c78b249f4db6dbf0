"""Process faults: a step runner or the RateLimiter killed mid-run, the driver killed and the
run resumed without re-sending finished steps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import ray

from chainray.cli.main import main
from chainray.runner.journal import journal_dir
from tests.helpers import fan_chain, job, session_for


def test_step_runner_killed_mid_call_is_retried_and_the_run_completes(ray_session, sim):
    sim.configure(speed=2.0, ttft_sigma=0.0)  # each call takes about 0.3 s
    with session_for(sim) as session:
        pids = ray.get(session.coordinator.runner_pids.remote())
        ref = session.submit(job(fan_chain(6), "parallel"))
        deadline = time.time() + 10
        while sim.stats(requests=False)["in_flight"] == 0 and time.time() < deadline:
            time.sleep(0.02)
        os.kill(pids[0], signal.SIGKILL)
        result = ray.get(ref, timeout=60)
        progress = ray.get(session.coordinator.progress.remote())
    assert result.status == "ok" and len(result.steps) == 7
    assert progress["resubmitted"] >= 1
    assert sim.stats()["requests"] >= result.api_calls  # lost attempts were really sent


def test_rate_limiter_killed_restarts_and_leaks_no_permits(ray_session, sim):
    sim.configure(speed=5.0, ttft_sigma=0.0)
    with session_for(sim, max_concurrency=2) as session:
        ref = session.submit(job(fan_chain(8), "parallel"))
        limiter = session.limiters["gpt-4o-mini"]
        time.sleep(0.3)
        ray.kill(limiter, no_restart=False)
        result = ray.get(ref, timeout=90)
        stats = ray.get(limiter.stats.remote(), timeout=30)
    assert result.status == "ok"
    assert stats["in_flight"] == 0 and stats["waiting"] == 0
    assert sim.stats()["peak_in_flight"] <= 4  # 2 per limiter incarnation at most


def test_driver_killed_mid_run_then_resume_sends_no_finished_step(ray_session, sim,
                                                                   tmp_path):
    sim.configure(speed=3.0, ttft_sigma=0.0)   # each step about 1-2 s
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "CHAINRAY_HOME": str(tmp_path)}
    address = ray.get_runtime_context().gcs_address
    command = [sys.executable, "-m", "chainray.cli.main", "run", "progressive_refinement",
               "--strategy", "sequential", "--address", address, "--base-url", sim.base_url,
               "--quiet"]
    driver = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    run_id = driver.stderr.readline().split()[1]
    threading.Thread(target=driver.stderr.read, daemon=True).start()
    journal = tmp_path / "runs" / f"{run_id}.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline:
        if journal.exists() and len(journal.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=10)
    finished = [json.loads(line)["id"] for line in journal.read_text().splitlines()[1:]]
    assert finished and "polish" not in finished
    sent_before = {r["tag"] for r in sim.stats()["request_log"] if r["status"] == 200}
    sim.reset()
    os.environ["CHAINRAY_HOME"], saved = str(tmp_path), os.environ["CHAINRAY_HOME"]
    try:
        out = tmp_path / "resumed.json"
        code = main(["run", "progressive_refinement", "--strategy", "sequential",
                     "--base-url", sim.base_url, "--resume", run_id, "--json", str(out),
                     "--quiet"])
    finally:
        os.environ["CHAINRAY_HOME"] = saved
    assert code == 0
    resent = {r["tag"].rsplit(":", 1)[1] for r in sim.stats()["request_log"]}
    assert resent.isdisjoint(finished)
    assert resent == {"draft", "expand", "polish"} - set(finished)
    assert {t.rsplit(":", 1)[1] for t in sent_before} >= set(finished)
    assert json.loads(out.read_text())["status"] == "ok"


def test_resume_refuses_a_journal_of_other_inputs(ray_session, sim, tmp_path, capsys):
    os.environ["CHAINRAY_HOME"], saved = str(tmp_path), os.environ["CHAINRAY_HOME"]
    try:
        (journal_dir()).mkdir(parents=True)
        (journal_dir() / "abc.jsonl").write_text('{"run_id": "abc", "key": "other"}\n')
        code = main(["run", "progressive_refinement", "--base-url", sim.base_url,
                     "--resume", "abc", "--quiet"])
    finally:
        os.environ["CHAINRAY_HOME"] = saved
    assert code == 2 and "same ones" in capsys.readouterr().err
    assert sim.stats()["requests"] == 0
