"""Function tools: schemas from signatures, and the tool loop against the local server."""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import threading
import typing
from typing import Any, Literal

import pydantic
import pytest

import nbopenai
from nbopenai._turns._tools import (
    DECLINED,
    FunctionTool,
    Toolbox,
    ToolCall,
    function_tool,
    output_text,
    parse_docstring,
    tools_from_namespace,
)


def bodies(server):
    return [r.body for r in server.requests if r.path == "/v1/responses" and r.method == "POST"]


def get_weather(city: str) -> str:
    """The weather now.

    Parameters
    ----------
    city : str
        A city name, e.g. "Paris".
    """
    return f"sunny in {city}, 21 C"


def get_time(zone: str) -> str:
    """The local time.

    Args:
        zone (str): An IANA time zone
            such as Europe/Paris.
    """
    return f"12:00 in {zone}"


# ---- schemas ---------------------------------------------------------------------------------------


class Unit(enum.Enum):
    C = "C"
    F = "F"


class Place(pydantic.BaseModel):
    city: str
    country: str | None = None


def forecast(
    place: Place,
    days: int,
    unit: Literal["C", "F"] = "C",
    scale: Unit = Unit.C,
    hours: list[int] | None = None,
    detailed: bool = False,
    margin: float = 0.5,
) -> str:
    """A forecast for a place.

    Parameters
    ----------
    place : Place
        Where.
    days : int
        How many days
        ahead.
    """
    return "fine"


def test_a_typed_function_becomes_a_strict_tool():
    tool = function_tool(forecast)
    assert tool["type"] == "function" and tool["name"] == "forecast" and tool["strict"] is True
    assert tool["description"] == "A forecast for a place."
    schema = tool["parameters"]
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["place", "days", "unit", "scale", "hours", "detailed", "margin"]
    props = schema["properties"]
    assert props["days"] == {"type": "integer", "description": "How many days ahead."}
    assert {"type": "null"} in props["unit"]["anyOf"]  # a default: null means "use it"
    assert {"enum": ["C", "F"], "type": "string"} in props["unit"]["anyOf"]
    assert "(null: the default, 'C')" in props["unit"]["description"]
    assert {"type": "null"} in props["hours"]["anyOf"] and "null: the default" not in props["hours"].get(
        "description", ""
    )
    nested = schema["$defs"]["Place"]
    assert nested["additionalProperties"] is False and nested["required"] == ["city", "country"]
    assert not {"title", "default"} & set(_keys(schema))  # no generated titles, no defaults in strict mode


def _keys(node):
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _keys(value)
    elif isinstance(node, list):
        for value in node:
            yield from _keys(value)


def takes_kwargs(query: str, **options: Any) -> str:
    return query


def takes_a_dict(mapping: dict[str, int]) -> int:
    return len(mapping)


def untyped(x, y: int = 1):
    return x


@pytest.mark.parametrize(
    ("function", "says"),
    [(takes_kwargs, "**options"), (takes_a_dict, "dict[...]"), (untyped, "parameter 'x' has no type hint")],
)
def test_types_strict_mode_cannot_take_give_a_non_strict_tool_with_the_reason(function, says):
    tool = FunctionTool.from_function(function)
    assert tool.strict is False and says in tool.not_strict
    assert tool.spec["strict"] is False


def test_a_hint_that_cannot_be_evaluated_gives_a_non_strict_tool_that_says_so():
    class Local(pydantic.BaseModel):  # with postponed annotations, a class inside a function is not found
        x: int

    def uses_local(item: Local, n: int) -> int:
        return n

    tool = FunctionTool.from_function(uses_local)
    assert tool.strict is False and "parameter 'item': its type hint 'Local' could not be evaluated" in tool.not_strict
    assert tool.spec["parameters"]["properties"]["n"]["type"] == "integer"


def test_strict_true_refuses_what_cannot_be_strict_and_false_is_respected():
    with pytest.raises(nbopenai.SchemaError, match=r"\*\*options"):
        function_tool(takes_kwargs, strict=True)
    assert function_tool(get_weather, strict=False)["strict"] is False


def test_google_and_numpy_docstrings_give_parameter_descriptions():
    assert function_tool(get_time)["parameters"]["properties"]["zone"]["description"] == (
        "An IANA time zone such as Europe/Paris."
    )
    assert parse_docstring(get_weather.__doc__) == ("The weather now.", {"city": 'A city name, e.g. "Paris".'})


class Opaque:
    pass


def takes_opaque(thing: Opaque) -> None:
    pass


def test_names_and_types_a_tool_cannot_have_are_refused():
    with pytest.raises(nbopenai.UsageError, match="cannot be a tool name"):
        function_tool(lambda x: x)
    with pytest.raises(nbopenai.UsageError, match="cannot come from JSON"):
        function_tool(takes_opaque)


