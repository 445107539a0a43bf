"""The offline server, driven by the real openai SDK over real HTTP to 127.0.0.1 (strict validation)."""

from __future__ import annotations

import base64
import datetime as dt
import enum
import gzip
import http.client
import json
import re
import socket
import subprocess
import sys
import time
import zlib
from typing import Literal

import httpx2
import jsonschema
import openai
import pytest
from openai import OpenAI
from openai.lib._parsing._responses import type_to_text_format_param
from pydantic import BaseModel

from benchmarks import server_memory
from nbopenai._core._tokens import count_tokens
from nbopenai.local import (
    FAULT_KINDS,
    MARKER,
    LocalServer,
    RemoteServer,
    SubprocessServer,
    generate,
    render_context,
    start,
    start_subprocess,
)
from nbopenai.local._faults import FAULTS, Fault, make_fault


@pytest.fixture(scope="module")
def server():
    with start() as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(server):
    server.reset()
    yield


@pytest.fixture
def client(server):
    with OpenAI(
        api_key="local", base_url=server.base_url, _strict_response_validation=True, max_retries=0, timeout=10
    ) as sdk:
        yield sdk


def _raw(server, method, path, **kwargs):
    with httpx2.Client(base_url=server.url, timeout=10) as http:
        return http.request(method, path, **kwargs)


# --- responses ------------------------------------------------------------------------------------


def test_create_plain_text_answer(client):
    raw = client.responses.with_raw_response.create(model="nbopenai-local", input="Hello there. How are you today?")
    response = raw.parse()
    assert raw.headers["x-request-id"].startswith("req_")
    assert response.status == "completed"
    assert response.model == "nbopenai-local"
    assert response.output_text.startswith(MARKER)
    assert "Hello there." in response.output_text
    usage = response.usage
    assert usage.input_tokens == count_tokens("user: Hello there. How are you today?\n")
    assert usage.output_tokens == count_tokens(response.output_text)
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.cached_tokens == 0
    assert usage.input_tokens_details.cache_write_tokens == 0
    assert usage.output_tokens_details.reasoning_tokens == 0


def test_the_model_is_echoed_and_reasoning_models_report_reasoning_tokens(client):
    response = client.responses.create(model="gpt-5-mini", input="hi", reasoning={"effort": "low"})
    assert response.model == "gpt-5-mini"
    assert response.usage.output_tokens_details.reasoning_tokens > 0
    assert (
        response.usage.output_tokens
        == count_tokens(response.output_text) + response.usage.output_tokens_details.reasoning_tokens
    )


def test_stream_event_sequence(client):
    events = list(client.responses.create(model="nbopenai-local", input="Tell me something nice.", stream=True))
    types = [e.type for e in events]
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[4 : 4 + len(deltas)] == ["response.output_text.delta"] * len(deltas)
    assert types[4 + len(deltas) :] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert len(deltas) > 5
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert all(d.logprobs == [] for d in deltas)
    final = events[-1].response
    assert "".join(d.delta for d in deltas) == final.output_text == events[-4].text
    assert events[-4].logprobs == []
    assert final.output[0].content[0].logprobs == []
    assert final.usage.input_tokens_details.cache_write_tokens == 0
    assert events[0].response.status == "in_progress" and events[0].response.usage is None


def test_raw_sse_framing_and_keep_alive(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    body = json.dumps({"model": "nbopenai-local", "input": "one two three", "stream": True})
    connection.request("POST", "/v1/responses", body=body, headers={"Content-Type": "application/json"})
    reply = connection.getresponse()
    assert reply.getheader("Content-Type").startswith("text/event-stream")
    assert reply.getheader("Transfer-Encoding") == "chunked"
    assert reply.getheader("x-request-id").startswith("req_")
    blocks = reply.read().decode().strip().split("\n\n")
    for block in blocks:
        event_line, data_line = block.split("\n")
        assert event_line == "event: " + json.loads(data_line[len("data: ") :])["type"]
    # The same connection serves the next request: keep-alive after a chunked stream.
    connection.request("GET", "/v1/models")
    assert connection.getresponse().status == 200
    connection.close()


def test_stream_helper_final_response(client):
    with client.responses.stream(model="nbopenai-local", input="Stream me a reply.") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert final.output_text == text
    assert final.status == "completed"


def test_chunk_size_and_long_answers(server, client):
    events = list(client.responses.create(model="nbopenai-local", input="go [[words:200]]", stream=True))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) == 200
    assert len("".join(deltas).split()) == 200
    server.configure(chunk_size=4)
    events = list(client.responses.create(model="nbopenai-local", input="go [[words:50]]", stream=True))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert all(len(d) <= 4 for d in deltas) and len(deltas) > 50


def test_chunk_delay_spaces_out_deltas(server, client):
    server.configure(chunk_delay=0.01)
    started = time.monotonic()
    events = list(client.responses.create(model="nbopenai-local", input="[[words:20]]", stream=True))
    assert len([e for e in events if e.type == "response.output_text.delta"]) == 20
    assert time.monotonic() - started >= 0.19


def test_answer_tokens_setting_makes_long_answers(server, client):
    server.configure(answer_tokens=300)
    response = client.responses.create(model="nbopenai-local", input="hi")
    assert len(response.output_text.split()) == 300


