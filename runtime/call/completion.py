"""Read a chat completion body ourselves, trusting nothing the server sent.

The openai client builds its models without validation, so an HTML page, ``choices: []`` or a
missing ``usage`` would pass through as odd objects and fail later, far from the cause. Here
the body is parsed once: what cannot be used raises ``EndpointError`` (retryable when a new
attempt may cure it), and what is merely incomplete is marked (estimated usage, truncation).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from chainray.errors import EndpointError
from chainray.text import one_line
from chainray.tokens import estimate_prompt_tokens, estimate_text_tokens

__all__ = ["Completion", "read_completion", "cached_of"]


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    usage_estimated: bool = False
    truncated: bool = False
    cached_tokens: int = 0  # of prompt_tokens, read from the provider's prompt cache
    # As the server named them (for traces; None when it did not say)
    model: str | None = None
    response_id: str | None = None
    finish_reason: str | None = None


def _malformed(why: str) -> EndpointError:
    return EndpointError(f"malformed reply: {why}", status=200, code="malformed_reply",
                         retryable=True)


def _count(usage: Mapping, key: str) -> int | None:
    value = usage.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 \
        else None


def cached_of(prompt_tokens: int, cached: object) -> int:
    """The cached part of a prompt as the server reported it (``usage.prompt_tokens_details
    .cached_tokens``); 0 when absent or unusable, never more than the prompt."""
    if not isinstance(cached, int) or isinstance(cached, bool) or cached < 0:
        return 0
    return min(cached, prompt_tokens)


def _text_of(message: Mapping) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if content is not None:
        raise _malformed(f"message content is {type(content).__name__}, not text")
    if isinstance(message.get("refusal"), str):
        return message["refusal"]
    if message.get("tool_calls"):
        return json.dumps(message["tool_calls"], ensure_ascii=False)
    # The model answered nothing; a new attempt costs the same and is not likely to differ.
    raise EndpointError("the reply has no content, refusal or tool call", status=200,
                        code="empty_content")


def read_completion(body: bytes, messages: Sequence[Mapping[str, object]]) -> Completion:
    """The text, token counts and flags of a chat completion body, or an ``EndpointError``."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeError):
        start = one_line(body[:80].decode("utf-8", "replace"), 80)
        raise _malformed(f"not JSON (starts {start!r})") from None
    if not isinstance(data, dict):
        raise _malformed(f"expected a JSON object, got {type(data).__name__}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise _malformed("no choices")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise _malformed("the first choice has no message")
    text = _text_of(message)
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    prompt, completion = _count(usage, "prompt_tokens"), _count(usage, "completion_tokens")
    estimated = prompt is None or completion is None
    if prompt is None:
        prompt = estimate_prompt_tokens(messages)
    if completion is None:
        completion = estimate_text_tokens(text) if text else 0
    details = usage.get("prompt_tokens_details")
    cached = cached_of(prompt, details.get("cached_tokens")) \
        if isinstance(details, dict) and not estimated else 0
    finish = choice.get("finish_reason")
    return Completion(text, prompt, completion, estimated, finish == "length", cached,
                      _text(data.get("model")), _text(data.get("id")), _text(finish))


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
