"""Joining a Ray cluster by address, and what the cluster's dashboard calls this driver.

Ray 2.60 clusters use token authentication: ``ray start --head`` turns it on whenever a token
exists (``~/.ray/auth_token``, which any local ``ray.init()`` writes). A driver that joins with
an explicit address never turns it on by itself (Ray does that only for ``auto``), so it is
refused (``InvalidAuthToken``) and Ray retries for 20 s before raising. Before ``ray.init``,
``prepare_join`` therefore asks the cluster's GCS once, with one gRPC call that needs no Ray
state: does it answer without a token, and with the token found where Ray looks for one?
It then switches this driver to token mode the way Ray does, or says in one line what to set.

The session directory of a ``ray start`` cluster holds no copy of the token (checked on
2.60: ports, logs and metrics config only), so the places to look are Ray's own three.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from chainray.errors import InputError

__all__ = ["Token", "find_token", "probe", "prepare_join", "join", "name_job", "job_metadata",
           "job_config", "connect_ray", "leave_ray"]

# Token sources, in Ray's order (doc ray-core/internals/token-authentication).
TOKEN_ENV, TOKEN_PATH_ENV, MODE_ENV = "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"
GET_TOKEN = ("set RAY_AUTH_TOKEN to the cluster's token (`ray get-auth-token` on the head "
             "node prints it) or RAY_AUTH_TOKEN_PATH to a file holding it")
_GCS_CALL = "/ray.rpc.NodeInfoGcsService/GetClusterId"  # answered by every GCS, cheaply


@dataclass(frozen=True)
class Token:
    """An authentication token and where it was found (the value is never shown)."""

    value: str = field(repr=False)
    source: str


def find_token(env: dict[str, str] | None = None, home: Path | None = None) -> Token | None:
    """The token Ray would use: ``RAY_AUTH_TOKEN``, else the file ``RAY_AUTH_TOKEN_PATH``
    names, else ``~/.ray/auth_token``."""
    env = os.environ if env is None else env
    if env.get(TOKEN_ENV, "").strip():
        return Token(env[TOKEN_ENV].strip(), TOKEN_ENV)
    named = env.get(TOKEN_PATH_ENV)
    path = Path(named) if named else (home or Path.home()) / ".ray" / "auth_token"
    try:
        value = path.read_text().strip()
    except OSError:
        return None
    return Token(value, f"{TOKEN_PATH_ENV} ({path})" if named else str(path)) if value else None


def probe(address: str, token: Token | None = None, timeout_s: float = 5.0) -> str:
    """Ask the GCS at ``address`` for its cluster id: ``"ok"``, ``"unauthenticated"`` (it
    wants a token, or another one), or ``"unreachable: <why>"``."""
    import grpc  # Ray's own dependency; imported here so that plain imports stay light

    metadata = [("authorization", f"Bearer {token.value}")] if token else []
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(_GCS_CALL, request_serializer=bytes,
                                   response_deserializer=bytes)
        try:
            call(b"", timeout=timeout_s, metadata=metadata)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                return "unauthenticated"
            return f"unreachable: {exc.code().name.lower()}"
    return "ok"


def _is_host_port(address: str) -> bool:
    return re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[\w.-]+):\d+", address) is not None


def prepare_join(address: str, env: dict[str, str] | None = None) -> None:
    """Make this driver able to join ``address`` (``HOST:PORT``) or raise ``InputError``
    with one line that says what to set. Other forms (``auto``, ``ray://``) are Ray's."""
    env = os.environ if env is None else env
    if not _is_host_port(address):
        return
    where = f"the Ray cluster at {address}"
    answer = probe(address)
    if answer.startswith("unreachable"):
        raise InputError(f"cannot join {where}: no Ray cluster answers there "
                         f"({answer.split(': ', 1)[1]}); check --address or RAY_ADDRESS "
                         "(`ray status` on the head node prints the address)")
    if answer == "ok":
        return
    if env.get(MODE_ENV, "").lower() == "disabled":
        raise InputError(f"{where} uses token authentication but {MODE_ENV}=disabled here: "
                         f"unset it, or set {MODE_ENV}=token and {GET_TOKEN}")
    token = find_token(env)
    if token is None:
        raise InputError(f"{where} uses token authentication and no token was found: "
                         f"{GET_TOKEN}")
    if probe(address, token) != "ok":
        raise InputError(f"{where} refused the token from {token.source}: {GET_TOKEN}")
    _enable_token_mode(env)


def _enable_token_mode(env) -> None:
    """What ``ray.init("auto")`` does when a token exists (Ray's ``_enable_token_auth``): the
    mode is read from the environment into Ray's config, which Ray caches at import."""
    from ray._raylet import AuthenticationTokenLoader, Config

    env[MODE_ENV] = "token"
    if env is os.environ:
        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()


def join(address: str, **init_options) -> None:
    """``ray.init(address)`` after ``prepare_join``; a refusal is one line, not a traceback."""
    import ray

    prepare_join(address)
    try:
        ray.init(address=address, job_config=job_config(), **init_options)
    except (ConnectionError, RuntimeError, ray.exceptions.RayError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot join the Ray cluster at {address}: {first}") from None


# The dashboard's Jobs view names a job by its metadata's ``job_name`` (its "Name" column;
# a job without one shows only a cut entrypoint path). A driver is one job for its life, so
# the label belongs to the process: the command line sets it before it connects.
_job_label: dict[str, str] = {}


def name_job(chain: str, run_id: str | None = None, batch_id: str | None = None) -> None:
    """Name the Ray job this process is about to start after its chain and run or batch."""
    _job_label.clear()
    _job_label.update(chainray_chain=chain)
    if batch_id:
        _job_label.update(chainray_batch_id=batch_id, job_name=f"chainray {chain} {batch_id}")
    elif run_id:
        _job_label.update(chainray_run_id=run_id, job_name=f"chainray {chain} {run_id}")
    else:
        _job_label["job_name"] = f"chainray {chain}"


def job_metadata() -> dict[str, str]:
    """The metadata the next ``ray.init`` of this process gives its job."""
    return {"job_name": "chainray", **_job_label}


def job_config():
    """A ``JobConfig`` carrying ``job_metadata()``."""
    from ray.job_config import JobConfig

    return JobConfig(metadata=job_metadata())


def connect_ray(address: str | None, dashboard: bool = True,
                say: Callable[[str], object] = lambda _: None) -> None:
    """Join ``address`` (or RAY_ADDRESS), else start a local Ray instance (``say``: told
    first, as that takes seconds)."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False, "namespace": "chainray"}
    if address:
        join(address, **quiet)  # token authentication found as Ray finds it; one-line errors
    else:
        say("starting a local Ray (a few seconds; `chainray up` keeps one warm)")
        ray.init(address="local", include_dashboard=dashboard, job_config=job_config(), **quiet)
        atexit.register(leave_ray)  # before Ray's own exit hook, which is slower


def leave_ray() -> None:
    """Disconnect, and stop a Ray this process started. Its autoscaler monitor is stopped
    first, by its PID: it outlives SIGTERM for the whole second ``ray.shutdown`` gives it
    before killing it, a second of every cold run. The rest stops as Ray stops it. On a Ray
    this process joined, the actors kept for a next session end gracefully first."""
    import ray

    from chainray.actors.standby import drop_standby, end_standby

    node = getattr(ray._private.worker, "_global_node", None)  # set only for a Ray we started
    if node is None or not node.is_head():
        end_standby()  # they would outlive this driver's job only as dead actors
    else:
        drop_standby()  # the Ray that ray.shutdown stops below ends them
        for info in node.all_processes.get("monitor", ()):
            if info.process.poll() is None:
                info.process.kill()
                try:
                    info.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass  # ray.shutdown tries again
    ray.shutdown()
