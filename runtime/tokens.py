"""Offline token estimate: about four characters a token, plus OpenAI's per-message overhead.

tiktoken downloads its BPE files on first use, which fails offline; for admission control an
estimate that the RateLimiter reconciles with the real ``usage`` afterwards is enough (the
per-message overhead follows OpenAI's cookbook, "How to count tokens with tiktoken"). The
simulator counts prompt tokens the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["estimate_text_tokens", "estimate_prompt_tokens"]


def estimate_text_tokens(text: str) -> int:
    return max(1, (len(text) + 3) // 4)


def estimate_prompt_tokens(messages: Iterable[Mapping[str, object]]) -> int:
    """Tokens of a chat request's messages: text/4 + 3 a message + 3 for the reply's priming."""
    total = 3
    for message in messages:
        content = message.get("content") or ""
        if not isinstance(content, str):
            content = " ".join(str(part.get("text", "")) for part in content  # type: ignore
                               if isinstance(part, Mapping))
        total += 3 + estimate_text_tokens(content)
    return total
