"""The checks that need the whole chain: ids, references (``after``, template fields), cycles
and the final step.

Each check returns its problems instead of raising, so one report lists them all. They read a
``StepView`` (the few fields they need), built from validated steps or, when some fields of a
file are invalid, from its raw data: a misspelled key in one step does not hide a misspelled
dependency in another.
"""

from __future__ import annotations

import graphlib
from collections.abc import Iterable
from typing import Any, NamedTuple

from chainray.errors import SpecError
from chainray.spec.output_schema import field_path_problem, normalize_schema
from chainray.spec.problems import nearest, suggest
from chainray.spec.templates import check_template, template_fields

__all__ = ["StepView", "step_view", "raw_step_views", "graph_problems"]

_TEMPLATES = ("prompt", "system")


class StepView(NamedTuple):
    id: str
    after: tuple[str, ...] = ()
    final: bool = False
    templates: tuple[tuple[str, str], ...] = ()  # (field, template)
    schema: dict | None = None
    schema_known: bool = True  # False: the raw schema is invalid, so field paths go unchecked


def step_view(step: Any) -> StepView | None:
    """The view of a validated step, or of one raw step mapping (None without a text id)."""
    if not isinstance(step, dict):
        return StepView(step.id, tuple(step.after), step.final,
                        tuple((f, getattr(step, f)) for f in _TEMPLATES
                              if getattr(step, f) is not None), step.output_schema)
    if not isinstance(step.get("id"), str):
        return None
    after = step.get("after") or ()
    after = tuple(dep for dep in after if isinstance(dep, str)) \
        if isinstance(after, (list, tuple)) else ()
    try:
        schema = normalize_schema(step.get("schema"))
    except Exception:  # a broken pydantic model: its own field error reports it
        schema = None
    return StepView(step["id"], after, step.get("final") is True,
                    tuple((f, step[f]) for f in _TEMPLATES if isinstance(step.get(f), str)),
                    schema if isinstance(schema, dict) else None,
                    schema is None or isinstance(schema, dict))


def raw_step_views(data: Any) -> list[StepView]:
    """Views of the steps in a chain's raw data that have an id (a step model or mapping)."""
    steps = data.get("steps") if isinstance(data, dict) else None
    if not isinstance(steps, (list, tuple)):
        return []
    views = [step_view(s) for s in steps if isinstance(s, dict) or hasattr(s, "after")]
    return [view for view in views if view is not None]


def graph_problems(inputs: Iterable[str], steps: list[StepView],
                   file: str | None) -> list[SpecError]:
    """Every problem of the chain's graph: identity, references, then (when the ids are unique
    and there is no cycle) the final step."""
    inputs = list(inputs)
    problems = _identity(inputs, steps, file)
    duplicated = len({step.id for step in steps}) < len(steps)
    for step in steps:
        problems += _unknown_dependencies(steps, step, file)
    # The rest reads a misspelled dependency as the step it nearly names: its consequences
    # (a template naming a step that is "not a dependency", two steps nothing depends on) go
    # with the one fix already suggested.
    steps = _as_suggested(steps)
    for step in steps:
        problems += _template_references(inputs, steps, step, file)
    cycle = _cycle(steps, file)
    problems += cycle
    if steps and not duplicated and not cycle:
        problems += _final(steps, file)
    return problems


def _as_suggested(steps: list[StepView]) -> list[StepView]:
    ids = [step.id for step in steps]
    return [step._replace(after=tuple(
        dep if dep in ids else nearest(dep, [i for i in ids if i != step.id]) or dep
        for dep in step.after)) for step in steps]


def _identity(inputs: list[str], steps: list[StepView], file: str | None) -> list[SpecError]:
    ids = [step.id for step in steps]
    problems = []
    for step_id in dict.fromkeys(ids):
        places = [str(n) for n, other in enumerate(ids, 1) if other == step_id]
        if len(places) > 1:
            problems.append(SpecError(f"duplicate step id {step_id!r} (steps "
                                      f"{', '.join(places)}); ids must be unique", file,
                                      step_id, "id"))
        if step_id in inputs:
            problems.append(SpecError(f"step id {step_id!r} is also an input's name, so "
                                      f"{{{step_id}}} would be ambiguous; rename the step or "
                                      "the input", file, step_id, "id"))
    return problems


