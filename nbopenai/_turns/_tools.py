"""Python functions as function tools, and the loop that runs the model's calls until it answers.

``function_tool(fn)`` reads the signature: a Pydantic model of the parameters (type hints, defaults,
descriptions from a numpy- or Google-style docstring) gives the JSON schema, strict when the types
allow it: every parameter required, ``additionalProperties: false``, and a parameter with a default
taking ``null`` for "use the default". Where they do not (``**kwargs``, ``dict``, ``Any``, a missing
hint) the tool is sent with ``strict: false`` and ``FunctionTool.not_strict`` says why.

``run_with_tools`` is one turn of a thread, however many requests it takes:

1. the prepared ask goes out with the tools;
2. while the response holds ``function_call`` items, each runs here, in order (its arguments
   validated by the Pydantic model; ``confirm`` may decline it; a tool that raises sends
   ``"Error: ValueError: ..."`` back instead of ending the turn), and the outputs go back as
   ``function_call_output`` items, chained with ``previous_response_id`` (``store=True``) or after
   the replayed items (``store=False``);
3. once ``max_tool_rounds`` rounds have run, further calls are answered "not run" and the model
   must answer without tools (``tool_choice="none"``); that answer is marked ``incomplete``.

Every request lands in the ledger (``kind="ask"`` for the first, ``"tool"`` for the others); the
thread gets one turn, whose head is the final response.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import json
import re
import sqlite3
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import docstring_parser
import pydantic

from .._core._errors import SchemaError, UsageError
from .._core._strict import lint_schema, strict_json_schema
from ._answer import Answer
from ._ask import PreparedAsk, holding, send, send_first, start
from ._prompt import preview
from ._recorder import AskSink, TurnServices, output_items
from ._tool_ledger import ALREADY_DONE, STARTED_BEFORE, ToolLedger, side_effects

__all__ = [
    "DEFAULT_MAX_TOOL_ROUNDS",
    "MAX_OUTPUT_CHARS",
    "FunctionTool",
    "Toolbox",
    "ToolCall",
    "ToolResult",
    "function_tool",
    "tools_from_namespace",
    "parse_docstring",
    "ask_before_running",
    "output_text",
    "run_with_tools",
]

DEFAULT_MAX_TOOL_ROUNDS = 5
MAX_OUTPUT_CHARS = 20_000  # a tool's output beyond this is cut: one DataFrame must not fill the window
_DESCRIPTION_CHARS = 1024
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
DECLINED = "The user declined this call."
# What Pydantic raises for a parameter type it cannot build a JSON schema for (a DataFrame, a socket...).
_UNSCHEMABLE = (
    pydantic.PydanticSchemaGenerationError,
    pydantic.PydanticInvalidForJsonSchema,
    pydantic.PydanticUserError,
)

# ---- docstrings: a summary and per-parameter descriptions ----------------------------------------


def _paragraphs(text: str) -> str:
    """``text`` with each paragraph's lines joined by single spaces, paragraphs kept apart."""
    text = "\n".join(line.strip() for line in text.splitlines()).strip()
    return "\n\n".join(" ".join(block.split()) for block in re.split(r"\n\s*\n", text) if block.strip())


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """The description (text before the first section) and the parameter descriptions of ``doc``
    (Google, numpy or reST style, read by ``docstring_parser``)."""
    parsed = docstring_parser.parse(inspect.cleandoc(doc or ""))
    gap = "\n\n" if parsed.blank_after_short_description else "\n"
    description = _paragraphs(gap.join(filter(None, (parsed.short_description, parsed.long_description))))
    if len(description) > _DESCRIPTION_CHARS:
        description = description[: _DESCRIPTION_CHARS - 1] + "…"
    parameters: dict[str, str] = {}
    for parameter in parsed.params:
        if text := _paragraphs(parameter.description or ""):
            for name in parameter.arg_name.split(","):  # numpy's "x, y : float" documents both
                parameters[name.strip().lstrip("*")] = text
    return description, parameters


# ---- the schema ------------------------------------------------------------------------------------


