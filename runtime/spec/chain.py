"""The chain spec: pydantic models for steps and chains, and the loader for chain files.

Build, validate, freeze, then run: ``load_chain`` and ``Chain(...)`` raise ``SpecError`` for every
problem (duplicate ids, unknown dependencies, cycles, unknown template fields, final step, bad
numbers) before anything is sent anywhere.

    >>> chain = Chain(name="demo", inputs={"topic": "tea"}, steps=[
    ...     Step(id="facts", prompt="List facts about {topic}"),
    ...     Step(id="summary", after=["facts"], prompt="Summarise: {facts:.500}")])
    >>> chain.final_step.id
    'summary'
"""

from __future__ import annotations

import graphlib
import importlib
import re
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_serializer,
    field_validator,
    model_validator,
)

from chainray.errors import SpecError
from chainray.spec.output_schema import field_path_problem, normalize_schema
from chainray.spec.templates import check_template, template_fields

__all__ = ["ModelSettings", "Step", "Chain", "load_chain", "chain_from_dict", "SCENARIO_DIR",
           "DEFAULT_MODEL", "DEFAULT_MAX_TOKENS", "MAX_CHAIN_BYTES", "StepCall", "resolve_call",
           "call_name"]

DEFAULT_MODEL = "gpt-4o-mini"  # an llm step with no model in the step or the defaults
DEFAULT_MAX_TOKENS = 512  # an llm step with no max_tokens in the step or the defaults
MAX_CHAIN_BYTES = 1 << 20  # a chain file larger than this is refused before it is parsed

def _scenario_dir() -> Path:
    import chainray.scenarios

    return Path(chainray.scenarios.__file__).resolve().parent


SCENARIO_DIR = _scenario_dir()

_FROZEN = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
_RESERVED_PARAMS = {"model", "messages", "stream", "stream_options", "max_tokens",
                    "max_completion_tokens", "temperature", "response_format"}


class ModelSettings(BaseModel):
    """Per-chain defaults or per-step overrides for the LLM call."""

    model_config = _FROZEN

    model: str | None = Field(default=None, min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0, le=1_000_000)
    system: str | None = None
    params: dict[str, JsonValue] | None = Field(
        default=None, description="passed through to the endpoint (seed, top_p, stop, "
        "reasoning_effort, ...); a step's params are merged over the defaults'")
    fallback_models: tuple[str, ...] | None = Field(
        default=None, description="models to try in turn when the model itself fails")
    stream: bool | None = Field(
        default=None, description="stream replies to measure time to first token "
        "(default: on)")

    @field_validator("params")
    @classmethod
    def _params_are_ours_to_pass(cls, params: dict | None) -> dict | None:
        reserved = sorted(set(params or ()) & _RESERVED_PARAMS)
        if reserved:
            raise ValueError(f"{reserved[0]!r} is set by chainray, not in params (use the "
                             "step's own field or the chain's structure)")
        return params


_CALL_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"

StepCall = Callable[..., Any]
"""A python step's callable: ``function(inputs, upstream) -> str`` (both dicts of text)."""


def resolve_call(call: str | StepCall) -> StepCall:
    """The callable ``call`` names: itself, or ``module:function`` imported (only that module).

    Raises ``SpecError`` (field ``call``) when the module or the function cannot be found.
    """
    if callable(call):
        return call
    if not isinstance(call, str) or not re.match(_CALL_PATTERN, call):
        raise SpecError(f"call must be a Python callable or 'module:function', got {call!r}",
                        field="call")
    module_name, function_name = call.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpecError(f"cannot import module {module_name!r} for call {call!r}: {exc}",
                        field="call") from None
    except Exception as exc:  # the user's module may fail on import in any way
        raise SpecError(f"importing {module_name!r} for call {call!r} failed: "
                        f"{type(exc).__name__}: {exc}", field="call") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise SpecError(f"module {module_name!r} has no function {function_name!r}",
                        field="call")
    return function


def call_name(call: StepCall) -> str:
    """``module:qualname`` of a callable: how a chain serialises it (journal keys, JSON)."""
    module = getattr(call, "__module__", None) or "?"
    return f"{module}:{getattr(call, '__qualname__', type(call).__qualname__)}"


