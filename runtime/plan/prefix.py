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

from chainray.tokens import estimate_text_tokens

__all__ = ["MIN_PREFIX_TOKENS", "BLOCK_TOKENS", "serialize", "shared_tokens",
           "cacheable_tokens", "prefix_groups"]

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
    per model, so only steps of one model group. A step joins the first group whose leader
    shares at least ``min_tokens`` of prefix with it."""
    groups: list[list[str]] = []
    for step, (model, text) in prompts.items():
        for group in groups:
            lead_model, lead_text = prompts[group[0]]
            if lead_model == model and shared_tokens(lead_text, text) >= min_tokens:
                group.append(step)
                break
        else:
            groups.append([step])
    return [group for group in groups if len(group) > 1]