def _admits_none(annotation: Any) -> bool:
    if annotation is Any or annotation is None or annotation is type(None):
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _admits_none(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return any(_admits_none(arg) for arg in typing.get_args(annotation))
    return False


def _without_titles(node: Any) -> Any:
    """The schema without Pydantic's generated ``title`` keywords (tokens on every request)."""
    if isinstance(node, list):
        return [_without_titles(item) for item in node]
    if not isinstance(node, dict):
        return node
    kept: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in ("properties", "$defs") and isinstance(value, dict):
            kept[key] = {name: _without_titles(sub) for name, sub in value.items()}
        elif key in ("enum", "const", "default", "examples"):
            kept[key] = value
        else:
            kept[key] = _without_titles(value)
    return kept


@dataclass(frozen=True)
class _Parameter:
    name: str  # as the model writes it
    field: str  # the Pydantic field (aliased, so any parameter name works)
    positional_only: bool
    default: Any
    none_means_default: bool  # a null the model sends stands for the Python default


def _resolved(annotation: Any, function: Callable) -> Any:
    """A string hint (``from __future__ import annotations``) evaluated; left a string when it cannot be."""
    if not isinstance(annotation, str):
        return annotation
    target = inspect.unwrap(function.func if isinstance(function, functools.partial) else function)
    try:
        return eval(annotation, getattr(target, "__globals__", {}))  # what inspect.signature(eval_str=True) does
    except Exception:  # a name defined later, or only inside a function
        return annotation


def _tool_name(function: Callable, name: str | None) -> str:
    target = function.func if isinstance(function, functools.partial) else function
    name = name or getattr(target, "__name__", None) or type(function).__name__
    if not _NAME.match(name):
        raise UsageError(f"{name!r} cannot be a tool name: use 1-64 letters, digits, _ or - (pass name=...)")
    return name


def _documentation(function: Callable) -> str | None:
    target = function.func if isinstance(function, functools.partial) else function
    return inspect.getdoc(target)


def _field(
    parameter: inspect.Parameter, field_name: str, function: Callable, description: str, reasons: list[str]
) -> tuple[tuple[Any, Any], _Parameter]:
    """The Pydantic field for one parameter, and how its value is passed back; notes why not strict."""
    annotation = _resolved(parameter.annotation, function)
    if annotation is inspect.Parameter.empty:
        reasons.append(f"parameter {parameter.name!r} has no type hint")
        annotation = Any
    elif isinstance(annotation, str):
        reasons.append(f"parameter {parameter.name!r}: its type hint {annotation!r} could not be evaluated")
        annotation = Any
    has_default = parameter.default is not inspect.Parameter.empty
    none_means_default = has_default and not _admits_none(annotation)
    if none_means_default:  # strict mode requires every field: null stands for "the default"
        annotation = typing.Optional[annotation]  # noqa: UP045 - also for a string annotation, where `| None` fails
        description = f"{description} (null: the default, {parameter.default!r})".strip()
    field = pydantic.Field(default=None if has_default else ..., alias=parameter.name, description=description or None)
    passed = _Parameter(
        parameter.name,
        field_name,
        parameter.kind is inspect.Parameter.POSITIONAL_ONLY,
        parameter.default,
        none_means_default,
    )
    return (annotation, field), passed


@dataclass(frozen=True)
class FunctionTool:
    """A Python function as a function tool: the spec sent to the API, and how to call it.

    Build one with ``FunctionTool.from_function(fn)`` (``function_tool(fn)`` returns its ``spec``).

    Attributes
    ----------
    function
        The function the model's calls run.
    spec
        ``{"type": "function", "name", "description", "parameters", "strict"}``.
    arguments
        The Pydantic model that validates the model's arguments.
    not_strict
        Why ``strict`` is off (``None`` when it is on).
    """

    function: Callable[..., Any]
    spec: dict[str, Any]
    arguments: type[pydantic.BaseModel]
    parameters: tuple[_Parameter, ...]
    not_strict: str | None = None
    side_effects: bool = False  # run at most once per call (``tool(side_effects=True)``; see _tool_ledger)

    @property
    def name(self) -> str:
        return self.spec["name"]

    @property
    def strict(self) -> bool:
        return self.spec["strict"]

    @classmethod
    def from_function(
        cls,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        strict: bool | None = None,
    ) -> FunctionTool:
        """The tool for ``function``.

        Parameters
        ----------
        function
            Any callable with a signature; its type hints make the schema.
        name, description
            Instead of the function's ``__name__`` and docstring summary.
        strict
            ``None`` (default): strict when the types allow it. ``True`` raises ``SchemaError`` when
            they do not; ``False`` never strict.
        """
        tool_name = _tool_name(function, name)
        summary, documented = parse_docstring(_documentation(function))
        signature = inspect.signature(function)
        reasons: list[str] = []
        fields: dict[str, Any] = {}
        parameters: list[_Parameter] = []
        takes_any_keyword = False
        for index, parameter in enumerate(signature.parameters.values()):
            if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
                continue  # a JSON object has no place for extra positional values
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                takes_any_keyword = True
                reasons.append(f"it takes **{parameter.name} (any keyword)")
                continue
            field_name = f"p{index}"  # aliased: a parameter may be named like a BaseModel attribute
            description_text = documented.get(parameter.name, "")
            fields[field_name], passed = _field(parameter, field_name, function, description_text, reasons)
            parameters.append(passed)
        config = pydantic.ConfigDict(extra="allow" if takes_any_keyword else "forbid")
        try:
            model = pydantic.create_model(f"{tool_name}_arguments", __config__=config, **fields)
            loose_schema = model.model_json_schema()
        except _UNSCHEMABLE as exc:
            raise UsageError(
                f"{tool_name} cannot be a tool: a parameter's type cannot come from JSON "
                f"({exc.__class__.__name__}: {str(exc).splitlines()[0]}). "
                "Use str, numbers, bool, lists, Literal, Enum, Pydantic models or dataclasses."
            ) from None
        schema, strict_on, not_strict = _schema(model, loose_schema, reasons, strict, takes_any_keyword, tool_name)
        spec: dict[str, Any] = {"type": "function", "name": tool_name}
        if description or summary:
            spec["description"] = description or summary
        spec.update({"parameters": schema, "strict": strict_on})
        return cls(function, spec, model, tuple(parameters), not_strict, side_effects(function))

    def invoke(self, arguments: str) -> Any:
        """Validate the model's JSON ``arguments`` and call the function with them.

        Raises ``pydantic.ValidationError`` for arguments that do not fit, and whatever the
        function raises.
        """
        values = self.arguments.model_validate_json(arguments or "{}")
        positional, keywords = [], {}
        for parameter in self.parameters:
            given = parameter.field in values.model_fields_set
            value = getattr(values, parameter.field)
            if not given or (value is None and parameter.none_means_default):
                if parameter.positional_only:  # a later positional value needs this slot filled
                    positional.append(parameter.default)
                continue
            if parameter.positional_only:
                positional.append(value)
            else:
                keywords[parameter.name] = value
        keywords.update(values.model_extra or {})
        return self.function(*positional, **keywords)


def _schema(
    model: type[pydantic.BaseModel],
    loose_schema: dict[str, Any],
    reasons: list[str],
    strict: bool | None,
    takes_any_keyword: bool,
    tool_name: str,
) -> tuple[dict[str, Any], bool, str | None]:
    """(schema, strict, why not strict): the strict schema when it can be, the plain one otherwise."""
    if strict is False:
        return _without_titles(loose_schema), False, "strict=False was asked for"
    report = lint_schema(strict_json_schema(model))
    named = {reason.split("'")[1] for reason in reasons if reason.startswith("parameter '")}
    for finding in report.errors:
        if finding.rule == "extra" and takes_any_keyword:
            continue  # already said as "**kwargs"
        if finding.path.split(".")[0].split("[")[0] in named:
            continue  # already said as "no type hint"
        reasons.append(str(finding))
    if not reasons:
        return _without_titles(report.schema), True, None
    why = "; ".join(reasons)
    if strict:
        raise SchemaError(f"{tool_name} cannot be a strict tool: {why}")
    return _without_titles(loose_schema), False, why


def function_tool(
    function: Callable[..., Any], *, name: str | None = None, description: str | None = None, strict: bool | None = None
) -> dict[str, Any]:
    """The Responses API function tool for ``function`` (see ``FunctionTool.from_function``).

    Examples
    --------
    >>> def get_weather(city: str, unit: str = "C") -> str:
    ...     '''The weather now.
    ...
    ...     Parameters
    ...     ----------
    ...     city : str
    ...         A city name, e.g. "Paris".
    ...     '''
    >>> function_tool(get_weather)["parameters"]["required"]  # doctest: +SKIP
    ['city', 'unit']
    """
    return FunctionTool.from_function(function, name=name, description=description, strict=strict).spec


def tools_from_namespace(names: Any, namespace: Mapping[str, Any]) -> list[Any]:
    """The functions ``--tools f,g`` names, looked up in ``namespace`` (the notebook's variables).

    ``names`` is one string (comma- or space-separated) or a list of them; raises ``UsageError``
    for a name that is missing or not callable.
    """
    if isinstance(names, str):
        names = [names]
    found = []
    for name in (part for entry in names for part in re.split(r"[,\s]+", entry) if part):
        if name not in namespace:
            raise UsageError(f"--tools: there is no {name!r} in the notebook; define the function first")
        if not callable(namespace[name]):
            raise UsageError(f"--tools: {name!r} is not a function (its type is {type(namespace[name]).__name__})")
        found.append(namespace[name])
    return found


# ---- running calls --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCall:
    """One ``function_call`` of the model: what ``confirm`` is shown."""

    call_id: str
    name: str
    arguments: str  # JSON text, as the model wrote it

    @property
    def parsed_arguments(self) -> Any:
        """The arguments as a dict (the raw text when they are not valid JSON)."""
        try:
            return json.loads(self.arguments or "{}")
        except ValueError:
            return self.arguments

    def __str__(self) -> str:
        arguments = self.parsed_arguments
        shown = ", ".join(f"{k}={v!r}" for k, v in arguments.items()) if isinstance(arguments, dict) else arguments
        return f"{self.name}({shown})"


@dataclass(frozen=True)
class ToolResult:
    """A call and what it gave: ``output`` goes back to the model; ``error`` is set when it failed."""

    call: ToolCall
    output: str
    error: str | None = None
    note: str | None = None  # shown beside the call: "not run again: already done for this call"

    def as_item(self) -> dict[str, str]:
        return {"type": "function_call_output", "call_id": self.call.call_id, "output": self.output}

    def as_dict(self) -> dict[str, Any]:
        shown = {
            "name": self.call.name,
            "arguments": self.call.parsed_arguments,
            "output": self.output,
            "error": self.error,
            "call_id": self.call.call_id,
        }
        return {**shown, "note": self.note} if self.note else shown


def output_text(value: Any) -> str:
    """What a tool's return value reads as for the model (JSON where it can be), at most ``MAX_OUTPUT_CHARS``."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, pydantic.BaseModel):
        text = value.model_dump_json()
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        text = json.dumps(dataclasses.asdict(value), ensure_ascii=False, default=str)
    elif value is None or isinstance(value, (bool, int, float, list, tuple, dict)):
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = preview(value)
    else:
        text = preview(value)  # DataFrames as a bounded Markdown preview, anything else as str()
    if len(text) > MAX_OUTPUT_CHARS:
        text = f"{text[:MAX_OUTPUT_CHARS]}\n[… {len(text) - MAX_OUTPUT_CHARS:,} more characters cut]"
    return text


def ask_before_running(call: ToolCall, *, ask: Callable[[str], str] = input) -> bool:
    """A ``confirm`` that asks on stdin (a Jupyter input box): "Run get_weather(city='Paris')? [y/N]"."""
    return ask(f"Run {call}? [y/N] ").strip().lower() in ("y", "yes")


class Toolbox:
    """The tools of one ask: functions by name, and the specs sent.

    ``tools`` holds functions, ``FunctionTool`` objects, or tool dicts passed on as they are
    (e.g. ``{"type": "web_search"}``; a function tool given as a dict has no Python function here).
    """

    def __init__(self, tools: Any, *, ledger: Callable[[], ToolLedger] | None = None) -> None:
        # The record of side-effecting calls (the session's, in the data folder); this toolbox's own otherwise.
        self._ledger = ledger or functools.cache(ToolLedger)
        if callable(tools) or isinstance(tools, (Mapping, FunctionTool)):
            tools = [tools]
        self.functions: dict[str, FunctionTool] = {}
        specs: list[dict[str, Any]] = []
        for tool in tools:
            if isinstance(tool, Mapping):
                specs.append(dict(tool))
                continue
            if not isinstance(tool, FunctionTool):
                if not callable(tool):
                    raise UsageError(f"a tool must be a function or a tool dict, not {type(tool).__name__}")
                tool = FunctionTool.from_function(tool)
            if tool.name in self.functions:
                raise UsageError(
                    f"two tools are named {tool.name!r}; name one otherwise (FunctionTool.from_function(f, name=...))"
                )
            self.functions[tool.name] = tool
            specs.append(tool.spec)
        self.specs = tuple(specs)

    def run(
        self,
        call: ToolCall,
        *,
        confirm: Callable[[ToolCall], bool] | None = None,
        run_async: Callable[[Any], Any] = asyncio.run,
    ) -> ToolResult:
        """Run one call; any failure becomes an ``"Error: ..."`` output for the model, never an exception."""
        tool = self.functions.get(call.name)
        if tool is None:
            known = ", ".join(self.functions) or "none"
            return ToolResult(call, f"Error: there is no tool named {call.name!r} (tools: {known}).", "unknown tool")
        if tool.side_effects:
            return self._run_once(tool, call, confirm, run_async)
        if confirm is not None and not confirm(call):
            return ToolResult(call, DECLINED, "declined by the user")
        return _invoke(tool, call, run_async)

    def _run_once(
        self, tool: FunctionTool, call: ToolCall, confirm: Callable[[ToolCall], bool] | None, run_async: Any
    ) -> ToolResult:
        """Run a side-effecting call unless its ``call_id`` ran before: then its kept output goes back instead."""
        ledger = self._ledger()
        try:
            earlier = ledger.claim(call.call_id, tool.name, call.arguments)
        except (sqlite3.Error, OSError) as exc:
            return _failed(call, f"not run: {tool.name} has side effects and its call could not be recorded ({exc})")
        if earlier is not None:
            if earlier.finished:
                return ToolResult(call, earlier.output or "", earlier.error, note=ALREADY_DONE)
            return ToolResult(call, f"Error: {STARTED_BEFORE}.", STARTED_BEFORE, note=STARTED_BEFORE)
        if confirm is not None and not confirm(call):
            ledger.release(call.call_id, tool.name)
            return ToolResult(call, DECLINED, "declined by the user")
        result = _invoke(tool, call, run_async)
        ledger.finish(call.call_id, tool.name, result.output, result.error)
        return result


def _invoke(tool: FunctionTool, call: ToolCall, run_async: Any) -> ToolResult:
    """Call ``tool`` with the call's arguments; any failure becomes an ``"Error: ..."`` output for the model."""
    try:
        value = tool.invoke(call.arguments)
        if inspect.isawaitable(value):
            value = run_async(value)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, error['loc'])) or 'arguments'}: {error['msg']}" for error in exc.errors()[:5]
        )
        output = f"Error: invalid arguments for {call.name}: {problems}"
        return ToolResult(call, output, f"invalid arguments: {problems}")
    except Exception as exc:  # the model reads the error and may try again; the turn goes on
        return _failed(call, _described(exc))
    try:
        return ToolResult(call, output_text(value))
    except Exception as exc:  # a numpy array in a model, an object holding a lock, a __str__ that raises
        return _failed(call, f"its result could not be read as text ({_described(exc)})")


