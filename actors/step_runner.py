"""Steps on Ray: llm steps as calls on async step-runner actors, python steps as remote tasks.

An LLM call waits on the network, so a blocking task per call would hold a whole worker
process; one async actor keeps hundreds of calls in flight (shared/notes/ray-facts.md §1.4).
"""

from __future__ import annotations

import ray

from chainray.actors.rate_limiter import RemoteLimiter
from chainray.exec.llm import Endpoint, make_client
from chainray.exec.step_exec import StepRequest, execute_llm_step, execute_python_step
from chainray.results import StepResult

__all__ = ["StepRunner", "run_python_step"]


def _where() -> tuple[str, str]:
    context = ray.get_runtime_context()
    return context.get_node_id(), context.get_task_id()


@ray.remote(num_cpus=0, max_concurrency=1000, max_restarts=3)
class StepRunner:
    """Runs llm steps; one ``openai.AsyncOpenAI`` client (its connection pool) per actor."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.client = make_client(endpoint)

    async def run_step(self, request: StepRequest, limiter: ray.actor.ActorHandle,
                       *upstream: StepResult) -> StepResult:
        return await execute_llm_step(request, upstream, self.client, RemoteLimiter(limiter),
                                      self.endpoint, _where)

    async def pid(self) -> int:
        import os

        return os.getpid()


@ray.remote(num_cpus=0.25, max_retries=2)
def run_python_step(request: StepRequest, *upstream: StepResult) -> StepResult:
    return execute_python_step(request, upstream, _where)