def test_previous_response_chain_recall_usage_and_caching(client, server):
    server.configure(cache_min_tokens=0, cache_block_tokens=1)  # any exact prefix is a hit
    first = client.responses.create(model="nbopenai-local", input="My name is Ada.")
    assert "your name is Ada" in first.output_text
    assert first.usage.input_tokens_details.cached_tokens == 0
    second = client.responses.create(model="nbopenai-local", input="What is my name?", previous_response_id=first.id)
    assert "Your name is Ada." in second.output_text
    assert second.previous_response_id == first.id
    prefix = f"user: My name is Ada.\nassistant: {first.output_text}\n"
    assert second.usage.input_tokens == count_tokens(prefix + "user: What is my name?\n")
    thread = [
        {"type": "message", "role": "user", "content": "My name is Ada."},
        {"type": "message", "role": "assistant", "content": first.output_text},
        {"type": "message", "role": "user", "content": "What is my name?"},
    ]
    assert second.usage.input_tokens == count_tokens(render_context(None, thread))
    # The previous response's whole input and output is the reused (cached) prefix.
    assert second.usage.input_tokens_details.cached_tokens == count_tokens(prefix) > 0
    third = client.responses.create(
        model="nbopenai-local", input="The capital of Ruritania is Strelsau.", previous_response_id=second.id
    )
    fourth = client.responses.create(
        model="nbopenai-local", input="What is the capital of Ruritania?", previous_response_id=third.id
    )
    assert "The capital of Ruritania is Strelsau." in fourth.output_text
    assert "turn 4" in fourth.output_text


def test_instructions_are_not_inherited_and_break_the_cached_prefix(client, server):
    server.configure(cache_min_tokens=0, cache_block_tokens=1)
    first = client.responses.create(model="nbopenai-local", input="My name is Ada.", instructions="Be brief.")
    same = client.responses.create(
        model="nbopenai-local", input="Hi", instructions="Be brief.", previous_response_id=first.id
    )
    prefix = f"developer: Be brief.\nuser: My name is Ada.\nassistant: {first.output_text}\n"
    assert same.usage.input_tokens == count_tokens(prefix + "user: Hi\n")
    assert same.usage.input_tokens_details.cached_tokens == count_tokens(prefix)
    dropped = client.responses.create(model="nbopenai-local", input="What is my name?", previous_response_id=first.id)
    assert dropped.instructions is None and "Your name is Ada." in dropped.output_text
    assert dropped.usage.input_tokens == count_tokens(
        f"user: My name is Ada.\nassistant: {first.output_text}\nuser: What is my name?\n"
    )
    assert dropped.usage.input_tokens_details.cached_tokens == 0  # the prefix changed at its first line


LONG = " ".join(f"word{i}" for i in range(700))  # about 1,900 tokens


def _cached(response) -> int:
    return response.usage.input_tokens_details.cached_tokens


def test_prompt_caching_follows_the_api_rule_by_content_from_1024_tokens_in_steps_of_128(client):
    short = [client.responses.create(model="nbopenai-local", input="Hello there") for _ in range(2)]
    assert [_cached(r) for r in short] == [0, 0]  # under 1,024 tokens: never cached
    first = client.responses.create(model="nbopenai-local", input=LONG)
    assert _cached(first) == 0
    # The same prompt again, sent whole (no previous_response_id): a hit, in blocks of 128.
    again = client.responses.create(model="nbopenai-local", input=LONG)
    tokens = again.usage.input_tokens
    assert tokens > 1024 and _cached(again) == 1024 + (tokens - 1024) // 128 * 128
    # Chained: the previous prompt and its answer were computed; the new question is not.
    chained = client.responses.create(model="nbopenai-local", input="What did I say?", previous_response_id=again.id)
    assert tokens < _cached(chained) <= chained.usage.input_tokens - 1 and (_cached(chained) - 1024) % 128 == 0
    # Different instructions change the start of the prompt: a miss.
    other = client.responses.create(model="nbopenai-local", input=LONG, instructions="Be brief.")
    assert _cached(other) == 0


def test_history_sent_again_is_cached_like_a_chain_and_counting_does_not_warm_the_cache(client):
    client.responses.input_tokens.count(model="nbopenai-local", input=LONG)
    first = client.responses.create(model="nbopenai-local", input=LONG)
    assert _cached(first) == 0  # counting tokens computed nothing
    follow_up = [
        {"role": "user", "content": LONG},
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "What did I say?"},
    ]
    chained = client.responses.create(model="nbopenai-local", input="What did I say?", previous_response_id=first.id)
    resent = client.responses.create(model="nbopenai-local", input=follow_up, store=False)
    assert _cached(resent) == _cached(chained) > 1024
    # By content, whichever route: Chat Completions sees the same prompt as already computed.
    chat = client.chat.completions.create(model="nbopenai-local", messages=[{"role": "user", "content": LONG}])
    assert (
        chat.usage.prompt_tokens_details.cached_tokens
        == _cached(client.responses.create(model="nbopenai-local", input=LONG))
        >= 1024
    )


def test_unknown_or_unstored_previous_response(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="nbopenai-local", input="hi", previous_response_id="resp_nope")
    assert caught.value.code == "previous_response_not_found"
    assert caught.value.param == "previous_response_id"
    unstored = client.responses.create(model="nbopenai-local", input="hi", store=False)
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="nbopenai-local", input="hi", previous_response_id=unstored.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)


def test_instructions_are_visible_in_the_answer(client):
    response = client.responses.create(model="nbopenai-local", input="Hello", instructions="Answer like a pirate.")
    assert response.output_text.startswith("Arr")
    assert "Answer like a pirate." in response.output_text
    assert response.usage.input_tokens == count_tokens("developer: Answer like a pirate.\nuser: Hello\n")


def test_word_count_and_code_answers(client):
    counted = client.responses.create(model="nbopenai-local", input="Count the words in: the quick brown fox jumps")
    assert "That text has 5 words." in counted.output_text
    code = client.responses.create(model="nbopenai-local", input="Write a Python function that reverses a string.")
    assert "```python\ndef " in code.output_text


