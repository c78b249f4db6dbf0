"""What each endpoint's models accept, remembered cluster-wide in one small named actor, so a
parameter a model rejects is rejected once, not once per step, run or driver.

Step runners keep a copy per endpoint and model and ask the actor only the first time they
call that model; an adaptation one runner learns is pushed to the actor at once.
"""

from __future__ import annotations

import ray

from chainray.call.adaptations import Adaptation, AdaptationBook

__all__ = ["Adaptations", "AdaptationsRef", "RemoteAdaptations", "get_adaptations"]


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1, enable_task_events=False)
class Adaptations:
    def __init__(self) -> None:
        self.book = AdaptationBook()

    def __repr__(self) -> str:
        learned = sum(len(params) for params in self.book.learned.values())
        return f"Adaptations({learned} learned for {len(self.book.learned)} models)"

    def known(self, key: str) -> dict[str, Adaptation]:
        return self.book.known(key)

    def learn(self, key: str, adaptation: Adaptation, note: str) -> bool:
        return self.book.learn(key, adaptation, note)

    def notes_since(self, index: int) -> list[str]:
        return self.book.notes_since(index)


NAME = "chainray-adaptations"


def get_adaptations(namespace: str) -> ray.actor.ActorHandle:
    return Adaptations.options(name=NAME, namespace=namespace, get_if_exists=True,
                               lifetime="detached").remote()


class AdaptationsRef:
    """The cluster-wide actor, by name. It starts with the first adaptation anyone learns: a
    run whose models accept what they are sent starts no process for it."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.handle: ray.actor.ActorHandle | None = None  # once found or started

    def find(self) -> ray.actor.ActorHandle | None:
        if self.handle is None:
            try:
                self.handle = ray.get_actor(NAME, namespace=self.namespace)
            except ValueError:  # nothing learned yet, anywhere in the cluster
                pass
        return self.handle

    def start(self) -> ray.actor.ActorHandle:
        self.handle = self.handle or get_adaptations(self.namespace)
        return self.handle


class RemoteAdaptations:
    """The actor as the call path sees it, with a copy per endpoint and model."""

    def __init__(self, ref: AdaptationsRef) -> None:
        self.ref = ref
        self.copies: dict[str, dict[str, Adaptation]] = {}

    async def known(self, key: str) -> dict[str, Adaptation]:
        if key not in self.copies:
            handle = self.ref.find()
            self.copies[key] = {} if handle is None else await handle.known.remote(key)
        return self.copies[key]

    async def learn(self, key: str, adaptation: Adaptation, note: str) -> None:
        self.copies.setdefault(key, {})[adaptation.param] = adaptation
        await self.ref.start().learn.remote(key, adaptation, note)