class Step(ModelSettings):
    """One unit of work: an LLM call (``kind: llm``) or a Python callable (``kind: python``)."""

    id: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)
    kind: Literal["llm", "python"] = "llm"
    prompt: str | None = None
    # A callable, or ``module:function`` resolved to one when the step is built (so a typo
    # fails validation, not the run); shipped to workers by Ray's cloudpickle.
    call: Annotated[StepCall | None, WithJsonSchema(
        {"type": "string", "pattern": _CALL_PATTERN,
         "description": "module:function, called as function(inputs, upstream) -> str"})] = None
    after: tuple[str, ...] = ()
    final: bool = False
    description: str | None = None
    output_schema: dict[str, JsonValue] | None = Field(
        default=None, alias="schema", description="JSON Schema the reply must follow "
        "(structured output); downstream templates may name its fields: {step.field}")

    @field_validator("output_schema", mode="before")
    @classmethod
    def _schema_from_model(cls, value: Any) -> Any:
        return normalize_schema(value)

    @field_validator("call", mode="plain")
    @classmethod
    def _resolve_call(cls, value: Any, info: ValidationInfo) -> StepCall | None:
        if value is None:
            return None
        try:
            return resolve_call(value)
        except SpecError as exc:
            raise SpecError(exc.message, step=info.data.get("id"), field="call") from None

    @field_serializer("call", when_used="json")
    def _call_name(self, call: StepCall | None) -> str | None:
        return None if call is None else call_name(call)

    @model_validator(mode="after")
    def _kind_fields(self) -> Step:
        if self.kind == "llm" and not self.prompt:
            raise SpecError("an llm step needs a prompt", step=self.id, field="prompt")
        if self.kind == "python" and not self.call:
            raise SpecError("a python step needs call: module:function", step=self.id,
                            field="call")
        return self


class Chain(BaseModel):
    """A named graph of steps with inputs and one final (aggregating) step."""

    model_config = _FROZEN

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=64)
    description: str = ""
    inputs: dict[str, str | None] = {}
    defaults: ModelSettings = ModelSettings()
    on_error: Literal["fail", "continue", "isolate"] = "fail"
    steps: tuple[Step, ...] = Field(min_length=1)
    source: str | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _graph(self) -> Chain:
        _check_graph(self)
        return self

    @cached_property
    def by_id(self) -> dict[str, Step]:
        """Steps by id; built once (the chain is frozen), as dispatch asks for every step."""
        return {step.id: step for step in self.steps}

    @property
    def final_step(self) -> Step:
        marked = [step for step in self.steps if step.final]
        return marked[0] if marked else _sinks(self)[0]

    def settings_for(self, step: Step) -> ModelSettings:
        """The step's model settings, falling back to the chain's defaults."""
        fields = ModelSettings.model_fields
        settings = {name: getattr(step, name) if getattr(step, name) is not None
                    else getattr(self.defaults, name) for name in fields}
        if step.params is not None and self.defaults.params is not None:
            settings["params"] = {**self.defaults.params, **step.params}
        return ModelSettings(**settings)


def _sinks(chain: Chain) -> list[Step]:
    needed = {dep for step in chain.steps for dep in step.after}
    return [step for step in chain.steps if step.id not in needed]


def _check_graph(chain: Chain) -> None:
    file = chain.source
    ids = [step.id for step in chain.steps]
    for step_id in ids:
        if ids.count(step_id) > 1:
            raise SpecError(f"duplicate step id {step_id!r}; ids must be unique", file, step_id,
                            "id")
    for step_id in ids:
        if step_id in chain.inputs:
            raise SpecError(f"step id {step_id!r} is also an input's name, so {{{step_id}}} "
                            "would be ambiguous; rename the step or the input", file, step_id,
                            "id")
    for step in chain.steps:
        for dep in step.after:
            if dep not in ids:
                raise SpecError(f"depends on unknown step {dep!r} (known: {', '.join(ids)})",
                                file, step.id, "after")
            if dep == step.id:
                raise SpecError("a step cannot depend on itself", file, step.id, "after")
    try:
        graphlib.TopologicalSorter({s.id: s.after for s in chain.steps}).prepare()
    except graphlib.CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        raise SpecError(f"dependency cycle {cycle} (each step needs the one before it); "
                        "remove one of these 'after' entries",
                        file, exc.args[1][0], "after") from None
    for step in chain.steps:
        _check_step_fields(chain, step)
    _check_final(chain)


