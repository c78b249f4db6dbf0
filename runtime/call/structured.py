"""Structured output on the call path: ask for a JSON Schema and check that the reply obeys it.

The request uses OpenAI's ``response_format: {type: json_schema}``. A reply that is not JSON, or
does not follow the schema, is sent back once with the validation error; a second bad reply
fails the step with that error.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema

__all__ = ["response_format", "schema_problem", "correction_message"]


def response_format(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name[:64], "schema": schema}}


def schema_problem(text: str, schema: dict[str, Any]) -> str | None:
    """Why ``text`` is not a reply that follows ``schema``; None when it is."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        return f"the reply is not JSON ({exc.msg} at character {exc.pos})"
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(schema).iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(part) for part in error.absolute_path) or "the top level"
    return f"the reply does not follow the schema at {where}: {error.message[:200]}"


def correction_message(problem: str) -> dict[str, str]:
    """The message that asks the model, once, for a reply that follows the schema."""
    return {"role": "user", "content": f"Your previous reply was rejected: {problem}. Answer "
            "again with JSON only, following the schema exactly."}