def test_images_are_counted(client):
    pixel = "data:image/png;base64," + base64.b64encode(b"\x89PNG fake").decode()
    content = [
        {"type": "input_text", "text": "What is in these pictures?"},
        {"type": "input_image", "image_url": pixel},
        {"type": "input_image", "image_url": "https://example.com/cat.png"},
    ]
    response = client.responses.create(model="nbopenai-local", input=[{"role": "user", "content": content}])
    assert "I received 2 images." in response.output_text


def test_max_output_tokens_gives_incomplete(client):
    response = client.responses.create(model="nbopenai-local", input="Tell me a story.", max_output_tokens=16)
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 16
    events = list(
        client.responses.create(model="nbopenai-local", input="Tell me a story.", max_output_tokens=16, stream=True)
    )
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    assert "response.completed" not in [e.type for e in events]


def test_retrieve_input_items_and_delete(client):
    created = client.responses.create(
        model="nbopenai-local", input=[{"role": "user", "content": "first"}, {"role": "user", "content": "second"}]
    )
    assert client.responses.retrieve(created.id).output_text == created.output_text
    items = list(client.responses.input_items.list(created.id, order="asc"))
    assert [i.content[0].text for i in items] == ["first", "second"]
    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)


def test_background_goes_queued_to_completed(client):
    created = client.responses.create(model="nbopenai-local", input="Take your time.", background=True)
    assert created.status == "queued" and created.background is True
    deadline = time.monotonic() + 10
    seen = {created.status}
    while time.monotonic() < deadline:
        current = client.responses.retrieve(created.id)
        seen.add(current.status)
        if current.status == "completed":
            break
        time.sleep(0.01)
    assert current.status == "completed"
    assert current.output_text.startswith(MARKER)
    assert current.usage.output_tokens > 0


def test_background_cancel(server, client):
    server.configure(background_delay=30)
    created = client.responses.create(model="nbopenai-local", input="Never mind.", background=True)
    cancelled = client.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    assert client.responses.retrieve(created.id).status == "cancelled"
    done = client.responses.create(model="nbopenai-local", input="hi")
    with pytest.raises(openai.BadRequestError):
        client.responses.cancel(done.id)


def test_conversations(client, server):
    server.configure(cache_min_tokens=0, cache_block_tokens=1)
    conversation = client.conversations.create(metadata={"topic": "demo"})
    assert conversation.object == "conversation" and conversation.metadata == {"topic": "demo"}
    first = client.responses.create(model="nbopenai-local", input="My name is Grace.", conversation=conversation.id)
    assert first.conversation.id == conversation.id
    second = client.responses.create(
        model="nbopenai-local", input="What is my name?", conversation={"id": conversation.id}
    )
    assert "Your name is Grace." in second.output_text
    assert second.usage.input_tokens_details.cached_tokens > 0
    items = list(client.conversations.items.list(conversation.id, order="asc"))
    assert [i.type for i in items] == ["message"] * 4
    assert [i.role for i in items] == ["user", "assistant", "user", "assistant"]
    assert client.conversations.retrieve(conversation.id).id == conversation.id
    with pytest.raises(openai.BadRequestError):
        client.responses.create(
            model="nbopenai-local", input="x", conversation=conversation.id, previous_response_id=first.id
        )


def test_input_token_count(client):
    first = client.responses.create(model="nbopenai-local", input="My name is Ada.")
    counted = client.responses.input_tokens.count(
        model="nbopenai-local", input="What is my name?", previous_response_id=first.id
    )
    real = client.responses.create(model="nbopenai-local", input="What is my name?", previous_response_id=first.id)
    assert counted.input_tokens == real.usage.input_tokens


def test_compact_then_continue(client):
    first = client.responses.create(model="nbopenai-local", input="My name is Ada. My favourite colour is teal.")
    compacted = client.responses.compact(model="nbopenai-local", previous_response_id=first.id)
    assert compacted.object == "response.compaction"
    assert [item.type for item in compacted.output] == ["compaction"]
    assert compacted.usage.input_tokens > 0
    follow_up = [item.model_dump(exclude_none=True) for item in compacted.output]
    follow_up.append({"role": "user", "content": "What is my name? What is my favourite colour?"})
    answer = client.responses.create(model="nbopenai-local", input=follow_up)
    assert "Your name is Ada." in answer.output_text and "Your favourite colour is teal." in answer.output_text
    chained = client.responses.create(
        model="nbopenai-local", input="What is my name?", previous_response_id=compacted.id
    )
    assert "Your name is Ada." in chained.output_text


def test_models_list(client):
    ids = [m.id for m in client.models.list()]
    assert "nbopenai-local" in ids


def test_generate_for_batches(server):
    response = generate({"model": "nbopenai-local", "input": "My name is Ada."}, server.state)
    assert response["status"] == "completed" and response["usage"]["input_tokens"] > 0
    assert response["id"] in server.state.responses


# --- structured output ----------------------------------------------------------------------------


class Role(str, enum.Enum):
    engineer = "engineer"
    manager = "manager"
    data_scientist = "data_scientist"


class Address(BaseModel):
    city: str
    country: str | None


class Person(BaseModel):
    name: str
    email: str | None
    age: int
    role: Role
    born: dt.date
    address: Address
    nickname: str | None
    active: bool


class Team(BaseModel):
    team_name: str
    priority: Literal["low", "high"]
    members: list[Person]
    tags: list[str]