def _check_final(chain: Chain) -> None:
    file = chain.source
    marked = [step.id for step in chain.steps if step.final]
    if len(marked) > 1:
        raise SpecError(f"{len(marked)} steps are marked final ({', '.join(marked)}); "
                        "mark exactly one", file, marked[1], "final")
    sinks = [step.id for step in _sinks(chain)]
    if not marked and len(sinks) > 1:
        raise SpecError(f"no final step and several steps nothing depends on "
                        f"({', '.join(sinks)}); mark the aggregating one final: true",
                        file, sinks[0], "final")
    final = marked[0] if marked else sinks[0]
    if final not in sinks:
        raise SpecError("the final step must be the last: no other step may depend on it",
                        file, final, "final")
    reaches_final = _ancestors(chain, final) | {final}
    for step_id in sinks:
        if step_id not in reaches_final:
            raise SpecError(f"the final step {final!r} does not depend on this step, so its "
                            f"output would be lost; add it to {final!r}'s after list",
                            file, step_id, "after")


def _ancestors(chain: Chain, step_id: str) -> set[str]:
    by_id, seen, todo = chain.by_id, set(), list(chain.by_id[step_id].after)
    while todo:
        dep = todo.pop()
        if dep not in seen:
            seen.add(dep)
            todo.extend(by_id[dep].after)
    return seen


def _check_step_fields(chain: Chain, step: Step) -> None:
    file = chain.source
    for field in ("prompt", "system"):
        template = getattr(step, field)
        if template is None:
            continue
        problem = check_template(template)
        if problem:
            raise SpecError(problem, file, step.id, field)
        for name, _ in template_fields(template):
            root, *path = name.split(".")
            if path and root in step.after:
                problem = field_path_problem(chain.by_id[root].output_schema, root, path)
                if problem:
                    raise SpecError(problem, file, step.id, field)
                continue
            if root in step.after or (root in chain.inputs and not path):
                continue
            hint = (f"add {root!r} to this step's after list" if root in chain.by_id
                    else f"declare it under inputs (inputs: {', '.join(chain.inputs) or 'none'})")
            raise SpecError(f"template field {{{name}}} names no input or dependency; {hint}",
                            file, step.id, field)


def chain_from_dict(data: Any, source: str | None = None) -> Chain:
    """Build a chain from parsed YAML/JSON data; every problem becomes a ``SpecError``."""
    if not isinstance(data, dict):
        raise SpecError("a chain file must be a mapping with name and steps", source)
    try:
        return Chain.model_validate({**data, "source": source})
    except SpecError as exc:
        raise SpecError(exc.message, source, exc.step, exc.field) from None
    except ValidationError as exc:
        raise _spec_error_from(exc, data, source) from None


def _spec_error_from(exc: ValidationError, data: dict, source: str | None) -> SpecError:
    error = exc.errors()[0]
    loc = list(error["loc"])
    step_id = None
    if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
        steps = data.get("steps") or []
        raw = steps[loc[1]] if loc[1] < len(steps) else None
        step_id = raw.get("id") if isinstance(raw, dict) else None
        step_id = step_id or f"#{loc[1] + 1}"
        loc = loc[2:]
    field = ".".join(str(part) for part in loc) or None
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown key (check its spelling against chainray schema or docs/chain-files.md)"
    return SpecError(message, source, step_id, field)


def load_chain(name_or_path: str) -> Chain:
    """Load a bundled scenario by name (``quantum_research``) or a chain file by path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = SCENARIO_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml")))
        raise SpecError(f"no such scenario or chain file (bundled scenarios: {known})",
                        str(name_or_path))
    size = path.stat().st_size
    if size > MAX_CHAIN_BYTES:
        raise SpecError(f"the chain file is {size} bytes; the limit is {MAX_CHAIN_BYTES} "
                        "(1 MiB): keep large data in inputs files, not the chain", str(path))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(f"malformed YAML{where}: {getattr(exc, 'problem', exc)}",
                        str(path)) from None
    return chain_from_dict(data, str(path))
