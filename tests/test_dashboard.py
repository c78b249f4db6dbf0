"""Where users look: a run on a default `ray start --head` cluster (token authentication on),
seen through Ray's state API (what the dashboard shows). One small chain, one run, at
simulator speed; the cluster is this test module's own, stopped by its process group."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from chainray.api.cluster import Token, probe

ROOT = Path(__file__).resolve().parent.parent
CHAIN = "sql_pipeline"  # two llm and two python steps
STEPS = ("generate", "validate", "execute", "explain")

pytestmark = pytest.mark.timeout(240)  # ~30-40 s on an idle 2-core machine


@dataclass(frozen=True)
class TokenCluster:
    address: str
    dashboard: str
    env: dict[str, str]  # a user's environment on the head: HOME holds ~/.ray/auth_token


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def wait_until_up(address: str, dashboard: str, token: Token, process, timeout_s=120.0):
    deadline = time.monotonic() + timeout_s
    request = urllib.request.Request(f"{dashboard}/api/version",
                                     headers={"Authorization": f"Bearer {token.value}"})
    while time.monotonic() < deadline:
        assert process.poll() is None, "ray start exited"
        try:
            if probe(address, token, timeout_s=2) == "ok":
                urllib.request.urlopen(request, timeout=2).close()
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the cluster at {address} did not come up in {timeout_s} s")


@pytest.fixture(scope="module")
def token_cluster():
    """`ray start --head --num-cpus 2` as a user starts it after any local Ray run: a token
    in ~/.ray/auth_token (here a temporary HOME), RAY_AUTH_MODE unset."""
    root = Path(tempfile.mkdtemp(prefix="crd", dir="/tmp"))  # short: Ray's socket paths
    (root / "home" / ".ray").mkdir(parents=True)
    token = Token(uuid.uuid4().hex, "test")
    (root / "home" / ".ray" / "auth_token").write_text(token.value)
    gcs, dash, client, node, objects, agent, metrics, env_agent, agent_grpc = free_ports(9)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    env.update(HOME=str(root / "home"))
    ray = str(Path(sys.executable).parent / "ray")
    command = [ray, "start", "--head", "--block", "--num-cpus", "2", "--temp-dir",
               str(root / "ray"), "--node-ip-address", "127.0.0.1", "--port", str(gcs),
               "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
               "--ray-client-server-port", str(client), "--node-manager-port", str(node),
               "--object-manager-port", str(objects), "--dashboard-agent-listen-port",
               str(agent), "--metrics-export-port", str(metrics), "--runtime-env-agent-port",
               str(env_agent), "--dashboard-agent-grpc-port", str(agent_grpc),
               "--object-store-memory", str(150 * 2**20), "--disable-usage-stats"]
    with open(root / "ray-start.log", "w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # its own group: stopped by it
    try:
        cluster = TokenCluster(f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dash}", env)
        wait_until_up(cluster.address, cluster.dashboard, token, process)
        yield cluster
    finally:
        for sig, grace_s in ((signal.SIGTERM, 3), (signal.SIGKILL, 10)):  # ours, temporary
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                continue
        shutil.rmtree(root, ignore_errors=True)


def chainray(cluster: TokenCluster, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chainray.cli.main", *args],
                          env={**cluster.env, **env}, capture_output=True, text=True,
                          timeout=180, cwd=ROOT)


def test_a_run_shows_as_its_steps_in_the_dashboard(token_cluster, tmp_path):
    out = tmp_path / "run.json"
    # --address HOST:PORT, as --address auto does: the token is found, nothing set by hand.
    # The guards on too (spend cap, cache, hedging): their actors are chainray's as well.
    run = chainray(token_cluster, "run", CHAIN, "--address", token_cluster.address,
                   "--sim-speed", "50", "--quiet", "--json", str(out), "--max-cost", "1",
                   "--cache", str(tmp_path / "cache"), "--hedge-after", "0.9",
                   CHAINRAY_HOME=str(tmp_path))
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    assert result["status"] == "ok"
    job_name = f"chainray {CHAIN} {result['run_id']}"
    query = subprocess.run([sys.executable, "-m", "tests.state_query", token_cluster.dashboard,
                            job_name, "60"], env={**token_cluster.env, "RAY_AUTH_MODE": "token"},
                           capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert query.returncode == 0, query.stderr
    seen = json.loads(query.stdout)

    assert seen["job"] is not None, seen  # the Jobs view names the job after chain and run
    assert seen["job"]["metadata"]["chainray_chain"] == CHAIN
    names = [task["name"] for task in seen["tasks"]]
    steps = [name for name in names if name.startswith(f"{CHAIN}:")]
    assert sorted(steps) == sorted(f"{CHAIN}:{result['strategy']}:{s}" for s in STEPS)
    assert len(names) - len(steps) <= 0.1 * len(names), names  # bookkeeping stays out
    assert [t for t in seen["tasks"] if t["state"] != "FINISHED"] == []  # none FAILED
    actors = seen["actors"]
    assert {a["class"] for a in actors} >= {"Coordinator", "StepRunner", "RateLimiter",
                                            "SpendLedger", "CountingCache", "DurationLog"}
    assert all(a["name"].startswith("chainray-") for a in actors), actors
    [limiter] = [a for a in actors if a["class"] == "RateLimiter"]
    assert "calls in flight" in limiter["repr"] and "rpm" in limiter["repr"]


def test_joining_without_the_token_is_one_line(token_cluster, tmp_path):
    run = chainray(token_cluster, "run", CHAIN, "--address", token_cluster.address,
                   "--quiet", "--no-journal", HOME=str(tmp_path), CHAINRAY_HOME=str(tmp_path))
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    [line] = [line for line in run.stderr.splitlines() if line.strip()]
    assert line.startswith("chainray: error: ") and "RAY_AUTH_TOKEN" in line
