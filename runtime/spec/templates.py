"""Prompt templates: Python format strings whose fields name inputs and upstream outputs.

``{topic}`` inserts an input, ``{hardware}`` an upstream step's output and ``{hardware:.500}``
its first 500 characters (the standard format spec for strings, as the seed's ``content[:500]``).
``{classify.intent}`` inserts one field of a structured (JSON) reply.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping

from chainray.spec.output_schema import lookup_field

__all__ = ["template_fields", "fill_template", "check_template"]



class _Formatter(string.Formatter):
    """``{step.field.sub}`` looks the field up in the step's JSON reply."""

    def get_field(self, field_name: str, args, kwargs):
        root, *path = field_name.split(".")
        value = kwargs[root]
        return (lookup_field(value, path) if path else value), root


_FORMATTER = _Formatter()
# Truncation only: padding (``{x:>2000000000}``) or nested fields would let a template
# allocate without bound.
_TRUNCATE = re.compile(r"^\.[0-9]{1,9}$")


def template_fields(template: str) -> list[tuple[str, str]]:
    """The (name, format spec) pairs a template uses, in order of appearance."""
    return [(name, spec or "") for _, name, spec, _ in _FORMATTER.parse(template)
            if name is not None]


def check_template(template: str) -> str | None:
    """Return why a template is malformed, or None when it is usable."""
    try:
        fields = template_fields(template)
    except ValueError as exc:
        return f"malformed template: {exc} (write {{{{ and }}}} for literal braces)"
    for name, spec in fields:
        if not all(part.isidentifier() for part in name.split(".")):
            return (f"template field {{{name}}} must be a plain name such as {{topic}} or a "
                    "field of a structured reply such as {classify.intent}")
        if spec and not _TRUNCATE.match(spec):
            return (f"template field {{{name}:{spec}}}: the only format spec is .N, the first "
                    f"N characters (as {{{name}:.500}})")
    return None


def fill_template(template: str, values: Mapping[str, str]) -> str:
    """Fill a checked template; every field must be present in ``values``."""
    roots = {name.split(".")[0] for name, _ in template_fields(template)}
    return _FORMATTER.vformat(template, (), {root: str(values[root]) for root in roots})
