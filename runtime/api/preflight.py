"""What is checked before the first request, so that exit status 2 means nothing was sent.

One place for the command line and the Python API: the output files (``--json``,
``--timeline``, ``--trace``, ``--summary-json``) and the journal folder can be written; every
input (``--set``, each line of ``--inputs``, ``inputs=``) is text or a number, encodable as
UTF-8, and small enough that no step's prompt overflows its model's context window where that
window is known. Each check returns its problems, and ``refuse`` raises one ``InputError``
that lists them all.

    >>> output_problems({"--json": "/no/such/folder/out.json"})
    ['--json: the folder of /no/such/folder/out.json does not exist']
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chainray.errors import InputError
from chainray.plan.cost import load_prices
from chainray.spec.chain import DEFAULT_MAX_TOKENS, DEFAULT_MODEL, Chain
from chainray.spec.problems import suggest
from chainray.spec.prompts import render_prompt
from chainray.spec.templates import fill_template
from chainray.tokens import estimate_prompt_tokens

__all__ = ["context_window", "output_problems", "journal_problems",
           "set_problems", "set_values", "input_problems", "refuse"]

def context_window(model: str) -> int | None:
    """The context window of ``model`` (or of its dated snapshot) in the bundled price table
    (each row names its source and date), or None when the table states none: unchecked."""
    windows = {name: row.context_window for name, row in load_prices().models.items()
               if row.context_window is not None}
    family = [name for name in windows if model == name or model.startswith(name + "-20")]
    return windows[max(family, key=len)] if family else None


def _path_problem(path: str) -> str | None:
    target = Path(path).expanduser()
    if target.is_dir():
        return f"{path} is a folder; give a file path"
    folder = target.resolve().parent
    if not folder.is_dir():
        return f"the folder of {path} does not exist"
    if target.exists() and not os.access(target, os.W_OK):
        return f"cannot write {path} (permission denied)"
    if not target.exists() and not os.access(folder, os.W_OK | os.X_OK):
        return f"cannot create {path}: the folder {folder} is not writable"
    return None


def output_problems(paths: Mapping[str, str | None]) -> list[str]:
    """Why each output file (``{"--json": path, ...}``; None: not asked for) cannot be
    written; also two flags naming one file."""
    problems, seen = [], {}
    for flag, path in paths.items():
        if not path:
            continue
        if (problem := _path_problem(path)) is not None:
            problems.append(f"{flag}: {problem}")
        same = seen.setdefault(Path(path).expanduser().resolve(), flag)
        if same != flag:
            problems.append(f"{flag}: {path} is also the {same} file; give each its own")
    return problems


def journal_problems(folder: Path, hint: str = "--no-journal keeps none") -> list[str]:
    """Why the journal ``folder`` cannot be created or written into."""
    if folder.exists():
        if not folder.is_dir():
            return [f"journal folder {folder} is a file ({hint})"]
        ok = os.access(folder, os.W_OK | os.X_OK)
        return [] if ok else [f"journal folder {folder} is not writable ({hint})"]
    parent = folder.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        return [f"cannot create the journal folder {folder}: {parent} is not a writable "
                f"folder (set CHAINRAY_HOME, or {hint})"]
    return []


def set_problems(chain: Chain, assignments: list[str]) -> list[str]:
    """Why each ``--set NAME=VALUE`` is malformed or names no input of the chain."""
    problems = []
    for assignment in assignments:
        name, sep, _ = assignment.partition("=")
        if not sep or not name:
            problems.append(f"--set {assignment!r}: write NAME=VALUE")
        elif name not in chain.inputs:
            problems.append(f"--set {name}: the chain has no input {name!r}"
                            f"{suggest(name, chain.inputs)} (inputs: "
                            f"{', '.join(chain.inputs) or 'none'})")
    return problems


def set_values(chain: Chain, assignments: list[str]) -> dict[str, str]:
    """The well-formed ``--set`` assignments that name an input of the chain, as values."""
    pairs = [assignment.partition("=") for assignment in assignments]
    return {name: value for name, sep, value in pairs if sep and name in chain.inputs}


_JSON_KINDS = {type(None): "null", bool: "true/false", list: "a list", dict: "an object"}


def _value_problem(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        kind = _JSON_KINDS.get(type(value), type(value).__name__)
        return f"must be text or a number, got {kind}"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return (f"is not valid text: {value[exc.start]!a} at character {exc.start} is a "
                    "lone surrogate, which no request can carry (fix the text's encoding)")
    return None


def input_problems(chain: Chain, values: Mapping[str, Any], model: str | None = None,
                   where: str = "") -> list[str]:
    """Why ``values`` (the chain's inputs, or some of them) cannot be sent: each value's type
    and encoding, then, when those are sound, each llm step whose prompt (these inputs, before
    any upstream output) plus ``max_tokens`` overflows its model's known context window.
    ``where`` prefixes each problem (``"line 3: "``, ``"--set "``)."""
    problems = [f"{where}input {name!r} {problem}" for name, value in values.items()
                if (problem := _value_problem(value)) is not None]
    if problems:
        return problems
    inputs = {**{k: v or "" for k, v in chain.inputs.items()},
              **{k: str(v) for k, v in values.items()}}
    for step in chain.steps:
        if step.kind != "llm":
            continue
        settings = chain.settings_for(step)
        name = model or settings.model or DEFAULT_MODEL
        window = context_window(name)
        if window is None:
            continue
        max_tokens = settings.max_tokens or DEFAULT_MAX_TOKENS
        tokens = _prompt_tokens(chain, step, settings.system, inputs)
        if tokens + max_tokens > window:
            largest = max(inputs, key=lambda k: len(inputs[k]), default=None)
            cause = (f"; input {largest!r} is {len(inputs[largest]):,} characters"
                     if largest is not None else "")
            problems.append(f"{where}step {step.id!r}: its prompt is about {tokens:,} tokens, "
                            f"which with max_tokens {max_tokens:,} exceeds {name}'s context "
                            f"window of {window:,} tokens{cause}")
    return problems


def _prompt_tokens(chain: Chain, step, system: str | None, inputs: dict[str, str]) -> int:
    """The step's request size before upstream outputs (they are not known yet)."""
    messages = [{"role": "user", "content": render_prompt(step.prompt or "", inputs, {},
                                                          step.after)}]
    if system:
        try:
            content = fill_template(system, {**dict.fromkeys(chain.by_id, ""), **inputs})
        except KeyError:  # a name the run itself will refuse; not this check's business
            content = system
        messages.append({"role": "system", "content": content})
    return estimate_prompt_tokens(messages)


_SHOWN = 20  # problems listed in full; a file with thousands of bad lines shows the first


def refuse(problems: list[str], what: str = "") -> None:
    """Raise one ``InputError`` listing ``problems`` (nothing when there are none)."""
    if not problems:
        return
    if len(problems) == 1:
        raise InputError(f"{what}{problems[0]} (nothing was sent)")
    lines = "\n".join(f"  - {problem}" for problem in problems[:_SHOWN])
    more = f"\n  ... and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
    raise InputError(f"{what}{len(problems)} problems, nothing was sent:\n{lines}{more}")
