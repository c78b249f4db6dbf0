"""Shared prompt prefixes: which requests a provider's automatic prompt cache can serve.

Providers cache the serialized request from its first byte: OpenAI reuses a prefix of at least
1,024 tokens, in 128-token steps, and only an exact one (its "Prompt caching" guide); a cache
entry is usable once the request that wrote it has begun to answer (Anthropic's prompt-caching
docs), so requests sent together all miss. Here a request is its messages serialized in order
(role, then text), and a prefix's tokens are chainray's offline estimate (``chainray.tokens``).

    >>> a = [{"role": "user", "content": "x" * 5000 + " review security"}]
    >>> b = [{"role": "user", "content": "x" * 5000 + " review style"}]
    >>> prefix_groups({"security": ("m", serialize(a)), "style": ("m", serialize(b))}, 1024)
    [['security', 'style']]
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from chainray.plan.schedule import Schedule
from chainray.spec.chain import Chain
from chainray.spec.prompts import render_prompt
from chainray.spec.templates import fill_template, template_fields
from chainray.tokens import estimate_text_tokens

__all__ = ["MIN_PREFIX_TOKENS", "BLOCK_TOKENS", "serialize", "shared_tokens",
           "cacheable_tokens", "prefix_groups", "siblings", "cached_prefixes", "prefix_hints"]

MIN_PREFIX_TOKENS = 1024  # OpenAI's (and most Claude models') smallest cached prefix
BLOCK_TOKENS = 128  # OpenAI's cache hits grow in steps of this many tokens


def serialize(messages: Iterable[Mapping[str, object]]) -> str:
    """A request's messages as the one text a provider's cache compares, in order."""
    return "".join(f"<|{m.get('role', '')}|>{m.get('content') or ''}<|end|>"
                   for m in messages)


def shared_tokens(a: str, b: str) -> int:
    """Tokens of the longest common prefix of two serialized requests (0 when none)."""
    chars = len(os.path.commonprefix([a, b]))
    return estimate_text_tokens(a[:chars]) if chars else 0


def cacheable_tokens(shared: int, min_tokens: int = MIN_PREFIX_TOKENS) -> int:
    """The cached tokens a shared prefix of ``shared`` tokens can yield: none below
    ``min_tokens``, else the prefix rounded down to whole 128-token blocks."""
    if shared < min_tokens:
        return 0
    return max(min_tokens, shared // BLOCK_TOKENS * BLOCK_TOKENS)


def prefix_groups(prompts: Mapping[str, tuple[str, str]],
                  min_tokens: int = MIN_PREFIX_TOKENS) -> list[list[str]]:
    """Steps whose requests share a cacheable prefix, as groups of two or more, the first
    step of each group (in ``prompts``' order) its leader.

    ``prompts`` maps a step to its model and serialized request (``serialize``); a cache is
    per model, so only steps of one model group. Two requests share ``min_tokens`` exactly
    when their first ``min_tokens`` tokens' characters agree, so that opening is the key
    (linear in the steps, for chains of thousands)."""
    opening = 4 * min_tokens - 3  # the fewest characters that estimate to min_tokens
    groups: dict[tuple[str, str], list[str]] = {}
    for step, (model, text) in prompts.items():
        if len(text) >= opening:
            groups.setdefault((model, text[:opening]), []).append(step)
    return [group for group in groups.values() if len(group) > 1]


# --- before a run: which steps' requests the cache serves, upstream lengths predicted ----

def _filler(name: str, chars: float) -> str:
    """Stand-in text for an upstream output of ``chars`` characters: the same for every step
    that sees the same output, different for different outputs."""
    unit = f"\x00{name}\x00"
    count = max(0, round(chars))
    return (unit * (count // len(unit) + 1))[:count]


def predicted_request(chain: Chain, step_id: str, out_chars: Mapping[str, float]) -> str:
    """The start of ``step_id``'s request as it will be sent: its system message and its
    template with the inputs and the outputs it names (each at its predicted length). The
    "previously covered" block after it is left out: the template's prefix is what steps
    share, and leaving it out keeps a long sequential chain linear."""
    step = chain.by_id[step_id]
    named = {name.split(".")[0] for name, _ in template_fields(step.prompt or "")}
    seen = {s: _filler(s, out_chars.get(s, 0.0)) for s in named if s in chain.by_id}
    prompt = render_prompt(step.prompt or "", chain.inputs, seen, step.after)
    system = chain.settings_for(step).system
    values = {**{k: v or "" for k, v in chain.inputs.items()}, **seen}
    messages = [{"role": "system", "content": fill_template(system, values)}] if system else []
    return serialize([*messages, {"role": "user", "content": prompt}])


def cached_prefixes(chain: Chain, schedule: Schedule, out_chars: Mapping[str, float],
                    min_tokens: int = MIN_PREFIX_TOKENS, warmup: bool = True,
                    prompt_chars: Mapping[str, float] | None = None
                    ) -> tuple[dict[str, int], dict[str, str]]:
    """Which llm steps read a prefix from the provider's cache, and how many tokens of it;
    and, with ``warmup``, the followers that wait for a leader (follower -> leader).

    A step reads the prefix it shares with a step it (transitively) waits for, whose reply
    has begun before it starts; with warm-up, also the one its leader shares with it among the
    steps ready with it (the same dependencies). ``prompt_chars``: each llm step's predicted
    prompt length, if known; a step too short to share ``min_tokens`` is not rendered."""
    order = [step_id for phase in schedule.phases for step_id in phase]  # topological
    requests, ancestors, bits = {}, {}, {}
    by_key: dict[tuple[str, str], list[str]] = {}
    opening = 4 * min_tokens - 3  # requests that share min_tokens agree on this many chars
    for i, step_id in enumerate(order):
        bits[step_id], ancestors[step_id] = 1 << i, 0
        for dep in schedule.plan[step_id].depends_on:
            ancestors[step_id] |= ancestors[dep] | bits[dep]
        step = chain.by_id[step_id]
        short = prompt_chars is not None and prompt_chars.get(step_id, 0.0) < opening - 64
        if step.kind == "llm" and not short:  # (64: the system message's framing, at most)
            requests[step_id] = text = predicted_request(chain, step_id, out_chars)
            if len(text) >= opening:
                model = chain.model_for(step)
                by_key.setdefault((model, text[:opening]), []).append(step_id)
    writers, followers = {}, {}
    for ids in by_key.values():
        for step_id in ids:
            earlier = [s for s in ids if ancestors[step_id] & bits[s]]
            deps = set(schedule.plan[step_id].depends_on)
            lead = next(s for s in ids if set(schedule.plan[s].depends_on) == deps)
            if earlier:  # its reply began before this step starts: warm already
                writers[step_id] = earlier[-1]
            elif warmup and lead != step_id:
                writers[step_id] = followers[step_id] = lead
    cached = {s: cacheable_tokens(shared_tokens(requests[w], requests[s]), min_tokens)
              for s, w in writers.items()}
    return cached, followers


def siblings(chain: Chain, schedule: Schedule) -> list[list[str]]:
    """llm steps that become ready together (the same dependencies) and call one model."""
    sets: dict[tuple, list[str]] = {}
    for plan in schedule.steps:
        step = chain.by_id[plan.id]
        if step.kind == "llm":
            model = chain.model_for(step)
            sets.setdefault((frozenset(plan.depends_on), model), []).append(plan.id)
    return [ids for ids in sets.values() if len(ids) > 1]


def _names(ids: list[str]) -> str:
    return ids[0] if len(ids) == 1 else ", ".join(ids[:-1]) + " and " + ids[-1]


def prefix_hints(chain: Chain, schedule: Schedule,
                 min_tokens: int = MIN_PREFIX_TOKENS) -> list[str]:
    """Siblings that share a long input (``min_tokens`` or more) that is not at the start of
    their prompts, so no prompt cache can serve it: move it first."""
    long = {k for k, v in chain.inputs.items() if len(v or "") / 4 >= min_tokens}
    shared: list[tuple[str, list[str]]] = []  # (input, the siblings that name it)
    for ids in siblings(chain, schedule) if long else ():
        users: dict[str, list[str]] = {}
        for step_id in ids:
            for name, _ in template_fields(chain.by_id[step_id].prompt or ""):
                root = name.split(".")[0]
                if root in long and step_id not in users.setdefault(root, []):
                    users[root].append(step_id)
        shared.extend((root, steps) for root, steps in users.items() if len(steps) > 1)
    if not shared:
        return []
    cached, _ = cached_prefixes(chain, schedule, {}, min_tokens)
    return [f"put {{{root}}} first in {_names(steps)} to share a cached prefix "
            f"(~{len(chain.inputs[root] or '') / 4:,.0f} tokens that each now sends uncached)"
            for root, steps in shared if sum(s in cached for s in steps) < len(steps) - 1]