def test_invoke_validates_arguments_and_null_means_the_default():
    seen = {}

    def record(place: Place, days: int, unit: Literal["C", "F"] = "F", hours: list[int] | None = None) -> str:
        seen.update(place=place, days=days, unit=unit, hours=hours)
        return "ok"

    tool = FunctionTool.from_function(record)
    tool.invoke(json.dumps({"place": {"city": "Oslo", "country": None}, "days": "3", "unit": None, "hours": None}))
    assert seen == {"place": Place(city="Oslo"), "days": 3, "unit": "F", "hours": None}
    with pytest.raises(pydantic.ValidationError):
        tool.invoke('{"place": {"city": "Oslo"}, "days": 1, "unit": "K", "hours": null}')


def test_positional_only_parameters_and_partials_are_called_correctly():
    def scale(value: float, /, factor: float = 2.0) -> float:
        return value * factor

    assert FunctionTool.from_function(scale).invoke('{"value": 3, "factor": null}') == 6.0
    half = FunctionTool.from_function(functools.partial(scale, factor=0.5))
    assert half.name == "scale" and half.invoke('{"value": 3, "factor": null}') == 1.5


def test_a_failing_call_becomes_error_text_never_an_exception():
    def divide(a: float, b: float) -> float:
        return a / b

    box = Toolbox([divide])
    ok = box.run(ToolCall("c1", "divide", '{"a": 1, "b": 4}'))
    assert ok.output == "0.25" and ok.error is None
    failed = box.run(ToolCall("c2", "divide", '{"a": 1, "b": 0}'))
    assert failed.output == "Error: ZeroDivisionError: float division by zero"
    assert box.run(ToolCall("c3", "divide", '{"a": 1}')).output.startswith("Error: invalid arguments for divide: b:")
    assert box.run(ToolCall("c4", "nope", "{}")).output.startswith("Error: there is no tool named 'nope'")
    assert box.run(ToolCall("c5", "divide", '{"a": 1, "b": 2}'), confirm=lambda call: False).output == DECLINED


def test_outputs_are_json_where_they_can_be_and_bounded():
    assert output_text({"temp": 21}) == '{"temp": 21}'
    assert output_text(Place(city="Oslo")) == '{"city":"Oslo","country":null}'
    assert output_text(None) == "null"
    long = output_text("x" * 30_000)
    assert len(long) < 20_100 and long.endswith("[… 10,000 more characters cut]")


def test_toolbox_refuses_two_tools_with_one_name_and_passes_dicts_through():
    with pytest.raises(nbopenai.UsageError, match="two tools are named"):
        Toolbox([get_weather, get_weather])
    box = Toolbox([get_weather, {"type": "web_search"}])
    assert [spec["type"] for spec in box.specs] == ["function", "web_search"] and list(box.functions) == ["get_weather"]


# ---- the loop, end to end --------------------------------------------------------------------------


class Recorder:
    def __init__(self):
        self.calls, self.answers = [], []

    def started(self, model, thread, notice):
        pass

    def text(self, delta, state):
        pass

    def tool_call(self, name, arguments, output):
        self.calls.append((name, arguments, output))

    def finished(self, answer):
        self.answers.append(answer)


def test_two_tools_called_in_parallel_send_matching_outputs_and_make_one_turn(local_server, make):
    session = make()
    sink = Recorder()
    answer = session.ask("use get_weather and get_time for Paris", tools=[get_weather, get_time], sink=sink)
    first, second = bodies(local_server)
    assert [tool["name"] for tool in first["tools"]] == ["get_weather", "get_time"]
    calls = answer.tool_calls
    assert [call["name"] for call in calls] == ["get_weather", "get_time"]
    # The second request answers each of the first response's calls by its call_id, chained on it.
    first_response = session.client.responses.retrieve(session.usage()["response_id"].iloc[0])
    asked = [item.call_id for item in first_response.output if item.type == "function_call"]
    assert len(asked) == 2 and second["previous_response_id"] == first_response.id
    assert [item["type"] for item in second["input"]] == ["function_call_output", "function_call_output"]
    assert [item["call_id"] for item in second["input"]] == asked == [call["call_id"] for call in calls]
    assert [item["output"] for item in second["input"]] == ["sunny in Paris, 21 C", calls[1]["output"]]
    assert calls[1]["output"].startswith("12:00 in ")
    assert "get_weather returned: sunny in Paris, 21 C" in answer.text and "get_time returned: 12:00" in answer.text
    assert answer.status == "completed" and answer.error is None
    # One ledger row per request; the answer's usage covers both.
    rows = session.usage()
    assert list(rows["kind"]) == ["ask", "tool"] and list(rows["status"]) == ["completed", "completed"]
    assert answer.usage.input == rows["input_tokens"].sum() and answer.usage.output == rows["output_tokens"].sum()
    # One turn; its head is the final response.
    thread = session.threads.get()
    assert len(thread.turns) == 1 and thread.head == answer.response_id == rows["response_id"].iloc[1]
    assert [name for name, _, _ in sink.calls] == ["get_weather", "get_time"]
    assert sink.calls[0][1] == {"city": "Paris"} and sink.answers == [answer]
    assert "<details><summary>2 tool calls</summary>" in answer.mime_bundle()["text/markdown"]