TEAM_TEXT = """Team name: Apollo. Priority is high.
Ada Lovelace is an engineer aged 36, born 10 December 1815, email ada@example.com, lives in London, England. She is active.
Grace Hopper is a manager, 85 years old, born 1906-12-09, in Arlington. She is not active.
"""  # noqa: E501 - one person a line, as pasted


def test_parse_structured_output(client):
    parsed = client.responses.parse(model="nbopenai-local", input=TEAM_TEXT, text_format=Team)
    team = parsed.output_parsed
    schema = type_to_text_format_param(Team)["schema"]
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(
        json.loads(parsed.output_text)
    )
    assert team.team_name == "Apollo" and team.priority == "high"
    assert [m.name for m in team.members] == ["Ada Lovelace", "Grace Hopper"]
    ada, grace = team.members
    assert (ada.age, ada.role, ada.born, ada.email, ada.active) == (
        36,
        Role.engineer,
        dt.date(1815, 12, 10),
        "ada@example.com",
        True,
    )
    assert ada.address.city == "London"
    assert ada.nickname is None
    assert (grace.age, grace.role, grace.born, grace.email, grace.active) == (
        85,
        Role.manager,
        dt.date(1906, 12, 9),
        None,
        False,
    )


def test_structured_output_streams_and_json_object(client):
    with client.responses.stream(
        model="nbopenai-local", input="Grace Hopper, manager, 85", text_format=Person
    ) as stream:
        final = stream.get_final_response()
    assert final.output_parsed.name == "Grace Hopper"
    response = client.responses.create(
        model="nbopenai-local", input="hello json", text={"format": {"type": "json_object"}}
    )
    assert json.loads(response.output_text)["answer"].startswith(MARKER)


# --- function tools -------------------------------------------------------------------------------

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
    "strict": True,
}
TIME = {
    "type": "function",
    "name": "get_time",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def test_parallel_function_calls_then_outputs(client):
    calls = client.responses.create(
        model="nbopenai-local",
        input="Use get_weather for Paris in fahrenheit and get_time for Tokyo.",
        tools=[WEATHER, TIME],
    )
    assert [item.type for item in calls.output] == ["function_call", "function_call"]
    weather, clock = calls.output
    assert (weather.name, json.loads(weather.arguments)) == ("get_weather", {"city": "Paris", "unit": "fahrenheit"})
    assert (clock.name, json.loads(clock.arguments)) == ("get_time", {"city": "Tokyo"})
    assert weather.call_id.startswith("call_") and calls.output_text == ""
    outputs = [
        {"type": "function_call_output", "call_id": weather.call_id, "output": "sunny, 75F"},
        {"type": "function_call_output", "call_id": clock.call_id, "output": "09:00"},
    ]
    answer = client.responses.create(
        model="nbopenai-local", input=outputs, previous_response_id=calls.id, tools=[WEATHER, TIME]
    )
    assert "get_weather returned: sunny, 75F" in answer.output_text
    assert "get_time returned: 09:00" in answer.output_text


def test_streamed_function_call_events(client):
    events = list(
        client.responses.create(model="nbopenai-local", input="use get_weather for Paris", tools=[WEATHER], stream=True)
    )
    types = [e.type for e in events]
    assert types[2] == "response.output_item.added" and events[2].item.type == "function_call"
    assert "response.function_call_arguments.delta" in types
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert json.loads(done.arguments)["city"] == "Paris"
    assert "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta") == done.arguments
    assert types[-2:] == ["response.output_item.done", "response.completed"]


def test_no_tool_named_means_text(client):
    response = client.responses.create(model="nbopenai-local", input="Just say hi.", tools=[WEATHER])
    assert response.output[0].type == "message"


# --- chat completions -----------------------------------------------------------------------------


def test_chat_completions_plain_and_stream(client):
    completion = client.chat.completions.create(
        model="nbopenai-local",
        messages=[{"role": "system", "content": "Be a pirate."}, {"role": "user", "content": "My name is Ada."}],
    )
    text = completion.choices[0].message.content
    assert MARKER in text and completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == count_tokens("developer: Be a pirate.\nuser: My name is Ada.\n")
    chunks = list(
        client.chat.completions.create(
            model="nbopenai-local",
            messages=[{"role": "user", "content": "My name is Ada."}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed.startswith(MARKER)
    assert chunks[-1].usage.completion_tokens == count_tokens(streamed)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER["parameters"]}}]
    called = client.chat.completions.create(
        model="nbopenai-local", messages=[{"role": "user", "content": "get_weather for Oslo"}], tools=tools
    )
    assert called.choices[0].finish_reason == "tool_calls"
    assert json.loads(called.choices[0].message.tool_calls[0].function.arguments)["city"] == "Oslo"


# --- faults ---------------------------------------------------------------------------------------


def test_rate_limit_with_retry_after_headers(server, client):
    server.inject("rate_limit", retry_after=2, retry_after_ms=1500)
    with pytest.raises(openai.RateLimitError) as caught:
        client.responses.create(model="nbopenai-local", input="hi")
    assert caught.value.status_code == 429
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.response.headers["retry-after"] == "2"
    assert caught.value.response.headers["retry-after-ms"] == "1500"
    assert caught.value.request_id.startswith("req_")
    assert [r.fault for r in server.requests] == ["rate_limit"]


def test_sdk_retries_through_injected_faults(server):
    server.inject("rate_limit", retry_after=None, retry_after_ms=10)
    server.inject("server_error", retry_after_ms=10)
    with OpenAI(api_key="local", base_url=server.base_url, _strict_response_validation=True, max_retries=2) as sdk:
        response = sdk.responses.create(model="nbopenai-local", input="hi")
    assert response.status == "completed"
    assert [r.fault for r in server.requests] == ["rate_limit", "server_error", None]
    assert [r.body["input"] for r in server.requests] == ["hi"] * 3


