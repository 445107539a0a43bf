"""How one response becomes one row's status, on SDK ``Response`` objects and batch-file dicts."""

from __future__ import annotations

import pytest
from openai.types.responses import Response
from pydantic import BaseModel, field_validator

from nbopenai._extract import strict_format
from nbopenai._extract._rows import classify


class Person(BaseModel):
    name: str
    age: int | None

    @field_validator("age")
    @classmethod
    def plausible(cls, value: int | None) -> int | None:
        if value is not None and value > 150:
            raise ValueError("nobody is that old")
        return value


PARSE = strict_format(Person).parse


def response(content: list[dict], status: str = "completed", **extra) -> dict:
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1,
        "model": "gpt-4.1-mini",
        "status": status,
        "output": [
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "status": "incomplete" if status == "incomplete" else "completed",
                "content": content,
            }
        ]
        if content
        else [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": 10,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": 5,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 15,
        },
        **extra,
    }


def text(value: str) -> dict:
    return {"type": "output_text", "text": value, "annotations": []}


@pytest.fixture(params=["dict", "sdk"])
def shape(request):
    """Each case runs on the plain dict (batch files) and on the SDK's ``Response`` (live)."""
    return (lambda body: body) if request.param == "dict" else Response.model_validate


def test_ok(shape):
    outcome = classify(shape(response([text('{"name": "Ada", "age": 36}')])), PARSE)
    assert outcome.status == "ok" and outcome.value == Person(name="Ada", age=36)
    assert outcome.text == '{"name": "Ada", "age": 36}'


def test_refusal(shape):
    outcome = classify(shape(response([{"type": "refusal", "refusal": "I can't help with that."}])), PARSE)
    assert outcome.status == "refusal" and outcome.error == "I can't help with that."


def test_incomplete(shape):
    body = response([text('{"name": "Ad')], status="incomplete", incomplete_details={"reason": "max_output_tokens"})
    outcome = classify(shape(body), PARSE)
    assert outcome.status == "incomplete" and "max_output_tokens" in outcome.error


def test_invalid_json(shape):
    outcome = classify(shape(response([text('{"name": ')])), PARSE)
    assert outcome.status == "invalid" and "Invalid JSON" in outcome.error


def test_invalid_by_a_validator_names_the_field(shape):
    outcome = classify(shape(response([text('{"name": "Ada", "age": 900}')])), PARSE)
    assert outcome.status == "invalid" and outcome.error.startswith("age:") and "nobody is that old" in outcome.error
    assert outcome.text is not None  # kept, so the re-ask can show the model its answer


def test_empty_answer_is_invalid(shape):
    assert classify(shape(response([text("")])), PARSE).status == "invalid"


def test_failed_response_is_an_error(shape):
    body = response([], status="failed", error={"code": "server_error", "message": "The model failed."})
    outcome = classify(shape(body), PARSE)
    assert outcome.status == "error" and outcome.error == "The model failed."


def test_commentary_phase_is_not_the_answer():
    body = response([text('{"name": "Ada", "age": 36}')])
    body["output"].insert(
        0,
        {
            "id": "msg_0",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "phase": "commentary",
            "content": [text("thinking...")],
        },
    )
    assert classify(body, PARSE).status == "ok"
