"""Python steps that ship with chainray, for use as ``kind: python`` steps in chain files.

    - id: gather
      kind: python
      call: chainray.builtin_steps:join
      after: [a, b, c]
"""

from __future__ import annotations

__all__ = ["join"]


def join(inputs: dict[str, str], upstream: dict[str, str]) -> str:
    """Concatenate the outputs the step sees, each under its step id (no LLM call, no cost)."""
    return "\n\n".join(f"## {step_id}\n{text}" for step_id, text in upstream.items())
