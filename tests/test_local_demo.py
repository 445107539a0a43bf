"""The demo model's rules, schema filling and fault parsing, without HTTP."""

from __future__ import annotations

import subprocess
import sys

import jsonschema
import pytest

import nbopenai.local as local
from nbopenai.local._demo import MARKER, long_answer, reply
from nbopenai.local._faults import FaultQueue, parse_fault_header
from nbopenai.local._items import decode_compaction, encode_compaction, normalize_input, render_context
from nbopenai.local._schema_fill import fill_schema


def valid(schema: dict, value) -> None:
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(value)


def user(text: str) -> list[dict]:
    return normalize_input(text)


def test_every_text_answer_carries_the_marker():
    assert reply(None, user("hello")).text.startswith(MARKER)
    assert MARKER in reply("Be a pirate", user("hello")).text


def test_long_answer_has_exactly_n_words():
    for n in (1, 4, 5, 100, 20000):
        assert len(long_answer(n).split()) == n


def test_recall_needs_the_fact_in_the_thread():
    assert "You have not told me your name yet." in reply(None, user("What is my name?")).text
    thread = user("I'm Bob.") + user("What's my name?")
    assert "Your name is Bob." in reply(None, thread).text


SCHEMAS = [
    {"type": "object", "properties": {"n": {"type": "integer", "minimum": 10, "maximum": 20}}, "required": ["n"]},
    {
        "type": "object",
        "properties": {"kind": {"const": "fixed"}, "x": {"type": ["number", "null"]}},
        "required": ["kind", "x"],
    },
    {"type": "array", "items": {"type": "string"}, "minItems": 3, "maxItems": 5},
    {"anyOf": [{"type": "integer"}, {"type": "string", "format": "email"}]},
    {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {
                    "label": {"type": "string"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 1},
                },
                "required": ["label", "children"],
            }
        },
        "$ref": "#/$defs/node",
    },
    {
        "type": "object",
        "properties": {
            "when": {"type": "string", "format": "date-time"},
            "ok": {"type": "boolean"},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}},
        },
    },
    {"type": "object", "additionalProperties": {"type": "string"}},
]


@pytest.mark.parametrize("schema", SCHEMAS)
@pytest.mark.parametrize(
    "text", ["", "Ada wrote 3 notes on 2024-05-01 to ada@example.com. Yes.", "no numbers here, b and a"]
)
def test_filled_values_always_validate(schema, text):
    valid(schema, fill_schema(schema, text))


def test_extraction_rules():
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer"},
            "price": {"type": "number"},
            "when": {"type": "string", "format": "date"},
            "email": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "phone": {"anyOf": [{"type": "string", "format": "email"}, {"type": "null"}]},
            "vip": {"type": "boolean"},
            "colour": {"type": "string", "enum": ["red", "teal", "light_blue"]},
        },
    }
    text = "Maria Garcia, age 41, paid 19.5 dollars on March 3, 2024. Her favourite is light blue. She is not a vip."
    value = fill_schema(schema, text)
    valid(schema, value)
    assert value == {
        "name": "Maria Garcia",
        "age": 41,
        "price": 19.5,
        "when": "2024-03-03",
        "email": None,
        "phone": None,
        "vip": False,
        "colour": "light_blue",
    }


def test_fault_header_parsing_and_queue_order():
    fault = parse_fault_header("rate_limit; retry_after=2.5; retry_after_ms=none")
    assert (fault.kind, fault.params) == ("rate_limit", {"retry_after": 2.5, "retry_after_ms": None})
    with pytest.raises(ValueError):
        parse_fault_header("meteor_strike")
    queue = FaultQueue()
    queue.inject("server_error", count=2)
    queue.inject("drop")
    kinds = [getattr(queue.take("POST", "/v1/responses"), "kind", None) for _ in range(4)]
    assert kinds == ["server_error", "server_error", "drop", None]


def test_compaction_round_trip_and_rendering():
    items = user("My name is Ada.")
    compaction = encode_compaction(items)
    assert decode_compaction(compaction) == items
    assert render_context("Hi", [compaction]) == "developer: Hi\nuser: My name is Ada.\n"


def test_public_surface_is_complete_and_light():


    public = {
        name for name in vars(local) if not name.startswith("_") and not isinstance(getattr(local, name), type(local))
    }
    assert public - {"annotations"} == set(local.__all__)
    probe = (
        "import sys, nbopenai.local; "
        "print(sorted(m for m in ('IPython', 'ipywidgets', 'pandas', 'aiohttp', 'flask') if m in sys.modules))"
    )
    assert (
        subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    )
