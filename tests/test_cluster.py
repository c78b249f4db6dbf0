"""cluster.yaml against Ray's own schema, and a batch on a two-node cluster under one limit."""

from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_cluster_yaml_is_valid_for_ray_up():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json")
                        .read_text())
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(config)]
    assert errors == []
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))  # what `ray up` checks
    assert any("chainray" in command for command in config["setup_commands"])


@pytest.fixture(scope="module")
def two_node_cluster(simulator):
    """A head and one worker node on this machine; the session's Ray is set aside. One for
    the module (a cluster costs seconds to start and stop): the test that loses its worker
    node comes last."""
    from ray.cluster_utils import Cluster

    was_connected = ray.is_initialized()
    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "object_store_memory": 150 * 2**20})
    cluster.add_node(num_cpus=1, object_store_memory=150 * 2**20)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level=logging.ERROR, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()
    if was_connected:
        ray.init(address="local", num_cpus=2, include_dashboard=False,
                 logging_level=logging.ERROR, log_to_driver=False)


def test_two_drivers_share_one_budget(ray_session, sim, tmp_path):
    """Two `chainray run` processes on one cluster: their combined rate stays under the limit."""
    import subprocess
    import sys

    sim.configure(speed=20.0, rpm=240, burst_s=1.0)   # the server allows 4 requests/second
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("\n".join(json.dumps({"article": f"story {i}"}) for i in range(3)))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "CHAINRAY_HOME": str(tmp_path)}
    command = [sys.executable, "-m", "chainray.cli.main", "run", "headline_ensemble", "--inputs",
               str(inputs), "--address", ray.get_runtime_context().gcs_address,
               "--base-url", sim.base_url, "--rpm", "240", "--quiet"]
    drivers = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [d.communicate(timeout=120)[1] for d in drivers]
    assert [d.returncode for d in drivers] == [0, 0], errors
    stats = sim.stats()
    # Every call answered; the server's 1 s bucket leaves only target_share's headroom, so
    # each driver's first burst may meet one 429 under scheduling jitter (it is retried).
    assert stats["by_status"]["200"] == 36  # 2 drivers x 3 runs x 6 calls
    assert stats["by_status"].get("429", 0) <= 2
    starts = sorted(r["start"] for r in stats["request_log"])
    assert (len(starts) - 1 - 4) / (starts[-1] - starts[0]) <= 240 / 60 * 1.05


def test_batch_runs_on_both_nodes_under_one_limit(two_node_cluster, sim):
    from chainray.spec.chain import load_chain
    from tests.helpers import job, session_for

    sim.configure(speed=20.0, rpm=300, burst_s=1.0)   # the server allows 5 requests/second
    chain = load_chain("headline_ensemble")
    with session_for(sim, rpm=300, runners=4) as session:
        results = list(session.run_many([job(chain, "parallel") for _ in range(4)], window=4))
    assert all(r.status == "ok" for r in results)
    nodes = {step.node_id for r in results for step in r.steps}
    assert nodes == {n["NodeID"] for n in ray.nodes() if n["Alive"]} and len(nodes) == 2
    stats = sim.stats()
    # Every call answered; the server's 1 s bucket leaves only target_share's headroom, so
    # a permit's way to the other node may bunch a few sends (each 429 is retried). A limiter
    # per node would send at twice the server's rate: a 429 for about every second call.
    assert stats["by_status"]["200"] == 24  # one limiter held across nodes
    assert stats["by_status"].get("429", 0) <= 3
    starts = sorted(r["start"] for r in stats["request_log"])
    span = starts[-1] - starts[0]
    assert (len(starts) - 1 - 5) / span <= 300 / 60 * 1.05
    assert os.environ.get("RAY_ADDRESS") is None


def test_a_node_lost_mid_batch_costs_no_run(two_node_cluster, sim):
    """kill -9 of the worker node while its runner has steps in flight: they are sent again
    to the runner on the surviving node, and every run finishes."""
    import threading
    import time

    from chainray.spec.chain import load_chain
    from tests.helpers import job, session_for

    sim.configure(speed=4.0, rpm=10_000, tpm=10_000_000)
    worker = next(iter(two_node_cluster.worker_nodes))
    killed: dict = {}

    def kill_when_busy() -> None:
        deadline = time.monotonic() + 60
        while sim.stats()["requests"] < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        killed["at"] = time.time()
        two_node_cluster.remove_node(worker, allow_graceful=False)

    chain = load_chain("headline_ensemble")
    with session_for(sim, rpm=10_000, tpm=10_000_000, runners=2, timeout=30.0) as session:
        threading.Thread(target=kill_when_busy, daemon=True).start()
        results = list(session.run_many([job(chain, "parallel") for _ in range(4)], window=2))
    assert killed and all(r.status == "ok" for r in results), [r.error for r in results]
    log = sim.stats()["request_log"]
    steps = sum(len(r.steps) for r in results)
    # Each step paid once, plus the requests in flight on the lost node when it died (their
    # replies died with it; the steps were sent again on the surviving node).
    in_flight = [r for r in log if r["start"] <= killed["at"] <= r["end"]]
    assert steps <= len(log) <= steps + len(in_flight), (len(log), steps, len(in_flight))
