"""Prefix warm-up: of the steps ready together whose requests share a cacheable prefix, send one
first and the rest when its first token arrives, so that they read the prefix from the
provider's prompt cache instead of all missing it at once.

A provider's cache entry is usable once the request that wrote it has begun to answer; four
reviews of one 3,500-token codebase sent at once pay for the codebase four times, sent one and
then three they pay for it about 1.75 times (at gpt-4.1's 75 % discount) for about one time to
first token more. The rule, for each group of ready steps with a shared prefix of at least the
endpoint's minimum (``chainray.plan.prefix``):

- the leader (the first of the group in dispatch order) starts at once;
- the followers start when the leader's first token arrives (a streamed reply), when the
  leader finishes (not streamed, failed, answered from the response cache), or after
  ``wait_s`` seconds without either, whichever is first. Results do not change, only when the
  followers start (and so their cached tokens and cost).

    warmup = PrefixWarmup(prompt_of)               # prompt_of(step, results) -> (model, messages)
    now, held = warmup.split(ready, results)       # held: leader -> its followers
    ...                                            # start ``now``; then, in any order:
    warmup.first_token(leader)                     # the leader's first token arrived
    await warmup.wait(leader)                      # returns once the followers may start
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence

from chainray.plan.prefix import MIN_PREFIX_TOKENS, prefix_groups, serialize
from chainray.results import StepResult

__all__ = ["PrefixWarmup", "PromptOf", "WAIT_S"]

# A leader with no first token after this long has stalled (a long permit wait, a slow
# endpoint): its followers then go without the cache rather than wait on.
WAIT_S = 20.0

PromptOf = Callable[[str, Mapping[str, StepResult]], tuple[str, Sequence[Mapping]] | None]

log = logging.getLogger("chainray.dispatch")


class PrefixWarmup:
    """One run's warm-up: which ready steps wait for which leader, and when they may go.

    ``prompt_of(step_id, results)`` renders a ready step's request (its model and messages)
    from the finished steps' results, or says None for a step that sends none (a python step,
    a resumed one). This object is the only owner of the leaders' "first token" state.
    """

    def __init__(self, prompt_of: PromptOf, min_tokens: int = MIN_PREFIX_TOKENS,
                 wait_s: float = WAIT_S) -> None:
        self.prompt_of = prompt_of
        self.min_tokens = min_tokens
        self.wait_s = wait_s
        self.first: dict[str, asyncio.Event] = {}  # leader -> set at its first token

    def split(self, ready: Sequence[str], results: Mapping[str, StepResult]
              ) -> tuple[list[str], dict[str, list[str]]]:
        """The steps of ``ready`` to start now, and the followers each leader holds back."""
        prompts = {}
        for step_id in ready:
            found = self.prompt_of(step_id, results)
            if found is not None:
                prompts[step_id] = (found[0], serialize(found[1]))
        held = {group[0]: group[1:] for group in prefix_groups(prompts, self.min_tokens)}
        waiting = {step_id for followers in held.values() for step_id in followers}
        for leader in held:
            self.first.setdefault(leader, asyncio.Event())
        return [step_id for step_id in ready if step_id not in waiting], held

    def first_token(self, step_id: str) -> None:
        """The first token of ``step_id``'s reply arrived (ignored for a step that leads
        nothing)."""
        if (event := self.first.get(step_id)) is not None:
            event.set()

    async def wait(self, leader: str) -> None:
        """Return once ``leader``'s first token has arrived, or after ``wait_s`` seconds
        (the caller releases the followers on the leader's finish as well)."""
        try:
            await asyncio.wait_for(self.first[leader].wait(), self.wait_s)
        except asyncio.TimeoutError:
            log.debug("prefix warm-up: no first token from %s in %.0f s; releasing the "
                      "steps that wait for it", leader, self.wait_s)