def test_a_raising_tool_sends_its_error_back_and_the_turn_completes(local_server, make):
    def get_weather(city: str) -> str:
        raise ValueError(f"no weather station in {city}")

    session = make()
    answer = session.ask("use get_weather for Paris", tools=[get_weather])
    sent = bodies(local_server)[1]["input"][0]
    assert sent["output"] == "Error: ValueError: no weather station in Paris"
    assert answer.status == "completed" and "Error: ValueError: no weather station in Paris" in answer.text
    assert answer.tool_calls[0]["error"] == "ValueError: no weather station in Paris"
    assert len(session.threads.get().turns) == 1


def test_the_round_cap_answers_calls_not_run_and_marks_the_answer(local_server, make):
    ran = []

    def get_weather(city: str) -> str:
        ran.append(city)
        return "sunny"

    session = make()
    answer = session.ask("use get_weather for Paris", tools=[get_weather], max_tool_rounds=0)
    assert ran == []
    first, second = bodies(local_server)
    assert "tool_choice" not in first and second["tool_choice"] == "none"
    assert second["input"][0]["output"].startswith("Not run: this turn reached its limit of 0 tool rounds")
    assert answer.status == "incomplete"
    assert answer.error == "tool rounds capped at max_tool_rounds=0; not run: get_weather"
    assert "[incomplete: tool rounds capped" in answer.status_line()
    assert session.threads.get().head == answer.response_id  # the thread stays usable
    follow_up = session.ask("Thanks. What is my name?")
    assert bodies(local_server)[-1]["previous_response_id"] == answer.response_id and follow_up.status == "completed"


def test_one_round_is_enough_when_the_model_answers_after_it(local_server, make):
    session = make()
    answer = session.ask("use get_weather for Paris", tools=[get_weather], max_tool_rounds=1)
    assert answer.status == "completed" and len(bodies(local_server)) == 2


def test_confirm_can_decline_a_call_and_the_model_is_told(local_server, make):
    session = make()
    asked = []

    def confirm(call):
        asked.append(str(call))
        return call.name == "get_weather"

    answer = session.ask("use get_weather and get_time for Paris", tools=[get_weather, get_time], confirm=confirm)
    assert asked[0] == "get_weather(city='Paris')" and asked[1].startswith("get_time(zone=")
    outputs = [item["output"] for item in bodies(local_server)[1]["input"]]
    assert outputs == ["sunny in Paris, 21 C", DECLINED]
    assert answer.tool_calls[1]["error"] == "declined by the user"


def test_store_false_replays_calls_and_outputs_within_the_turn_and_after_it(local_server, make):
    session = make(store=False)
    session.ask("use get_weather for Paris", tools=[get_weather])
    first, second = bodies(local_server)
    assert "previous_response_id" not in second
    assert [item.get("type", "message") for item in second["input"]] == [
        "message",
        "function_call",
        "function_call_output",
    ]
    assert second["input"][1]["call_id"] == second["input"][2]["call_id"]
    session.ask("And what did it say?")
    third = bodies(local_server)[-1]
    kinds = [item.get("type") or item["role"] for item in third["input"]]
    assert kinds == ["user", "function_call", "function_call_output", "assistant", "user"]


def test_rerunning_a_tool_cell_replaces_its_one_turn(local_server, make):
    session = make()
    session.ask("My name is Ada.", cell_id="c1")
    session.ask("use get_weather for Paris", tools=[get_weather], cell_id="c2")
    again = session.ask("use get_weather for Oslo", tools=[get_weather], cell_id="c2")
    thread = session.threads.get()
    assert len(thread.turns) == 2 and thread.head == again.response_id and again.turn == 2
    assert "Oslo" in again.tool_calls[0]["output"]


def test_tools_in_a_dry_run_are_specs_and_nothing_is_sent(local_server, make):
    session = make()
    prepared = session.prepare("use get_weather for Paris", tools=[get_weather])
    assert prepared.params["tools"] == [function_tool(get_weather)]
    assert local_server.requests == []