@pytest.mark.parametrize(
    ("kind", "error", "status"),
    [
        ("server_error", openai.InternalServerError, 500),
        ("unavailable", openai.InternalServerError, 503),
        ("unauthorized", openai.AuthenticationError, 401),
        ("context_length_exceeded", openai.BadRequestError, 400),
        ("bad_request", openai.BadRequestError, 400),
        ("midstream_error", openai.InternalServerError, 500),
    ],
)
def test_status_faults(server, client, kind, error, status):
    server.inject(kind)
    with pytest.raises(error) as caught:
        client.responses.create(model="nbopenai-local", input="hi")
    assert caught.value.status_code == status
    assert set(caught.value.body) == {"message", "type", "param", "code"}
    if kind == "context_length_exceeded":
        assert (caught.value.code, caught.value.param) == ("context_length_exceeded", "input")
    if kind == "unauthorized":
        assert caught.value.code == "invalid_api_key"
    assert client.responses.create(model="nbopenai-local", input="hi").status == "completed"


def test_fault_count_and_path(server, client):
    server.inject("server_error", count=2)
    server.inject("bad_request", path="/v1/chat/completions")
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            client.responses.create(model="nbopenai-local", input="hi")
    client.responses.create(model="nbopenai-local", input="hi")
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="nbopenai-local", messages=[{"role": "user", "content": "hi"}])


def test_fault_from_request_header(server, client):
    with pytest.raises(openai.RateLimitError) as caught:
        client.responses.create(
            model="nbopenai-local", input="hi", extra_headers={"x-nbopenai-fault": "rate_limit;retry_after=7"}
        )
    assert caught.value.response.headers["retry-after"] == "7"
    assert server.requests[-1].fault == "rate_limit"
    assert server.requests[-1].headers["x-nbopenai-fault"] == "rate_limit;retry_after=7"


def test_midstream_error_nested_raises_while_iterating(server, client):
    server.inject("midstream_error", after=3)
    stream = client.responses.create(model="nbopenai-local", input="Tell me a story.", stream=True)
    seen = []
    with pytest.raises(openai.APIError) as caught:
        for event in stream:
            seen.append(event.type)
    assert seen.count("response.output_text.delta") == 3
    assert caught.value.body["code"] == "server_error"
    assert not isinstance(caught.value, openai.APIStatusError)


def test_midstream_error_flat_is_yielded_then_failed(server, client):
    server.inject("midstream_error_flat", after=2)
    events = list(client.responses.create(model="nbopenai-local", input="Tell me a story.", stream=True))
    assert [e.type for e in events][-2:] == ["error", "response.failed"]
    assert events[-2].code == "server_error" and events[-2].message
    assert events[-1].response.status == "failed" and events[-1].response.error.code == "server_error"
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_drop_mid_stream_and_before_body(server, client):
    server.inject("drop", after=2)
    with pytest.raises(openai.APIConnectionError):
        for _ in client.responses.create(model="nbopenai-local", input="Tell me a story.", stream=True):
            pass
    server.inject("drop")
    with pytest.raises(openai.APIConnectionError):
        client.responses.create(model="nbopenai-local", input="hi")
    assert client.responses.create(model="nbopenai-local", input="still here?").status == "completed"


def test_slow_fault_times_out_the_client(server, client):
    server.inject("slow", delay=0.5)
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.1).responses.create(model="nbopenai-local", input="hi")
    assert time.monotonic() - started >= 0.1


def test_incomplete_fault(server, client):
    server.inject("incomplete", tokens=5)
    response = client.responses.create(model="nbopenai-local", input="Tell me a story.")
    assert response.status == "incomplete" and response.usage.output_tokens == 5


def test_latency_is_a_lower_bound(server, client):
    server.configure(latency=0.2)
    started = time.monotonic()
    client.responses.create(model="nbopenai-local", input="hi")
    assert time.monotonic() - started >= 0.2


def test_require_api_key(server):
    server.configure(require_api_key="sekret")
    with OpenAI(api_key="wrong", base_url=server.base_url, max_retries=0) as sdk:
        with pytest.raises(openai.AuthenticationError):
            sdk.responses.create(model="nbopenai-local", input="hi")
    with OpenAI(api_key="sekret", base_url=server.base_url, max_retries=0) as sdk:
        assert sdk.responses.create(model="nbopenai-local", input="hi").status == "completed"


def test_natural_context_length_exceeded(server, client):
    server.configure(context_window=20)
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="nbopenai-local", input="word " * 50)
    assert caught.value.code == "context_length_exceeded"


def test_random_faults_are_deterministic_for_a_seed(server, client):
    def run() -> list[str | None]:
        server.reset()
        server.configure(fault_rate=0.5, fault_kinds=["server_error", "rate_limit"], seed=7)
        for _ in range(12):
            try:
                client.responses.create(model="nbopenai-local", input="hi")
            except openai.APIStatusError:
                pass
        return [r.fault for r in server.requests]

    first = run()
    assert first == run()
    assert {"server_error", "rate_limit", None} <= set(first)


# --- HTTP robustness ------------------------------------------------------------------------------


def test_malformed_json(server):
    reply = _raw(server, "POST", "/v1/responses", content=b"{not json", headers={"Content-Type": "application/json"})
    assert reply.status_code == 400
    assert reply.headers["x-request-id"].startswith("req_")
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and set(error) == {"message", "type", "param", "code"}


