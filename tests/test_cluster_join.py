"""Joining a cluster by address: the token is found where Ray looks, the cluster is asked once
whether it wants one, and a refusal is one line that says what to set (no Ray needed: a small
gRPC server stands in for a token-authenticated GCS)."""

from __future__ import annotations

import json
import re
from concurrent import futures
from importlib.resources import files
from pathlib import Path

import grpc
import pytest

from chainray.api.cluster import (
    find_token,
    job_metadata,
    name_job,
    prepare_join,
    probe,
)
from chainray.errors import InputError

ROOT = Path(__file__).resolve().parent.parent


class FakeGcs:
    """Answers GetClusterId, with or without demanding ``Authorization: Bearer <token>``."""

    def __init__(self, token: str | None) -> None:
        self.token, self.calls = token, 0
        self.server = grpc.server(futures.ThreadPoolExecutor(2))
        handler = grpc.method_handlers_generic_handler("ray.rpc.NodeInfoGcsService", {
            "GetClusterId": grpc.unary_unary_rpc_method_handler(
                self.get_cluster_id, request_deserializer=bytes, response_serializer=bytes)})
        self.server.add_generic_rpc_handlers((handler,))
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()

    def get_cluster_id(self, request: bytes, context) -> bytes:
        self.calls += 1
        sent = dict(context.invocation_metadata()).get("authorization")
        if self.token is not None and sent != f"Bearer {self.token}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "InvalidAuthToken")
        return b"\n\x00"


@pytest.fixture
def gcs():
    servers: list[FakeGcs] = []

    def start(token: str | None) -> FakeGcs:
        servers.append(FakeGcs(token))
        return servers[-1]

    yield start
    for server in servers:
        server.server.stop(None)


def home_with_token(tmp_path: Path, token: str) -> Path:
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text(token + "\n")
    return tmp_path


def test_the_token_is_found_where_ray_looks_in_rays_order(tmp_path):
    home = home_with_token(tmp_path, "from-home")
    named = tmp_path / "named"
    named.write_text("from-path")
    assert find_token({}, home).value == "from-home"
    assert find_token({"RAY_AUTH_TOKEN_PATH": str(named)}, home).value == "from-path"
    token = find_token({"RAY_AUTH_TOKEN": "from-env", "RAY_AUTH_TOKEN_PATH": str(named)}, home)
    assert (token.value, token.source) == ("from-env", "RAY_AUTH_TOKEN")
    assert "from-env" not in repr(token)  # a token never reaches a log or a message
    assert find_token({}, tmp_path / "nobody") is None
    (home / ".ray" / "auth_token").write_text("  \n")
    assert find_token({}, home) is None


def test_joining_a_token_cluster_turns_token_mode_on(gcs, tmp_path, monkeypatch):
    server = gcs("s3cret")
    monkeypatch.setenv("HOME", str(home_with_token(tmp_path, "s3cret")))
    env: dict[str, str] = {}
    prepare_join(server.address, env)
    assert env == {"RAY_AUTH_MODE": "token"}
    assert server.calls == 2  # once without the token, once with it


def test_a_cluster_without_authentication_is_joined_as_it_is(gcs, tmp_path, monkeypatch):
    server = gcs(None)
    monkeypatch.setenv("HOME", str(home_with_token(tmp_path, "unused")))
    env: dict[str, str] = {}
    prepare_join(server.address, env)
    assert env == {} and server.calls == 1


@pytest.mark.parametrize("env, says", [
    ({}, "no token was found: set RAY_AUTH_TOKEN"),
    ({"RAY_AUTH_TOKEN": "wrong"}, "refused the token from RAY_AUTH_TOKEN: set RAY_AUTH_TOKEN"),
    ({"RAY_AUTH_MODE": "disabled"}, "RAY_AUTH_MODE=disabled here: unset it"),
])
def test_a_refusal_says_in_one_line_what_to_set(gcs, tmp_path, monkeypatch, env, says):
    server = gcs("s3cret")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token
    with pytest.raises(InputError) as caught:
        prepare_join(server.address, dict(env))
    message = str(caught.value)
    assert says in message and "\n" not in message and "s3cret" not in message
    assert f"the Ray cluster at {server.address}" in message


def test_nothing_listening_is_one_line_not_forty_seconds_of_retries():
    assert probe("127.0.0.1:9", timeout_s=5).startswith("unreachable")
    with pytest.raises(InputError, match="no Ray cluster answers there"):
        prepare_join("127.0.0.1:9", {})


def test_auto_and_client_addresses_are_left_to_ray():
    env: dict[str, str] = {}
    for address in ("auto", "local", "ray://127.0.0.1:10001"):
        prepare_join(address, env)  # no probe: nothing listens at 10001, and no error
    assert env == {}


def test_the_job_is_named_after_its_chain_and_run():
    name_job("quantum_research", run_id="3f2a")
    assert job_metadata() == {"job_name": "chainray quantum_research 3f2a",
                              "chainray_chain": "quantum_research", "chainray_run_id": "3f2a"}
    name_job("headline_ensemble", batch_id="b91")
    assert job_metadata()["job_name"] == "chainray headline_ensemble b91"
    assert "chainray_run_id" not in job_metadata()


def test_the_grafana_dashboard_ships_and_charts_the_limiters_metrics():
    dashboard = json.loads((files("chainray") / "dashboards" / "chainray_grafana_dashboard.json")
                           .read_text())
    queried = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"ray_(chainray_\w+)", target["expr"])}
    limiter_source = (ROOT / "actors" / "rate_limiter.py").read_text()
    exported = set(re.findall(r'(?:Counter|Gauge)\("(chainray_\w+)"', limiter_source))
    # Ray exports a Counter as NAME_total; every metric the limiter exports is charted.
    assert {name.removesuffix("_total") for name in queried} == exported
    assert {v["name"] for v in dashboard["templating"]["list"]} >= {"datasource", "limiter"}