def _unknown_dependencies(steps: list[StepView], step: StepView,
                          file: str | None) -> list[SpecError]:
    others = [i for i in dict.fromkeys(other.id for other in steps) if i != step.id]
    problems = []
    for dep in step.after:
        if dep == step.id:
            problems.append(SpecError("a step cannot depend on itself", file, step.id, "after"))
        elif dep not in others:
            problems.append(SpecError(
                f"depends on unknown step {dep!r}{suggest(dep, others)} "
                f"(known: {', '.join(others) or 'none'})", file, step.id, "after"))
    return problems


def _template_references(inputs: list[str], steps: list[StepView], step: StepView,
                         file: str | None) -> list[SpecError]:
    return [SpecError(message, file, step.id, field) for field, template in step.templates
            for message in _template_problems(inputs, steps, step, template)]


def _template_problems(inputs: list[str], steps: list[StepView], step: StepView,
                       template: str) -> list[str]:
    problem = check_template(template)
    if problem:
        return [problem]
    by_id = {other.id: other for other in steps}
    problems = []
    for name, _ in dict.fromkeys(template_fields(template)):
        root, *path = name.split(".")
        if path and root in step.after and root in by_id:
            if by_id[root].schema_known:
                problem = field_path_problem(by_id[root].schema, root, path)
                problems += [problem] if problem else []
            continue
        if root in step.after or (root in inputs and not path):
            continue
        if root in by_id:
            problems.append(f"template field {{{name}}} names step {root!r}, which is not a "
                            f"dependency; add {root!r} to this step's after list")
            continue
        near = nearest(root, [*inputs, *step.after, *(s.id for s in steps if s.id != step.id)])
        if near is None:
            fix = f"declare it under inputs (inputs: {', '.join(inputs) or 'none'})"
        elif near in by_id and near not in step.after:
            fix = f"did you mean {{{near}}}? (then add {near!r} to this step's after list)"
        else:
            fix = f"did you mean {{{near}}}?"
        problems.append(f"template field {{{name}}} names no input or dependency; {fix}")
    return problems


def _cycle(steps: list[StepView], file: str | None) -> list[SpecError]:
    graph = {step.id: [dep for dep in step.after if dep != step.id] for step in steps}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        return [SpecError(f"dependency cycle {cycle} (each step needs the one before it); "
                          "remove one of these 'after' entries", file, exc.args[1][0],
                          "after")]
    return []


def _final(steps: list[StepView], file: str | None) -> list[SpecError]:
    ids = {step.id for step in steps}
    after = {step.id: [d for d in step.after if d in ids and d != step.id] for step in steps}
    needed = {dep for deps in after.values() for dep in deps}
    sinks = [step.id for step in steps if step.id not in needed]
    marked = [step.id for step in steps if step.final]
    if len(marked) > 1:
        return [SpecError(f"{len(marked)} steps are marked final ({', '.join(marked)}); "
                          "mark exactly one", file, marked[1], "final")]
    if not marked and len(sinks) > 1:
        return [SpecError(f"no final step and several steps nothing depends on "
                          f"({', '.join(sinks)}); mark the aggregating one final: true",
                          file, sinks[0], "final")]
    final = marked[0] if marked else sinks[0]
    if final not in sinks:
        return [SpecError("the final step must be the last: no other step may depend on it",
                          file, final, "final")]
    reaches, todo = {final}, list(after[final])
    while todo:
        dep = todo.pop()
        if dep not in reaches:
            reaches.add(dep)
            todo.extend(after[dep])
    return [SpecError(f"the final step {final!r} does not depend on this step, so its output "
                      f"would be lost; add it to {final!r}'s after list", file, step_id,
                      "after") for step_id in sinks if step_id not in reaches]