def test_oversize_body(server):
    server.configure(max_body_bytes=1000)
    reply = _raw(server, "POST", "/v1/responses", json={"model": "nbopenai-local", "input": "x" * 5000})
    assert reply.status_code == 413
    assert reply.json()["error"]["code"] == "request_too_large"


def test_unknown_route_and_missing_model(server):
    reply = _raw(server, "GET", "/v1/nothing-here")
    assert reply.status_code == 404 and reply.json()["error"]["message"]
    reply = _raw(server, "POST", "/v1/responses", json={"input": "hi"})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "model"


def test_client_disconnect_mid_stream_then_server_still_serves(server, client):
    server.configure(chunk_delay=0.005)
    for _ in range(3):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        body = json.dumps({"model": "nbopenai-local", "input": "[[words:2000]]", "stream": True}).encode()
        sock.sendall(
            b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        assert sock.recv(1024).startswith(b"HTTP/1.1 200")
        sock.close()
    server.configure(chunk_delay=0.0)
    assert client.responses.create(model="nbopenai-local", input="still alive?").status == "completed"


def test_refuses_non_loopback_host():
    with pytest.raises(ValueError, match="allow_remote"):
        LocalServer(host="0.0.0.0")
    with pytest.raises(ValueError):
        start(host="192.0.2.1")


def test_recorded_requests(server, client):
    client.responses.create(model="nbopenai-local", input="record me", extra_headers={"X-Custom": "yes"})
    (recorded,) = server.requests
    assert (recorded.method, recorded.path, recorded.body["input"]) == ("POST", "/v1/responses", "record me")
    assert recorded.headers["x-custom"] == "yes" and recorded.raw_size > 0 and recorded.fault is None
    server.clear_requests()
    assert server.requests == []


def test_remote_control_over_admin_routes(server, client):
    remote = RemoteServer(server.base_url)
    remote.configure(chunk_size=3)
    remote.inject("unavailable")
    with pytest.raises(openai.InternalServerError):
        client.responses.create(model="nbopenai-local", input="hi")
    assert [r.fault for r in remote.requests] == ["unavailable"]
    assert remote.config["chunk_size"] == 3
    remote.reset()
    assert remote.requests == [] and server.config.chunk_size is None
    with pytest.raises(ValueError):
        remote.inject("no_such_fault")


def test_subprocess_server():
    with start_subprocess(chunk_size=5) as child:
        assert child.base_url.startswith("http://127.0.0.1:")
        with OpenAI(api_key="local", base_url=child.base_url, _strict_response_validation=True, max_retries=0) as sdk:
            events = list(sdk.responses.create(model="nbopenai-local", input="hello from the parent", stream=True))
            assert all(len(e.delta) <= 5 for e in events if e.type == "response.output_text.delta")
            child.inject("rate_limit")
            with pytest.raises(openai.RateLimitError):
                sdk.responses.create(model="nbopenai-local", input="hi")
        assert [r.fault for r in child.requests] == [None, "rate_limit"]
    assert child.process.poll() is not None


# --- rate limits, enforced as the API enforces them ----------------------------------------------

RATE_HEADERS = [
    f"x-ratelimit-{what}-{unit}" for unit in ("requests", "tokens") for what in ("limit", "remaining", "reset")
]
GO_DURATION = re.compile(r"^(\d+h)?(\d+m)?(\d+(\.\d+)?s|\d+ms)$")
TRY_AGAIN = re.compile(r"Please try again in (\d+h)?(\d+m)?(\d+(\.\d+)?s|\d+ms)\.")


def test_rate_limit_headers_are_on_every_response(server, client):
    server.configure(rpm=600, tpm=100_000)
    answers = [
        client.responses.with_raw_response.create(model="nbopenai-local", input="hi"),
        client.models.with_raw_response.list(),
        _raw(server, "GET", "/v1/responses/resp_missing"),
        _raw(server, "POST", "/v1/responses", content=b"{not json", headers={"content-type": "application/json"}),
    ]
    stream = client.responses.with_raw_response.create(model="nbopenai-local", input="hi", stream=True)
    answers.append(stream)
    for answer in answers:
        headers = answer.headers
        assert [name for name in RATE_HEADERS if name not in headers] == [], headers
        assert headers["x-ratelimit-limit-requests"] == "600" and headers["x-ratelimit-limit-tokens"] == "100000"
        assert GO_DURATION.match(headers["x-ratelimit-reset-requests"])
        assert GO_DURATION.match(headers["x-ratelimit-reset-tokens"])
    # The first request took one request: at most a little refilled since.
    assert int(answers[0].headers["x-ratelimit-remaining-requests"]) in (599, 600)
    server.configure(rpm=None, tpm=None)
    assert not [name for name in client.models.with_raw_response.list().headers if name.startswith("x-ratelimit-")]


def test_requests_over_the_rpm_get_the_apis_429_without_retry_after(server, client):
    # 6 a minute, spread over a 1 s window: one request now, the next in 10 s.
    server.configure(rpm=6)
    client.responses.create(model="nbopenai-local", input="hi")
    with pytest.raises(openai.RateLimitError) as caught:
        client.responses.create(model="gpt-4.1-mini", input="hi")
    error = caught.value
    assert (error.status_code, error.code, error.type, error.param) == (429, "rate_limit_exceeded", "requests", None)
    assert "retry-after" not in error.response.headers and "retry-after-ms" not in error.response.headers
    assert error.body["message"].startswith("Rate limit reached for gpt-4.1-mini in organization ")
    assert "on requests per min (RPM): Limit 6, Used 1, Requested 1." in error.body["message"]
    wait = TRY_AGAIN.search(error.body["message"])
    assert wait is not None and wait.group(1) is None and wait.group(2) is None  # under a minute: 10 s at most
    assert 0 < float(wait.group(3).rstrip("ms")) * (0.001 if wait.group(3).endswith("ms") else 1) <= 10
    assert error.response.headers["x-ratelimit-remaining-requests"] == "5"
    # The 429 cost nothing, is recorded as the `rate_limit` it is, and other routes are not limited.
    assert [r.fault for r in server.requests] == [None, "rate_limit"]
    assert client.responses.input_tokens.count(model="nbopenai-local", input="hi").input_tokens > 0


def test_chat_completions_share_the_limit(server, client):
    server.configure(rpm=6)
    client.chat.completions.create(model="nbopenai-local", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.RateLimitError):
        client.responses.create(model="nbopenai-local", input="hi")


def test_tokens_count_the_prompt_and_max_output_tokens(server, client):
    server.configure(tpm=2000, rate_limit_window=60)  # the whole minute at once: 2,000 tokens
    cost = count_tokens("user: Hello there\n") + 900
    ask = {"model": "nbopenai-local", "input": "Hello there", "max_output_tokens": 900}
    first = client.responses.with_raw_response.create(**ask)
    assert 2000 - cost <= int(first.headers["x-ratelimit-remaining-tokens"]) < 2000  # charged (refilled 33 a second)
    client.responses.create(model="nbopenai-local", input="Hello there", max_output_tokens=900)
    with pytest.raises(openai.RateLimitError) as caught:
        client.responses.create(model="nbopenai-local", input="Hello there", max_output_tokens=900)
    assert caught.value.type == "tokens" and "retry-after" not in caught.value.response.headers
    message = caught.value.body["message"]
    used = re.search(rf"on tokens per min \(TPM\): Limit 2000, Used (\d+), Requested {cost}\.", message)
    assert used is not None and cost < int(used.group(1)) <= 2 * cost  # less what refilled meanwhile
    assert TRY_AGAIN.search(message)
    # A request larger than the whole minute's allowance can never pass: the API says so.
    with pytest.raises(openai.RateLimitError) as too_large:
        client.responses.create(model="nbopenai-local", input="Hello there", max_output_tokens=5000)
    assert too_large.value.body["message"].startswith("Request too large for nbopenai-local")


def test_a_request_larger_than_the_window_passes_when_the_window_is_full(server, client):
    server.configure(tpm=60_000)  # 1,000 tokens a second
    assert client.responses.create(model="nbopenai-local", input="hi", max_output_tokens=3000).status == "completed"


def test_rate_limit_settings_are_checked(server):
    for bad in ({"rpm": 0}, {"tpm": -5}, {"rpm": 1.5}, {"rate_limit_window": 0}):
        with pytest.raises(ValueError):
            server.configure(**bad)


def test_command_line_rate_limits():
    command = [sys.executable, "-m", "nbopenai.local", "--port", "0", "--rpm", "6", "--tpm", "50000"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE)
    with SubprocessServer(process.stdout.readline().decode().strip(), process) as child:
        assert child.config["rpm"] == 6 and child.config["tpm"] == 50000
        with OpenAI(api_key="local", base_url=child.base_url, max_retries=0) as sdk:
            raw = sdk.responses.with_raw_response.create(model="nbopenai-local", input="hi")
            assert raw.headers["x-ratelimit-limit-requests"] == "6"
            assert raw.headers["x-ratelimit-limit-tokens"] == "50000"
            with pytest.raises(openai.RateLimitError):
                sdk.responses.create(model="nbopenai-local", input="hi")


# --- faults that send other bytes than the API's (issue 14) ---------------------------------------


def _raw_reply(server, body: dict, fault: str) -> bytes:
    """Everything the server sent for one request, read until it closed the connection."""
    data = json.dumps(body).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer sk-echo-me\r\nConnection: close\r\nx-nbopenai-fault: "
            + fault.encode()
            + b"\r\nContent-Length: "
            + str(len(data)).encode()
            + b"\r\n\r\n"
            + data
        )
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return received