def _described(exc: BaseException) -> str:
    """``"ValueError: message"``, even for an exception whose ``str()`` raises."""
    try:
        detail = str(exc)
    except Exception:
        detail = "(its message could not be read)"
    return f"{type(exc).__name__}: {detail}"


def _failed(call: ToolCall, why: str) -> ToolResult:
    """A call that failed: the model reads ``Error: why`` and may try again; the turn goes on."""
    return ToolResult(call, f"Error: {why}", why)


# ---- the loop ---------------------------------------------------------------------------------------


def _function_calls(response: Any) -> list[ToolCall]:
    return [
        ToolCall(item["call_id"], item["name"], item.get("arguments", ""))
        for item in output_items(response)
        if item.get("type") == "function_call"
    ]


def _replayable(response: Any) -> tuple[dict, ...]:
    # A reasoning item can only be sent back with its encrypted content (or by a server that stored it).
    return tuple(i for i in output_items(response) if i.get("type") != "reasoning" or i.get("encrypted_content"))


def _next_params(
    params: Mapping[str, Any], response: Any, response_id: str | None, results: list[ToolResult], wrap_up: bool
) -> dict[str, Any]:
    """The request that sends ``results`` back: chained on the response, or after the replayed items."""
    following = {key: value for key, value in params.items() if key not in ("input", "previous_response_id")}
    outputs = [result.as_item() for result in results]
    if params.get("conversation"):  # the conversation holds the calls: only their results go
        following["input"] = outputs
    elif params.get("store", True):
        following.update(previous_response_id=response_id, input=outputs)
    else:
        following["input"] = [*params["input"], *_replayable(response), *outputs]
    if wrap_up:
        following["tool_choice"] = "none"
    return following


