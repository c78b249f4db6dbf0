"""Replies that conform to a requested JSON Schema (``response_format: json_schema``).

The simulator has no model, so it builds the smallest document the schema admits, filled
from the reply's words: the same prompt and schema give the same JSON at temperature 0 (a
sampled reply's words, and so its JSON's length, vary a little, as a model's do).
"""

from __future__ import annotations

import json
import random
from typing import Any

__all__ = ["schema_of", "conforming_json"]


def schema_of(response_format: Any) -> dict | None:
    """The JSON Schema a request's ``response_format`` asks for; ``{}`` for json_object."""
    if not isinstance(response_format, dict):
        return None
    if response_format.get("type") == "json_object":
        return {}
    if response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return schema if isinstance(schema, dict) else {}
    return None


def conforming_json(schema: dict, prompt: str, words: list[str]) -> str:
    rng = random.Random(f"{prompt}|{json.dumps(schema, sort_keys=True)}")
    return json.dumps(_value(schema, schema, rng, words, depth=0))


def _value(schema: dict, root: dict, rng: random.Random, words: list[str], depth: int) -> Any:
    if "$ref" in schema and str(schema["$ref"]).startswith("#/"):
        target: Any = root
        for part in str(schema["$ref"])[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return _value(target, root, rng, words, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return rng.choice(schema["enum"])
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return _value(schema[key][0], root, rng, words, depth + 1)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties = schema.get("properties") or {}
        if not properties and depth == 0:
            return {"answer": " ".join(rng.choice(words) for _ in range(8))}
        return {name: _value(sub, root, rng, words, depth + 1)
                for name, sub in properties.items()}
    if kind == "array":
        count = max(int(schema.get("minItems", 1)), 1)
        return [_value(schema.get("items") or {}, root, rng, words, depth + 1)
                for _ in range(min(count, 3))]
    if kind == "integer":
        return rng.randint(int(schema.get("minimum", 0)), int(schema.get("maximum", 100)))
    if kind == "number":
        return round(rng.uniform(float(schema.get("minimum", 0)),
                                 float(schema.get("maximum", 1))), 3)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    length = max(int(schema.get("minLength", 1)), 1)
    text = " ".join(rng.choice(words) for _ in range(rng.randint(3, 12)))
    return text if len(text) >= length else text + "x" * (length - len(text))