def test_cut_body_claims_more_than_it_sends_and_the_response_was_made(server):
    head, _, body = _raw_reply(server, {"model": "nbopenai-local", "input": "hi"}, "cut_body").partition(b"\r\n\r\n")
    claimed = int(re.search(rb"Content-Length: (\d+)", head).group(1))
    assert head.startswith(b"HTTP/1.1 200") and 0 < len(body) < claimed
    assert [stored.response["status"] for stored in server.state.responses.values()] == ["completed"]


def test_corrupt_gzip_does_not_decompress(server, client):
    raw = _raw_reply(server, {"model": "nbopenai-local", "input": "hi"}, "corrupt_gzip")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Content-Encoding: gzip" in head and body[:2] == b"\x1f\x8b"
    with pytest.raises((OSError, EOFError, zlib.error)):  # a bad header, a cut stream, a bad deflate block
        gzip.decompress(body)


@pytest.mark.parametrize("kind", ["held_open", "held_open_pings"])
def test_a_stream_held_open_after_completed_then_cut(server, kind):
    body = {"model": "nbopenai-local", "input": "hi", "stream": True}
    raw = _raw_reply(server, body, f"{kind};hold=0.2;every=0.05")
    completed = raw.index(b"event: response.completed")
    after = raw[completed:].split(b"\n\n", 1)[1]
    assert b"event:" not in after and not raw.endswith(b"0\r\n\r\n")  # nothing more, and never properly ended
    assert (b": keep-alive" in after) == (kind == "held_open_pings")


