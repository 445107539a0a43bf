"""``POST /v1/chat/completions``: the same demo model behind the older API, plain and streamed.

Enough for peer tools (jupyter-ai, chatlab) to be benchmarked against the offline server: messages,
``tools``/``tool_calls``, ``response_format`` json_schema, ``max_tokens``, ``stream_options``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from ._errors import ApiError
from ._faults import Fault
from ._responses import Output, Turn, answer_computed, prepare, run_model
from ._routes import Reply, Request, Route, route
from ._state import new_id
from ._wire import Event

__all__ = ["ROUTES"]

ROUTES: list[Route] = []


def _content_text(content: Any) -> Any:
    if isinstance(content, list):
        parts = []
        for part in content:
            if part.get("type") == "text":
                parts.append({"type": "input_text", "text": part.get("text", "")})
            elif part.get("type") == "image_url":
                url = part.get("image_url") or {}
                parts.append(
                    {
                        "type": "input_image",
                        "image_url": url.get("url") if isinstance(url, dict) else url,
                        "detail": "auto",
                    }
                )
        return parts
    return content or ""


def responses_body(body: dict[str, Any]) -> dict[str, Any]:
    """The create-response body equivalent to a chat completions body."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(
            400, "Missing required parameter: 'messages'.", param="messages", code="missing_required_parameter"
        )
    instructions, items = [], []
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            content = message.get("content")
            instructions.append(
                content if isinstance(content, str) else " ".join(p.get("text", "") for p in content or [])
            )
        elif role == "tool":
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": message.get("tool_call_id", ""),
                    "output": message.get("content") or "",
                }
            )
        elif role in ("user", "assistant"):
            if message.get("content"):
                items.append({"type": "message", "role": role, "content": _content_text(message.get("content"))})
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                items.append(
                    {
                        "type": "function_call",
                        "call_id": call.get("id", ""),
                        "name": function.get("name", ""),
                        "arguments": function.get("arguments", ""),
                    }
                )
        else:
            raise ApiError(
                400, f"Invalid value for 'messages[].role': '{role}'.", param="messages", code="invalid_value"
            )
    tools = [
        {"type": "function", "name": t["function"]["name"], "parameters": t["function"].get("parameters")}
        for t in body.get("tools") or []
        if t.get("type") == "function" and t.get("function")
    ]
    tool_choice = body.get("tool_choice", "auto")
    if isinstance(tool_choice, dict):
        tool_choice = {"type": "function", "name": (tool_choice.get("function") or {}).get("name")}
    fmt = body.get("response_format") or {"type": "text"}
    if fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema") or {}
        fmt = {
            "type": "json_schema",
            "name": spec.get("name", "response"),
            "schema": spec.get("schema"),
            "strict": spec.get("strict"),
        }
    return {
        "model": body.get("model"),
        "input": items,
        "instructions": "\n".join(instructions) or None,
        "tools": tools,
        "tool_choice": tool_choice,
        "text": {"format": fmt},
        "max_output_tokens": body.get("max_completion_tokens") or body.get("max_tokens"),
        "store": False,
    }


def _usage(turn: Turn, output: Output) -> dict[str, Any]:
    return {
        "prompt_tokens": turn.input_tokens,
        "completion_tokens": output.output_tokens,
        "total_tokens": turn.input_tokens + output.output_tokens,
        "prompt_tokens_details": {"cached_tokens": turn.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": output.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _finish_reason(output: Output) -> str:
    if output.items and output.items[0]["type"] == "function_call":
        return "tool_calls"
    return "length" if output.incomplete else "stop"


def _tool_calls(output: Output) -> list[dict[str, Any]]:
    return [
        {"id": item["call_id"], "type": "function", "function": {"name": item["name"], "arguments": item["arguments"]}}
        for item in output.items
        if item["type"] == "function_call"
    ]


@route("POST", "/v1/chat/completions", table=ROUTES)
def chat_completions(request: Request) -> Reply:
    body = request.body
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    turn = prepare(responses_body(body), request.state)
    output = run_model(turn, request.state.config, request.fault)
    answer_computed(request.state, turn, output.items)
    completion_id, created = "chatcmpl-" + new_id("x")[2:34], int(time.time())
    if body.get("stream") is True:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return Reply(events=_stream(turn, output, request.fault, completion_id, created, include_usage))
    text = "".join(p["text"] for item in output.items if item["type"] == "message" for p in item["content"])
    calls = _tool_calls(output)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": None if calls else text,
        "refusal": None,
        "annotations": [],
    }
    if calls:
        message["tool_calls"] = calls
    return Reply(
        json={
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": turn.model,
            "choices": [{"index": 0, "message": message, "finish_reason": _finish_reason(output), "logprobs": None}],
            "usage": _usage(turn, output),
            "service_tier": "default",
            "system_fingerprint": "fp_nbopenai_local",
        }
    )


def _stream(
    turn: Turn, output: Output, fault: Fault | None, completion_id: str, created: int, include_usage: bool
) -> Iterator[Any]:
    def chunk(delta: dict[str, Any], finish_reason: str | None = None, is_delta: bool = False) -> Event:
        data = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": turn.model,
            "system_fingerprint": "fp_nbopenai_local",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
        }
        return Event(None, data, is_delta)

    stop_after = fault.stream_cut_after() if fault is not None else None
    yield chunk({"role": "assistant", "content": "" if output.items[0]["type"] == "message" else None})
    sent = 0
    for index, item in enumerate(output.items):
        if item["type"] == "function_call":
            opening = {
                "index": index,
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": ""},
            }
            yield chunk({"tool_calls": [opening]})
        for at, piece in output.deltas:
            if at != index:
                continue
            if stop_after is not None and sent >= stop_after:
                yield from fault.chat_stream_break()
                return
            sent += 1
            if item["type"] == "function_call":
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}, is_delta=True)
            else:
                yield chunk({"content": piece}, is_delta=True)
    yield chunk({}, _finish_reason(output))
    if include_usage:
        final = chunk({})
        yield Event(None, {**final.data, "choices": [], "usage": _usage(turn, output)})
    yield Event(None, "[DONE]")
