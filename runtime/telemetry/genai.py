"""Attributes of the OpenTelemetry GenAI semantic conventions (status: Development) for one
chat request, as plain dicts: no OpenTelemetry import, built only while a span is open."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["request_attributes", "response_attributes", "input_messages", "output_messages"]


def request_attributes(model: str, max_tokens: int | None, temperature: float | None,
                       base_url: str, azure: bool = False) -> dict[str, Any]:
    """What an attempt span says about the request (``gen_ai.*``, ``server.*``)."""
    parts = urllib.parse.urlsplit(base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return {"gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "azure.ai.openai" if azure else "openai",
            "gen_ai.request.model": model, "gen_ai.request.max_tokens": max_tokens,
            "gen_ai.request.temperature": temperature,
            "server.address": parts.hostname, "server.port": port}


def response_attributes(model: str | None, response_id: str | None,
                        finish_reason: str | None, input_tokens: int, output_tokens: int,
                        cached_tokens: int) -> dict[str, Any]:
    """What an attempt span says about the answer; the cached tokens are part of the input
    tokens, as the convention (and OpenAI's usage) counts them."""
    return {"gen_ai.response.model": model, "gen_ai.response.id": response_id,
            "gen_ai.response.finish_reasons": (finish_reason,) if finish_reason else None,
            "gen_ai.usage.input_tokens": input_tokens,
            "gen_ai.usage.output_tokens": output_tokens,
            "gen_ai.usage.cache_read.input_tokens": cached_tokens}


def input_messages(messages: Sequence[Mapping[str, Any]]) -> str:
    """``gen_ai.input.messages``: only when the user asked for message content."""
    return json.dumps([{"role": m.get("role"), "parts": [
        {"type": "text", "content": m.get("content")}]} for m in messages], ensure_ascii=False)


def output_messages(text: str, finish_reason: str | None) -> str:
    """``gen_ai.output.messages``: only when the user asked for message content."""
    return json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": text}],
                        "finish_reason": finish_reason or "stop"}], ensure_ascii=False)
