"""The offline server's JSON, events and errors against OpenAI's own OpenAPI description.

The description lives beside the project (``../shared/openai-openapi/openapi.json``), or wherever
``NBOPENAI_OPENAPI`` points; without it these tests skip.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib

import httpx2
import jsonschema
import pytest

from nbopenai.local import start

_DEFAULT_SPEC = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "openai-openapi" / "openapi.json"
SPEC_PATH = pathlib.Path(os.environ.get("NBOPENAI_OPENAPI", _DEFAULT_SPEC))

pytestmark = pytest.mark.skipif(
    not SPEC_PATH.is_file(),
    reason=f"OpenAI's openapi.json not found at {SPEC_PATH} (set NBOPENAI_OPENAPI to its path)",
)


@functools.cache
def _components() -> dict:
    return json.loads(SPEC_PATH.read_text())["components"]


@functools.cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": _components()})


def check(name: str, instance: dict) -> None:
    errors = sorted(_validator(name).iter_errors(instance), key=lambda e: list(e.absolute_path))
    assert not errors, f"{name}: " + "; ".join(f"{list(e.absolute_path)}: {e.message[:200]}" for e in errors[:5])


@functools.cache
def _event_schemas() -> dict[str, str]:
    """``ResponseStreamEvent`` is an anyOf discriminated by ``type``: event type -> schema name."""
    schemas = _components()["schemas"]
    by_type = {}
    for option in schemas["ResponseStreamEvent"]["anyOf"]:
        name = option["$ref"].rsplit("/", 1)[-1]
        enum = schemas[name].get("properties", {}).get("type", {}).get("enum", [])
        for event_type in enum:
            by_type[event_type] = name
    return by_type


def check_event(event: dict) -> None:
    name = _event_schemas().get(event["type"])
    assert name, f"event type {event['type']!r} is not a ResponseStreamEvent"
    check(name, event)


@pytest.fixture(scope="module")
def server():
    with start() as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(server):
    server.reset()


@pytest.fixture
def http(server):
    with httpx2.Client(base_url=server.base_url, timeout=10) as client:
        yield client


def stream(http, body: dict, headers: dict | None = None) -> list[dict]:
    events = []
    with http.stream("POST", "/responses", json={**body, "stream": True}, headers=headers) as reply:
        assert reply.status_code == 200
        for block in reply.read().decode().strip().split("\n\n"):
            name, data = block.split("\n")
            event = json.loads(data[len("data: ") :])
            assert name == f"event: {event['type']}"
            events.append(event)
    return events


TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]


@pytest.mark.parametrize(
    "body",
    [
        {"model": "nbopenai-local", "input": "Hello there."},
        {
            "model": "gpt-5",
            "input": "Hello",
            "instructions": "Be a pirate.",
            "reasoning": {"effort": "low"},
            "metadata": {"k": "v"},
        },
        {"model": "nbopenai-local", "input": "Tell me a story.", "max_output_tokens": 8},
        {"model": "nbopenai-local", "input": "use get_weather for Paris", "tools": TOOLS},
        {
            "model": "nbopenai-local",
            "input": "Ada, 36",
            "text": {
                "format": {
                    "type": "json_schema",
                    "name": "p",
                    "strict": True,
                    "schema": {
                        "type": "object",
                        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                        "required": ["name", "age"],
                        "additionalProperties": False,
                    },
                }
            },
        },
        {"model": "nbopenai-local", "input": "hi json", "text": {"format": {"type": "json_object"}}},
        {"model": "nbopenai-local", "input": "hi", "background": True},
    ],
)
def test_response_objects(http, body):
    reply = http.post("/responses", json=body)
    assert reply.status_code == 200
    check("Response", reply.json())
    check("Response", http.get(f"/responses/{reply.json()['id']}").json())


@pytest.mark.parametrize(
    "body",
    [
        {"model": "nbopenai-local", "input": "Tell me something."},
        {"model": "nbopenai-local", "input": "Tell me a story.", "max_output_tokens": 8},
        {"model": "nbopenai-local", "input": "use get_weather for Paris", "tools": TOOLS},
        {"model": "nbopenai-local", "input": "hi", "background": True},
    ],
)
def test_stream_events(http, body):
    events = stream(http, body)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        check_event(event)
    assert events[-1]["type"] in ("response.completed", "response.incomplete")
    check("ResponseUsage", events[-1]["response"]["usage"])


def test_stream_events_against_the_whole_anyof(http):
    whole = _validator("ResponseStreamEvent")
    for event in stream(http, {"model": "nbopenai-local", "input": "short"}):
        whole.validate(event)


def test_flat_error_event_and_failed_response(http):
    events = stream(
        http,
        {"model": "nbopenai-local", "input": "Tell me a story."},
        {"x-nbopenai-fault": "midstream_error_flat;after=2"},
    )
    error, failed = events[-2:]
    check_event(error)
    assert error["type"] == "error"
    check_event(failed)
    assert failed["type"] == "response.failed" and failed["response"]["error"]["code"] == "server_error"


def test_nested_error_event_has_the_real_services_shape(http):
    # Not in the spec (which documents the flat shape); this is what the service really sends.
    events = stream(
        http, {"model": "nbopenai-local", "input": "Tell me a story."}, {"x-nbopenai-fault": "midstream_error;after=1"}
    )
    error, failed = events[-2:]
    assert set(error) == {"type", "error", "sequence_number"}
    assert error["error"] == {
        "type": "server_error",
        "code": "server_error",
        "message": error["error"]["message"],
        "param": None,
    }
    check_event(failed)


@pytest.mark.parametrize(
    ("request_kwargs", "status"),
    [
        (
            {
                "method": "POST",
                "url": "/responses",
                "content": b"{oops",
                "headers": {"Content-Type": "application/json"},
            },
            400,
        ),
        (
            {
                "method": "POST",
                "url": "/responses",
                "json": {"model": "m", "input": "hi"},
                "headers": {"x-nbopenai-fault": "rate_limit"},
            },
            429,
        ),
        (
            {
                "method": "POST",
                "url": "/responses",
                "json": {"model": "m", "input": "hi"},
                "headers": {"x-nbopenai-fault": "server_error"},
            },
            500,
        ),
        (
            {
                "method": "POST",
                "url": "/responses",
                "json": {"model": "m", "input": "hi"},
                "headers": {"x-nbopenai-fault": "unauthorized"},
            },
            401,
        ),
        (
            {
                "method": "POST",
                "url": "/responses",
                "json": {"model": "nbopenai-local", "input": "hi", "previous_response_id": "resp_x"},
            },
            400,
        ),
        ({"method": "POST", "url": "/responses", "json": {"model": "m", "input": "hi"}}, 404),  # model_not_found
        ({"method": "GET", "url": "/responses/resp_missing"}, 404),
        ({"method": "GET", "url": "/nowhere"}, 404),
    ],
)
def test_error_bodies(http, request_kwargs, status):
    reply = http.request(**request_kwargs)
    assert reply.status_code == status
    assert reply.headers["x-request-id"].startswith("req_")
    check("ErrorResponse", reply.json())


def test_other_resources(http):
    conversation = http.post("/conversations", json={"metadata": {"a": "b"}}).json()
    check("ConversationResource", conversation)
    created = http.post(
        "/responses", json={"model": "nbopenai-local", "input": "My name is Ada.", "conversation": conversation["id"]}
    ).json()
    check("Response", created)
    check("ConversationItemList", http.get(f"/conversations/{conversation['id']}/items").json())
    check("ResponseItemList", http.get(f"/responses/{created['id']}/input_items").json())
    check(
        "TokenCountsResource",
        http.post("/responses/input_tokens", json={"model": "nbopenai-local", "input": "hi"}).json(),
    )
    check(
        "CompactResource",
        http.post("/responses/compact", json={"model": "nbopenai-local", "input": "My name is Ada."}).json(),
    )
    check("ListModelsResponse", http.get("/models").json())
    # The routes a conversation thread uses (nbopenai/_turns/_conversations.py): retrieve, items create/delete.
    check("ConversationResource", http.get(f"/conversations/{conversation['id']}").json())
    added = http.post(
        f"/conversations/{conversation['id']}/items",
        json={"items": [{"type": "message", "role": "user", "content": "I live in Paris."}]},
    ).json()
    check("ConversationItemList", added)
    item_id = added["data"][0]["id"]
    check("ConversationItem", http.get(f"/conversations/{conversation['id']}/items/{item_id}").json())
    check("ConversationResource", http.delete(f"/conversations/{conversation['id']}/items/{item_id}").json())
    check("DeletedConversationResource", http.delete(f"/conversations/{conversation['id']}").json())