def _not_run(call: ToolCall, max_tool_rounds: int) -> ToolResult:
    rounds = f"{max_tool_rounds} tool round{'s' if max_tool_rounds != 1 else ''}"
    output = f"Not run: this turn reached its limit of {rounds}. Answer with what you have."
    return ToolResult(call, output, f"not run (max_tool_rounds={max_tool_rounds})")


def _tell(sink: Any, results: list[ToolResult]) -> None:
    notify = getattr(sink, "tool_call", None)
    if notify is not None:
        for result in results:
            output = f"[{result.note}] {result.output}" if result.note else result.output
            notify(result.call.name, result.call.parsed_arguments, output)


def run_with_tools(
    services: TurnServices,
    prepared: PreparedAsk,
    toolbox: Toolbox,
    sink: AskSink | None = None,
    *,
    max_tool_rounds: int = DEFAULT_MAX_TOOL_ROUNDS,
    confirm: Callable[[ToolCall], bool] | None = None,
) -> Answer:
    """Ask ``prepared`` and run the model's function calls until it answers (see the module docstring).

    Each round is in the ledger as soon as its response has ended, before any tool runs: a tool
    that never returns, or the stop button while it runs, leaves every billed round recorded (the
    sink then gets the partial answer, and ``KeyboardInterrupt`` is raised again).

    Parameters
    ----------
    services, prepared
        The session's services and the prepared ask (its ``tools`` include ``toolbox.specs``).
    toolbox
        The functions the calls run.
    sink
        Gets the streamed text, ``tool_call(name, arguments, output)`` after each call (if it has
        that method), and the final answer.
    max_tool_rounds
        How many rounds of calls run before the model must answer without tools.
    confirm
        ``confirm(call) -> bool`` before each call; a declined call tells the model so.
    """
    if max_tool_rounds < 0:
        raise UsageError("max_tool_rounds must be 0 or more")
    with holding(services, prepared) as prepared:
        recorder = start(services, prepared, sink)
        params: Mapping[str, Any] = prepared.params
        kind, rounds_run = "ask", 0
        while True:
            if kind == "ask":  # the turn's first request: the chain it is sent on may be gone from the server
                sent, prepared = send_first(recorder, prepared)
                params = prepared.params
            else:
                sent = send(recorder, prepared, params, kind=kind)
            state = sent.state
            calls = _function_calls(state.final)
            if not calls or params.get("tool_choice") == "none":
                return recorder.finish(state, sent.started, attempt=sent.attempt, kind=kind)
            done = recorder.round(state, sent.started, kind=kind, attempt=sent.attempt)  # billed: recorded first
            capped = rounds_run >= max_tool_rounds
            if capped:
                results = [_not_run(call, max_tool_rounds) for call in calls]
            else:
                try:
                    results = [toolbox.run(call, confirm=confirm, run_async=services.loop.run) for call in calls]
                except KeyboardInterrupt:  # the round is in the ledger; the sink gets what the turn said so far
                    recorder.finish(state, sent.started, attempt=sent.attempt, kind=kind, interrupted=True)
                rounds_run += 1
            _tell(recorder.sink, results)
            names = ", ".join(call.name for call in calls)
            stopped = f"tool rounds capped at max_tool_rounds={max_tool_rounds}; not run: {names}" if capped else None
            recorder.carry(
                state,
                sent.started,
                done,
                items=(*_replayable(state.final), *(result.as_item() for result in results)),
                tool_calls=tuple(result.as_dict() for result in results),
                stopped=stopped,
            )
            params = _next_params(params, state.final, state.response_id, results, wrap_up=capped)
            services.ledger.check_budget(prepared.model, done.usage.input + done.usage.output)
            kind = "tool"
