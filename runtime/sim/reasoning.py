"""OpenAI's reasoning models, as the simulator answers them: which request parameters they
reject, with the exact 400 bodies the real API sends.

The o-series and gpt-5 families refuse ``max_tokens`` ("Use 'max_completion_tokens'
instead") and any sampling setting other than the default, one parameter per answer, in the
order the API checks them.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["REASONING_MODELS", "is_reasoning_model", "reject_parameter"]

REASONING_MODELS = r"^(o\d|gpt-5)"  # o1, o3, o3-mini, o4-mini, gpt-5, gpt-5-mini, ...
_DEFAULTS_ONLY = {"temperature": 1, "top_p": 1, "presence_penalty": 0, "frequency_penalty": 0}


def is_reasoning_model(model: str, pattern: str = REASONING_MODELS) -> bool:
    return re.match(pattern, model) is not None


def reject_parameter(body: dict[str, Any]) -> tuple[str, str, str] | None:
    """(message, param, code) of the 400 a reasoning model gives this body, or None."""
    if body.get("max_tokens") is not None:
        return ("Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                "'max_completion_tokens' instead.", "max_tokens", "unsupported_parameter")
    for param, default in _DEFAULTS_ONLY.items():
        value = body.get(param)
        if value is not None and value != default:
            return (f"Unsupported value: '{param}' does not support {value} with this model. "
                    f"Only the default ({default}) value is supported.", param,
                    "unsupported_value")
    return None
