"""A chain's problems as ``SpecError``s: pydantic's field errors translated, with the nearest
name suggested for a misspelling.

    >>> suggest("overveiw", ["overview", "facts"])
    "; did you mean 'overview'?"
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import ValidationError

from chainray.errors import SpecError

__all__ = ["nearest", "suggest", "FieldProblem", "field_problems"]


def nearest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate most like ``name`` (a misspelling of it), or None when none is close."""
    close = difflib.get_close_matches(name, [c for c in candidates if c != name], n=1)
    return close[0] if close else None


def suggest(name: str, candidates: Iterable[str]) -> str:
    """``"; did you mean X?"`` for the candidate nearest ``name``, or ``""`` when none is near."""
    near = nearest(name, candidates)
    return f"; did you mean {near!r}?" if near else ""


class FieldProblem(ValueError):
    """Raised inside a validator so that pydantic collects it with the model's other errors
    (a ``SpecError`` would stop validation at the first problem); ``field`` is where."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.message, self.field = message, field


def _step_id(data: Any, index: int) -> str:
    steps = data.get("steps") if isinstance(data, dict) else None
    raw = steps[index] if isinstance(steps, (list, tuple)) and index < len(steps) else None
    step_id = raw.get("id") if isinstance(raw, dict) else getattr(raw, "id", None)
    return step_id if isinstance(step_id, str) and step_id else f"#{index + 1}"


def field_problems(exc: ValidationError, data: Any, source: str | None,
                   keys_at: Callable[[tuple], Iterable[str]],
                   step: str | None = None) -> list[SpecError]:
    """Every error of ``exc`` (validating ``data``) as a ``SpecError`` naming file, step and
    field; ``keys_at(loc)`` lists the keys allowed where an unknown key was found. ``step``:
    the step's id when ``data`` is one step rather than a chain."""
    problems, errors = [], exc.errors()
    inside = {tuple(e["loc"])[:1] for e in errors if len(e["loc"]) > 1}
    for error in errors:
        loc = tuple(error["loc"])
        if error["type"] == "too_short" and loc in inside:
            continue  # the list is short only because its items failed: they are reported
        step_id = step
        if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
            step_id = _step_id(data, loc[1])
        message = error["msg"]
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, FieldProblem):
            message = cause.message
            loc = loc if loc[-1:] == (cause.field,) else (*loc, cause.field)
        elif error["type"] == "too_short" and loc == ("steps",):
            message = "a chain needs at least one step"
        elif error["type"] == "extra_forbidden":
            message = ("unknown key (check its spelling against `chainray schema` or "
                       "docs/chain-files.md)" + suggest(str(loc[-1]), keys_at(loc[:-1])))
        field_loc = loc[2:] if loc[:1] == ("steps",) and len(loc) >= 2 else loc
        field = ".".join(str(part) for part in field_loc) or None
        problems.append(SpecError(message, source, step_id, field))
    return problems
