"""Shared helpers for tests that run chains on Ray against the session's simulator."""

from __future__ import annotations

import uuid

from chainray.api.config import SessionConfig
from chainray.api.session import Driver
from chainray.runner.jobs import RunJob
from chainray.spec.chain import Chain, chain_from_dict


class TestDriver(Driver):
    """A Driver whose limiters are its own (a namespace per test): they end with it, instead
    of idling as detached actors to the end of the test session."""

    def close(self) -> None:
        import ray

        limiters = list(self.limiters.values())
        super().close()
        for handle in limiters if ray.is_initialized() else ():
            ray.kill(handle, no_restart=True)


def session_for(sim, **overrides) -> Driver:
    """A Session on the test simulator with its own limiter namespace (a fresh RateLimiter)."""
    config = dict(base_url=sim.base_url, env={"OPENAI_API_KEY": "sk-test"}, progress=False,
                  limiter_namespace=f"test-{uuid.uuid4().hex[:8]}", timeout=10.0,
                  rpm=500, tpm=200_000, backoff_s=0.05)
    config.update(overrides)
    return TestDriver(SessionConfig(**config))


def job(chain: Chain, strategy: str = "hybrid", **fields) -> RunJob:
    return RunJob(run_id=uuid.uuid4().hex[:12], chain=chain, strategy=strategy,
                  inputs=dict(chain.inputs), **fields)


def fan_chain(n: int, max_tokens: int = 20, name: str = "fan", **defaults) -> Chain:
    """n independent steps and a final step gathering them (``defaults``: more model
    settings, e.g. ``temperature=0`` for the simulator's same answer to the same prompt)."""
    steps = [{"id": f"s{i}", "prompt": f"angle {i} of {{topic}}"} for i in range(n)]
    steps.append({"id": "final", "after": [f"s{i}" for i in range(n)],
                  "prompt": "combine " + " ".join(f"{{s{i}:.50}}" for i in range(n))})
    return chain_from_dict({"name": name, "inputs": {"topic": "tea"},
                            "defaults": {"max_tokens": max_tokens, **defaults},
                            "steps": steps})


def process_running(pid: int) -> bool:
    """Alive and not a zombie (a process that has stopped but nobody has reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False