def test_module_level_ask_takes_tools(local_server, make):
    session = make()
    answer = nbopenai.ask("use get_weather for Paris", tools=[get_weather], session=session)
    assert answer.tool_calls[0]["output"] == "sunny in Paris, 21 C"


def test_an_async_tool_runs_on_the_sessions_loop(local_server, make):
    async def get_weather(city: str) -> dict:
        return {"city": city, "sky": "clear"}

    answer = make().ask("use get_weather for Paris", tools=[get_weather])
    assert answer.tool_calls[0]["output"] == '{"city": "Paris", "sky": "clear"}'


def test_function_tools_cannot_run_in_a_background_job(local_server, make):
    with pytest.raises(nbopenai.UsageError, match="drop --background"):
        make().submit("use get_weather for Paris", tools=[get_weather])
    assert local_server.requests == []


def test_tools_named_on_the_magic_line_come_from_the_namespace():
    namespace = {"get_weather": get_weather, "get_time": get_time, "x": 3}
    assert tools_from_namespace("get_weather,get_time", namespace) == [get_weather, get_time]
    assert tools_from_namespace(["get_weather", "get_time"], namespace) == [get_weather, get_time]
    with pytest.raises(nbopenai.UsageError, match="there is no 'nope' in the notebook"):
        tools_from_namespace("get_weather,nope", namespace)
    with pytest.raises(nbopenai.UsageError, match=r"'x' is not a function \(its type is int\)"):
        tools_from_namespace("x", namespace)


def test_a_model_that_keeps_calling_is_stopped_at_the_cap_after_real_rounds(local_server, make):
    ran = []

    def lookup(term: str) -> str:
        ran.append(term)
        return "not found yet, call lookup again"  # the demo model calls a tool its output names

    session = make()
    answer = session.ask("use lookup for Paris", tools=[lookup], max_tool_rounds=2)
    assert len(ran) == 2  # two real rounds ran
    sent = bodies(local_server)
    assert len(sent) == 4 and sent[-1]["tool_choice"] == "none"
    assert answer.status == "incomplete" and "max_tool_rounds=2" in answer.error
    assert len(session.usage()) == 4  # every round is in the ledger


# ---- every billed round is recorded, whatever a tool does (issue 14 item 7) -------------------------


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text for you")

    __repr__ = __str__


@dataclasses.dataclass
class _HoldsALock:
    lock: typing.Any


class _Carrier(pydantic.BaseModel):
    data: typing.Any


@pytest.mark.parametrize(
    "make_value, says",
    [
        (lambda: _Carrier(data=__import__("numpy").arange(3)), "PydanticSerializationError"),
        (lambda: _HoldsALock(threading.Lock()), "TypeError"),
        (lambda: _Unprintable(), "RuntimeError: no text for you"),
    ],
    ids=["numpy-in-a-model", "a-lock", "str-raises"],
)
def test_a_result_that_does_not_serialise_goes_back_as_an_error(local_server, make, make_value, says):
    def get_weather(city: str) -> typing.Any:
        return make_value()

    session = make()
    answer = session.ask("use get_weather for Paris", tools=[get_weather])
    sent = bodies(local_server)[1]["input"][0]["output"]
    assert sent.startswith("Error: its result could not be read as text (") and says in sent
    assert answer.status == "completed" and answer.tool_calls[0]["error"].startswith("its result could not")
    assert list(session.usage()["kind"]) == ["ask", "tool"]


def test_an_exception_whose_message_raises_still_goes_back_as_an_error():
    class Odd(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    def broken() -> str:
        raise Odd()

    assert Toolbox([broken]).run(ToolCall("c", "broken", "{}")).output == "Error: Odd: (its message could not be read)"


def test_each_round_is_in_the_ledger_before_its_tools_run(local_server, make):
    session = make()
    seen = []

    def get_weather(city: str) -> str:
        rows = session.usage()
        seen.append((list(rows["kind"]), list(rows["status"])))
        return "sunny"

    session.ask("use get_weather for Paris", tools=[get_weather])
    assert seen == [(["ask"], ["completed"])]


def test_the_stop_button_while_a_tool_runs_leaves_every_billed_round_recorded(local_server, make):
    session = make()
    sink = Recorder()

    def get_weather(city: str) -> str:
        raise KeyboardInterrupt  # what Jupyter's stop button raises in the running code

    with pytest.raises(KeyboardInterrupt):
        session.ask("use get_weather for Paris", tools=[get_weather], sink=sink)
    rows = session.usage()
    assert list(rows["kind"]) == ["ask"] and list(rows["status"]) == ["completed"]
    assert rows["output_tokens"].iloc[0] > 0 and rows["response_id"].iloc[0]
    assert [answer.status for answer in sink.answers] == ["interrupted"]
    assert session.threads.get().turns == []  # an interrupted turn never moves the thread
