"""What a model accepts: request parameters adapted to the model, learned from its 400s.

OpenAI's reasoning models (o1, o3, o4-mini, gpt-5, ...) refuse ``max_tokens`` ("Use
'max_completion_tokens' instead") and sampling settings other than the default. Known families
are adapted before the first request; for any other model a 400 ``unsupported_parameter`` or
``unsupported_value`` teaches an adaptation (rename or drop the parameter) that is remembered
per endpoint and model, so that a parameter is rejected at most once.

    >>> adapt({"model": "o4-mini", "max_tokens": 400, "temperature": 0.3},
    ...       known_adaptations("o4-mini"))
    {'model': 'o4-mini', 'max_completion_tokens': 400}
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["Adaptation", "AdaptationBook", "adaptation_key", "known_adaptations", "adapt",
           "learn_adaptation", "describe"]

REASONING_FAMILIES = re.compile(r"^(o\d|gpt-5)")
_SAMPLING = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
_QUOTED = re.compile(r"'([A-Za-z_][\w.]*)'")


def adaptation_key(base_url: str, model: str) -> str:
    """Where what a model accepts is remembered: per endpoint (hashed, never shown) and
    model."""
    digest = hashlib.sha256(base_url.rstrip("/").encode()).hexdigest()[:12]
    return f"{digest}|{model}"


class Adaptation(BaseModel):
    """Rename a parameter (``to``) or drop it (``to`` is None) for one endpoint and model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    param: str
    action: Literal["rename", "drop"]
    to: str | None = None


def known_adaptations(model: str) -> dict[str, Adaptation]:
    """What a model's family is known to need before anything is sent."""
    if not REASONING_FAMILIES.match(model):
        return {}
    found = {"max_tokens": Adaptation(param="max_tokens", action="rename",
                                      to="max_completion_tokens")}
    found.update({p: Adaptation(param=p, action="drop") for p in _SAMPLING})
    return found


def adapt(kwargs: dict[str, Any], adaptations: dict[str, Adaptation]) -> dict[str, Any]:
    """The request's keyword arguments with every adaptation applied."""
    adapted = dict(kwargs)
    for param, adaptation in adaptations.items():
        if param not in adapted:
            continue
        value = adapted.pop(param)
        if adaptation.action == "rename" and adaptation.to:
            adapted[adaptation.to] = value
    return adapted


def learn_adaptation(status: int | None, code: str | None, param: str | None,
                     message: str, sent: dict[str, Any]) -> Adaptation | None:
    """The adaptation a 400 asks for, or None when the 400 is about something else."""
    if status != 400 or code not in ("unsupported_parameter", "unsupported_value"):
        return None
    quoted = _QUOTED.findall(message or "")
    name = param or (quoted[0] if quoted else None)
    if name not in sent:
        return None
    if code == "unsupported_parameter":
        replacement = next((q for q in quoted[1:] if q != name), None)
        if replacement:
            return Adaptation(param=name, action="rename", to=replacement)
    return Adaptation(param=name, action="drop")


def describe(model: str, adaptation: Adaptation, value: Any) -> str:
    """One line for the user, e.g. 'o4-mini: temperature 0.3 not supported, using the
    default'."""
    if adaptation.action == "rename":
        return f"{model}: {adaptation.param} not supported, sending {adaptation.to} instead"
    return f"{model}: {adaptation.param} {value} not supported, using the default"


class AdaptationBook:
    """Adaptations learned per endpoint and model, with one note per adaptation for the user.

    The logic of the cluster-wide ``chainray.actors.adaptations`` actor; free of Ray.
    """

    def __init__(self) -> None:
        self.learned: dict[str, dict[str, Adaptation]] = {}
        self.notes: list[str] = []

    def known(self, key: str) -> dict[str, Adaptation]:
        return dict(self.learned.get(key, {}))

    def learn(self, key: str, adaptation: Adaptation, note: str) -> bool:
        """Record an adaptation; False when it was known already (no second note)."""
        book = self.learned.setdefault(key, {})
        if adaptation.param in book:
            return False
        book[adaptation.param] = adaptation
        self.notes.append(note)
        return True

    def notes_since(self, index: int) -> list[str]:
        return self.notes[index:]
