"""The chain spec: pydantic models for steps and chains, and the loader for chain files.

Build, validate, freeze, then run: ``load_chain`` and ``Chain(...)`` raise one ``SpecError``
listing every problem (duplicate ids, unknown dependencies, cycles, unknown template fields,
final step, bad numbers, unknown keys), with the nearest name for a misspelling, before
anything is sent anywhere.

    >>> chain = Chain(name="demo", inputs={"topic": "tea"}, steps=[
    ...     Step(id="facts", prompt="List facts about {topic}"),
    ...     Step(id="summary", after=["facts"], prompt="Summarise: {facts:.500}")])
    >>> chain.final_step.id
    'summary'
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
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
    WithJsonSchema,
    field_serializer,
    field_validator,
    model_validator,
)

from chainray.errors import SpecError
from chainray.spec.checks import graph_problems, raw_step_views, step_view
from chainray.spec.output_schema import normalize_schema
from chainray.spec.problems import FieldProblem, field_problems, suggest

__all__ = ["ModelSettings", "Step", "Chain", "load_chain", "chain_from_dict", "SCENARIO_DIR",
           "DEFAULT_MODEL", "DEFAULT_MAX_TOKENS", "MAX_CHAIN_BYTES", "StepCall", "resolve_call",
           "call_name"]

DEFAULT_MODEL = "gpt-4o-mini"  # an llm step with no model in the step or the defaults
DEFAULT_MAX_TOKENS = 512  # an llm step with no max_tokens in the step or the defaults
MAX_CHAIN_BYTES = 1 << 20  # a chain file larger than this is refused before it is parsed

# Set while a chain validates: its steps' errors then join the chain's report instead of
# each step raising its own (pydantic calls Step.__init__ for nested steps too).
_IN_CHAIN: ContextVar[bool] = ContextVar("chainray_spec_in_chain", default=False)


@contextmanager
def _in_chain() -> Iterator[None]:
    token = _IN_CHAIN.set(True)
    try:
        yield
    finally:
        _IN_CHAIN.reset(token)


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
        public = [name for name, value in vars(module).items()
                  if callable(value) and not name.startswith("_")]
        raise SpecError(f"module {module_name!r} has no function {function_name!r}"
                        f"{suggest(function_name, public)}", field="call")
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

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            if _IN_CHAIN.get():
                raise
            step_id = data.get("id") if isinstance(data.get("id"), str) else None
            raise SpecError.collect(field_problems(exc, data, None, lambda _: _keys(Step),
                                                   step=step_id)) from None

    @field_validator("call", mode="plain")
    @classmethod
    def _resolve_call(cls, value: Any) -> StepCall | None:
        if value is None:
            return None
        try:
            return resolve_call(value)
        except SpecError as exc:  # collected with the chain's other problems
            raise FieldProblem(exc.message, "call") from None

    @field_serializer("call", when_used="json")
    def _call_name(self, call: StepCall | None) -> str | None:
        return None if call is None else call_name(call)

    @model_validator(mode="after")
    def _kind_fields(self) -> Step:
        if self.kind == "llm" and not self.prompt:
            raise FieldProblem("an llm step needs a prompt", "prompt")
        if self.kind == "python" and not self.call:
            raise FieldProblem("a python step needs call: module:function", "call")
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

    def __init__(self, /, **data: Any) -> None:
        try:
            with _in_chain():
                super().__init__(**data)
        except ValidationError as exc:
            raise _spec_error(exc, data, data.get("source")) from None

    @model_validator(mode="after")
    def _graph(self) -> Chain:
        problems = graph_problems(self.inputs, [step_view(s) for s in self.steps], self.source)
        if problems:  # not a ValueError: pydantic passes it on as it is
            raise SpecError.collect(problems)
        return self

    @cached_property
    def by_id(self) -> dict[str, Step]:
        """Steps by id; built once (the chain is frozen), as dispatch asks for every step."""
        return {step.id: step for step in self.steps}

    @property
    def final_step(self) -> Step:
        marked = [step for step in self.steps if step.final]
        return marked[0] if marked else _sinks(self)[0]

    def model_for(self, step: Step) -> str:
        """The model a step calls first: its own, else the chain's default, else
        ``DEFAULT_MODEL``."""
        return step.model or self.defaults.model or DEFAULT_MODEL

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


def _keys(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items() if name != "source"]


def _keys_at(loc: tuple) -> list[str]:
    """The keys a chain file allows at ``loc`` (for "did you mean" on an unknown key)."""
    if loc[:1] == ("steps",):
        return _keys(Step)
    return _keys(ModelSettings) if loc[:1] == ("defaults",) else _keys(Chain)


def _spec_error(exc: ValidationError, data: Any, source: str | None) -> SpecError:
    """Every problem of ``data``: its fields' errors, then those of its graph as far as the
    raw data shows it (so a bad key in one step does not hide a bad reference in another)."""
    problems = field_problems(exc, data, source, _keys_at)
    inputs = data.get("inputs") if isinstance(data, dict) else None
    problems += graph_problems(inputs if isinstance(inputs, dict) else {},
                               raw_step_views(data), source)
    return SpecError.collect(problems)


def chain_from_dict(data: Any, source: str | None = None) -> Chain:
    """Build a chain from parsed YAML/JSON data; every problem becomes a ``SpecError``."""
    if not isinstance(data, dict):
        raise SpecError("a chain file must be a mapping with name and steps", source)
    try:
        with _in_chain():
            return Chain.model_validate({**data, "source": source})
    except ValidationError as exc:
        raise _spec_error(exc, data, source) from None


def load_chain(name_or_path: str) -> Chain:
    """Load a bundled scenario by name (``quantum_research``) or a chain file by path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = SCENARIO_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))
        raise SpecError(f"no such scenario or chain file{suggest(path.stem, known)} (bundled "
                        f"scenarios: {', '.join(known)})", str(name_or_path))
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