def test_stream_ignored_answers_with_the_whole_response(server, client):
    raw = client.responses.with_raw_response.create(
        model="nbopenai-local", input="hi", stream=True, extra_headers={"x-nbopenai-fault": "stream_ignored"}
    )
    assert raw.headers["content-type"] == "application/json"
    assert json.loads(raw.http_response.read())["status"] == "completed"


def test_empty_usage(server, client):
    response = _raw(
        server,
        "POST",
        "/v1/responses",
        json={"model": "nbopenai-local", "input": "hi"},
        headers={"x-nbopenai-fault": "empty_usage"},
    ).json()
    assert response["status"] == "completed" and response["usage"] == {}


@pytest.mark.parametrize(
    ("kind", "content_type"), [("not_json_text", "text/plain"), ("not_json_binary", "application/octet-stream")]
)
def test_not_json_of_any_content_type(server, kind, content_type):
    answer = _raw(
        server,
        "POST",
        "/v1/responses",
        json={"model": "nbopenai-local", "input": "hi"},
        headers={"x-nbopenai-fault": kind},
    )
    assert answer.status_code == 200 and answer.headers["content-type"].startswith(content_type)
    assert server.state.responses == {}  # a stand-in answered: the API never ran


def test_a_proxy_echoes_the_authorization_header_into_every_error_shape(server):
    key = "sk-echo-me"
    error = _raw_reply(server, {"model": "nbopenai-local", "input": "hi"}, "echo_auth_error")
    assert error.startswith(b"HTTP/1.1 400") and key.encode() in error
    body = {"model": "nbopenai-local", "input": "Tell me a story."}
    streamed = _raw_reply(server, {**body, "stream": True}, "echo_auth_failed")
    events = [json.loads(line[6:]) for line in streamed.split(b"\n") if line.startswith(b"data: ")]
    flat, failed = events[-2], events[-1]
    assert flat["type"] == "error" and key in flat["message"]
    assert failed["type"] == "response.failed" and key in failed["response"]["error"]["message"]
    plain = json.loads(_raw_reply(server, body, "echo_auth_failed").partition(b"\r\n\r\n")[2])
    assert plain["status"] == "failed" and key in plain["error"]["message"]


def test_every_fault_kind_is_one_class_in_one_registry():
    assert list(FAULT_KINDS) == list(FAULTS) and all(issubclass(cls, Fault) and cls.summary for cls in FAULTS.values())
    assert make_fault("drop", {"after": 1}).stream_cut_after() == 1
    with pytest.raises(ValueError, match="unknown fault kind"):
        make_fault("meteor_strike")


# --- models: the demo model and OpenAI's; any other name is the API's 404 -------------------------


def test_an_unknown_model_gets_the_apis_404(server, client):
    for call in (
        lambda: client.responses.create(model="nonsense-model-xyz", input="hi"),
        lambda: client.responses.create(model="nonsense-model-xyz", input="hi", stream=True),
        lambda: client.chat.completions.create(
            model="nonsense-model-xyz", messages=[{"role": "user", "content": "hi"}]
        ),
        lambda: client.models.retrieve("nonsense-model-xyz"),
    ):
        with pytest.raises(openai.NotFoundError) as caught:
            call()
        assert caught.value.response.json() == {
            "error": {
                "message": "The model `nonsense-model-xyz` does not exist or you do not have access to it.",
                "type": "invalid_request_error",
                "param": None,
                "code": "model_not_found",
            }
        }
    assert server.state.responses == {}


def test_the_demo_model_openais_models_and_their_snapshots_are_answered(server, client):
    for model in ("nbopenai-local", "gpt-4.1", "o4-mini", "gpt-4.1-mini-2025-04-14", "gpt-4o-2024-05-13"):
        assert client.responses.create(model=model, input="hi").model == model
    server.configure(models=["my-gateway-model"])  # a name a test or gateway needs besides those
    assert client.responses.create(model="my-gateway-model", input="hi").status == "completed"
    assert client.models.retrieve("gpt-4.1").id == "gpt-4.1"


# --- a bounded server: what it keeps stays within its limits -------------------------------------


def test_the_server_keeps_its_newest_responses_conversations_and_requests(server, client):
    server.configure(max_responses=3, max_conversations=2, max_requests=4)
    ids = [client.responses.create(model="nbopenai-local", input=f"hi {n}").id for n in range(5)]
    assert list(server.state.responses) == ids[2:]
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.retrieve(ids[0])
    assert caught.value.body["message"] == (
        f"Response with id '{ids[0]}' not found. The offline server keeps only its 3 newest responses."
    )
    with pytest.raises(openai.BadRequestError) as chained:
        client.responses.create(model="nbopenai-local", input="again", previous_response_id=ids[1])
    assert chained.value.code == "previous_response_not_found" and "3 newest responses" in chained.value.body["message"]
    assert (
        client.responses.create(model="nbopenai-local", input="on", previous_response_id=ids[4]).status == "completed"
    )
    conversations = [client.conversations.create().id for _ in range(3)]
    with pytest.raises(openai.NotFoundError, match="2 newest conversations"):
        client.conversations.retrieve(conversations[0])
    assert client.conversations.retrieve(conversations[2]).id == conversations[2]
    assert len(server.requests) == 4 and server.requests[-1].path == "/v1/conversations/" + conversations[2]
    server.reset()
    with pytest.raises(openai.NotFoundError) as fresh:
        client.responses.retrieve(ids[4])
    assert fresh.value.body["message"] == f"Response with id '{ids[4]}' not found."  # nothing was dropped


def test_the_server_memory_benchmark_runs():
    figures = server_memory.run([20, 40], workers=2)
    assert [sent for sent, _, _ in figures] == [0, 20, 40] and all(rss > 0 for _, rss, _ in figures)
