"""Structured output in the spec: a step's ``schema`` (a JSON Schema, or a pydantic model from
Python) and the ``{step.field}`` template references it makes possible.

    - id: classify
      schema: {type: object, properties: {intent: {enum: [billing, bug, other]}},
               required: [intent]}
    - id: route
      after: [classify]
      prompt: "The intent is {classify.intent}"
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

__all__ = ["normalize_schema", "field_path_problem", "lookup_field"]


def normalize_schema(value: Any) -> Any:
    """A pydantic model class becomes its JSON Schema; a mapping is kept as it is."""
    if isinstance(value, type) and issubclass(value, BaseModel):
        return value.model_json_schema()
    return value


def _resolve(schema: dict, root: dict) -> dict:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return target if isinstance(target, dict) else {}
    return schema


def field_path_problem(schema: dict | None, step_id: str, path: list[str]) -> str | None:
    """Why ``{step_id.a.b}`` cannot be filled from ``schema``'s replies, or None if it can."""
    if schema is None:
        return (f"{{{step_id}.{'.'.join(path)}}} names a field, but step {step_id!r} has no "
                "schema; give it one, or use {" + step_id + "}")
    node, walked = _resolve(schema, schema), [step_id]
    for name in path:
        properties = node.get("properties")
        if not isinstance(properties, dict) or name not in properties:
            known = ", ".join(properties) if isinstance(properties, dict) else "none"
            return (f"{{{'.'.join([*walked, name])}}}: the schema of "
                    f"{'.'.join(walked)} has no property {name!r} (properties: {known})")
        node, walked = _resolve(properties[name], schema), [*walked, name]
    return None


def lookup_field(text: str, path: list[str]) -> str:
    """The field at ``path`` in a JSON reply, as text; the reply itself if it is not JSON
    (for example the note a strategy leaves where an upstream output is withheld)."""
    try:
        value: Any = json.loads(text)
    except ValueError:
        return text
    for name in path:
        if not isinstance(value, dict) or name not in value:
            return ""
        value = value[name]
    return value if isinstance(value, str) else json.dumps(value)
