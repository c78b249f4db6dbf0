"""The chain file's JSON Schema, from the pydantic models, for editors that validate YAML.

    # yaml-language-server: $schema=./chain.schema.json
"""

from __future__ import annotations

from typing import Any

from chainray.spec.chain import Chain

__all__ = ["chain_schema", "SCHEMA_DIALECT"]

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def chain_schema() -> dict[str, Any]:
    """The JSON Schema a chain file (YAML or JSON) must satisfy, as a dict."""
    schema = Chain.model_json_schema(mode="validation")
    schema["properties"].pop("source", None)  # set by the loader, never written in a file
    return {"$schema": SCHEMA_DIALECT, "title": "chainray chain file",
            "description": "A named graph of LLM and Python steps: chainray run FILE",
            **{k: v for k, v in schema.items() if k not in ("title", "description")}}
