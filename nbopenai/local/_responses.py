"""Responses: from a request body to a finished Response object, and to the events that stream it.

``prepare`` resolves the thread (``previous_response_id`` or ``conversation``) and counts the input;
``run_model`` asks the demo model and applies ``max_output_tokens``; ``response_object`` shapes the
result like the API's; ``stream_events`` yields the real event sequence with ``sequence_number`` on
every event. ``generate`` does all of it at once for a finished, stored response (batches reuse it).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .._core import _tokens
from .._core._settings import REASONING_EFFORTS
from . import _demo
from ._errors import ApiError, model_not_found, not_found
from ._faults import Fault, Written, context_length_error
from ._items import expand_compactions, message_text, normalize_input, render_context
from ._schema_fill import fill_schema
from ._state import DEMO_MODEL, Config, State, StoredResponse, new_id
from ._wire import DROP, Event

__all__ = ["Turn", "Output", "prepare", "run_model", "response_object", "stream_events", "generate", "DROP", "Event"]

# Reasoning tokens the demo model "spends" per effort: none 0, minimal 8, then doubling up to max.
_EFFORT_TOKENS = dict(zip(REASONING_EFFORTS, (0, *(8 * 2**i for i in range(len(REASONING_EFFORTS) - 1))), strict=False))
_CHUNK = re.compile(r"\S+\s*|\s+")


@dataclass
class Turn:
    """One request, resolved: who said what before, and how many tokens that is."""

    body: dict[str, Any]
    model: str
    instructions: str | None
    history: list[dict[str, Any]]
    new_items: list[dict[str, Any]]
    rendered: str
    input_tokens: int
    cached_tokens: int
    conversation_id: str | None = None

    @property
    def items(self) -> list[dict[str, Any]]:
        return self.history + self.new_items


@dataclass
class Output:
    items: list[dict[str, Any]]
    deltas: list[tuple[int, str]]  # (output index, piece) in streaming order
    output_tokens: int
    reasoning_tokens: int = 0
    incomplete: bool = False

    @property
    def status(self) -> str:
        return "incomplete" if self.incomplete else "completed"


def split_deltas(text: str, chunk_size: int | None) -> list[str]:
    """Word-sized pieces (each word with its trailing space), or ``chunk_size`` characters each."""
    if chunk_size:
        return [text[i : i + chunk_size] for i in range(0, len(text), chunk_size)] or [""]
    return _CHUNK.findall(text) or [""]


def is_reasoning_model(model: str) -> bool:
    name = model.lower()
    return name.startswith("o") or name.startswith("gpt-5")


def _instructions(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    if isinstance(value, list):
        return " ".join(message_text(item) for item in normalize_input(value)) or None
    raise ApiError(
        400, "Invalid type for 'instructions': expected a string.", param="instructions", code="invalid_type"
    )


def _conversation_id(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return value["id"]
    raise ApiError(
        400,
        "Invalid type for 'conversation': expected a string or an object with 'id'.",
        param="conversation",
        code="invalid_type",
    )


# The types the API checks before running a model: a wrong one is a 400 `invalid_type`, never a
# failure inside the demo model.
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "max_output_tokens": (int,),
    "temperature": (int, float),
    "top_p": (int, float),
    "tools": (list,),
    "text": (dict,),
    "reasoning": (dict,),
    "metadata": (dict,),
    "instructions": (str,),
    "previous_response_id": (str,),
    "stream": (bool,),
    "store": (bool,),
    "background": (bool,),
    "truncation": (str,),
    "tool_choice": (str, dict),
}


def _invalid_type(param: str, expected: str) -> ApiError:
    return ApiError(400, f"Invalid type for '{param}': expected {expected}.", param=param, code="invalid_type")


def _check_types(body: dict[str, Any]) -> None:
    for name, types in _FIELD_TYPES.items():
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, types) or (bool in (type(value),) and bool not in types):
            raise _invalid_type(name, " or ".join(t.__name__ for t in types))
    for index, tool in enumerate(body.get("tools") or []):
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise _invalid_type(f"tools[{index}]", "an object with a 'type'")
        if tool["type"] == "function":
            if not isinstance(tool.get("name"), str):
                raise _invalid_type(f"tools[{index}].name", "a string")
            if not isinstance(tool.get("parameters", {}) or {}, dict):
                raise _invalid_type(f"tools[{index}].parameters", "an object")
    fmt = (body.get("text") or {}).get("format")
    if fmt is not None and not (isinstance(fmt, dict) and isinstance(fmt.get("type"), str)):
        raise _invalid_type("text.format", "an object with a 'type'")


def prepare(body: Any, state: State, *, need_model: bool = True, compute: bool = True) -> Turn:
    """Validate a create-response body and resolve the thread it continues.

    ``compute``: the model will read this prompt (so it enters the prompt cache); False only counts it.
    """
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        if need_model or model is not None:
            raise ApiError(
                400, "Missing required parameter: 'model'.", param="model", code="missing_required_parameter"
            )
        model = DEMO_MODEL
    if not state.knows_model(model):
        raise model_not_found(model)
    _check_types(body)
    previous_id = body.get("previous_response_id")
    conversation_id = _conversation_id(body.get("conversation"))
    if previous_id and conversation_id:
        raise ApiError(
            400,
            "Mutually exclusive parameters: 'previous_response_id' and 'conversation'. Use one.",
            param="conversation",
            code="mutually_exclusive_parameters",
        )
    instructions = _instructions(body.get("instructions"))
    new_items = normalize_input(body.get("input"))
    history: list[dict[str, Any]] = []
    with state.lock:
        if previous_id:
            previous = state.responses.get(previous_id)
            if previous is None:
                why = state.responses.forgotten("responses")
                raise ApiError(
                    400,
                    f"Previous response with id '{previous_id}' not found.{why}",
                    param="previous_response_id",
                    code="previous_response_not_found",
                )
            history = previous.chain_items
        elif conversation_id:
            conversation = state.conversations.get(conversation_id)
            if conversation is None:
                raise not_found(
                    "Conversation",
                    conversation_id,
                    param="conversation",
                    why=state.conversations.forgotten("conversations"),
                )
            history = list(conversation.items)
        window = state.config.context_window
    rendered = render_context(instructions, history + new_items)
    tokens = _tokens.encoding_for_model(model).encode_ordinary(rendered)
    if len(tokens) > window and body.get("truncation") == "auto":
        # Like the API's "auto" truncation: drop the oldest items of the thread until it fits.
        while history and len(tokens) > window:
            history = history[1:]
            rendered = render_context(instructions, history + new_items)
            tokens = _tokens.encoding_for_model(model).encode_ordinary(rendered)
    if len(tokens) > window:
        raise context_length_error(len(tokens), window)
    cached = _prompt_cache_hit(state, tokens, compute)
    return Turn(body, model, instructions, history, new_items, rendered, len(tokens), cached, conversation_id)


def _prompt_cache_hit(state: State, tokens: list[int], compute: bool) -> int:
    config = state.config
    minimum, block = config.cache_min_tokens, config.cache_block_tokens
    if len(tokens) < max(minimum, 1):
        return 0
    cached = state.prompt_cache.cached(tokens, minimum, block)
    if compute:
        state.prompt_cache.remember(tokens, minimum, block)
    return cached


def _text_format(body: dict[str, Any]) -> dict[str, Any]:
    text = body.get("text") or {}
    return (text.get("format") if isinstance(text, dict) else None) or {"type": "text"}


def _structured_text(turn: Turn, reply_text: str, items: list[dict[str, Any]]) -> str | None:
    fmt = _text_format(turn.body)
    if fmt.get("type") == "json_schema":
        outputs = [str(i.get("output")) for i in _demo.tool_outputs(items)]
        source = " ".join([_demo.prompt_text(items), *outputs]).strip()
        every_user_text = "\n".join(
            message_text(i) for i in items if i.get("type") == "message" and i.get("role") == "user"
        )
        schema = fmt.get("schema") or {"type": "object", "properties": {}}
        return json.dumps(fill_schema(schema, source, fallback_text=every_user_text), ensure_ascii=False)
    if fmt.get("type") == "json_object":
        prompt = _demo.prompt_text(items)
        return json.dumps(
            {"answer": reply_text, "prompt_words": len(prompt.split()), "model": "nbopenai offline demo model"},
            ensure_ascii=False,
        )
    return None


def _reasoning_tokens(turn: Turn) -> int:
    if not is_reasoning_model(turn.model):
        return 0
    effort = (turn.body.get("reasoning") or {}).get("effort") or "medium"
    return _EFFORT_TOKENS.get(effort, 32)


def _truncate(text: str, tokens: int, model: str) -> str:
    encoding = _tokens.encoding_for_model(model)
    return encoding.decode(encoding.encode_ordinary(text)[: max(tokens, 0)])


def _stable_call_id(turn: Turn, number: int) -> str:
    """A call id that is the same whenever the same request comes again (``stable_call_ids``: a re-run cell)."""
    items = [{key: value for key, value in item.items() if key != "id"} for item in turn.items]  # ids are new each time
    seen = json.dumps([turn.model, turn.instructions, items, number], sort_keys=True, default=str)
    return "call_" + hashlib.sha256(seen.encode()).hexdigest()[:24]


def run_model(turn: Turn, config: Config, fault: Fault | None = None) -> Output:
    """The demo model's output items for a turn, with max_output_tokens and ``incomplete`` applied."""
    items = expand_compactions(turn.items)
    reply = _demo.reply(
        turn.instructions,
        items,
        tools=turn.body.get("tools") or [],
        tool_choice=turn.body.get("tool_choice", "auto"),
        answer_words=config.answer_tokens,
    )
    reasoning = _reasoning_tokens(turn)
    if reply.calls:
        calls = []
        for number, call in enumerate(reply.calls):
            call_id = _stable_call_id(turn, number) if config.stable_call_ids else new_id("call")
            calls.append(
                {
                    "id": new_id("fc"),
                    "type": "function_call",
                    "status": "completed",
                    "call_id": call_id,
                    "name": call.name,
                    "arguments": call.arguments,
                }
            )
        deltas = [
            (index, piece)
            for index, call in enumerate(calls)
            for piece in split_deltas(call["arguments"], config.chunk_size or 8)
        ]
        tokens = sum(_tokens.count_tokens(call["arguments"], turn.model) for call in calls)
        return Output(calls, deltas, tokens + reasoning, reasoning)
    text = _structured_text(turn, reply.text, items) or reply.text
    visible = _tokens.count_tokens(text, turn.model)
    budget = turn.body.get("max_output_tokens")
    incomplete = False
    if budget is not None and visible + reasoning > budget:
        text, incomplete = _truncate(text, budget - reasoning, turn.model), True
    written = Written(text, turn.model, incomplete)
    if fault is not None:
        fault.on_answer(written)
    text, incomplete = written.text, written.incomplete
    part: dict[str, Any] = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    if written.refusal:
        part = {"type": "refusal", "refusal": text}
    visible = _tokens.count_tokens(text, turn.model)
    message = {
        "id": new_id("msg"),
        "type": "message",
        "role": "assistant",
        "status": "incomplete" if incomplete else "completed",
        "content": [part],
    }
    deltas = [(0, piece) for piece in split_deltas(text, config.chunk_size)]
    return Output([message], deltas, visible + reasoning, reasoning, incomplete)


def usage(turn: Turn, output: Output) -> dict[str, Any]:
    return {
        "input_tokens": turn.input_tokens,
        "input_tokens_details": {"cached_tokens": turn.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": output.output_tokens,
        "output_tokens_details": {"reasoning_tokens": output.reasoning_tokens},
        "total_tokens": turn.input_tokens + output.output_tokens,
    }


def _echo_tools(tools: Any) -> list[dict[str, Any]]:
    echoed = []
    for tool in tools or []:
        if isinstance(tool, dict) and tool.get("type") == "function":
            tool = {"description": None, "parameters": None, "strict": True, **tool}
        echoed.append(tool)
    return echoed


def response_object(
    turn: Turn,
    *,
    id: str,
    created_at: int,
    status: str,
    output: list[dict[str, Any]] | None = None,
    usage: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Response as the API shapes it (``usage`` is left out until the response has finished)."""
    body = turn.body
    reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else None
    if reasoning is None and is_reasoning_model(turn.model):
        reasoning = {"effort": "medium", "summary": None}
    response: dict[str, Any] = {
        "id": id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": bool(body.get("background")),
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": error,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": turn.instructions,
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "model": turn.model,
        "output": list(output or []),
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": reasoning or {"effort": None, "summary": None},
        "service_tier": "default",
        "store": body.get("store", True) is not False,
        "temperature": body.get("temperature", 1.0),
        "text": {"format": _text_format(body), "verbosity": (body.get("text") or {}).get("verbosity") or "medium"},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": _echo_tools(body.get("tools")),
        "top_logprobs": body.get("top_logprobs") or 0,
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation") or "disabled",
        "metadata": body.get("metadata") or {},
        "conversation": {"id": turn.conversation_id} if turn.conversation_id else None,
    }
    if usage is not None:
        response["usage"] = usage
    return response


def finished_response(
    turn: Turn, output: Output, *, id: str, created_at: int, fault: Fault | None = None
) -> dict[str, Any]:
    """The finished Response, as a fault (if any) makes it look."""
    response = response_object(
        turn, id=id, created_at=created_at, status=output.status, output=output.items, usage=usage(turn, output)
    )
    return fault.on_response(response) if fault is not None else response


def remember(state: State, turn: Turn, response: dict[str, Any]) -> StoredResponse:
    """Store a response (when ``store`` is not false) and extend its conversation."""
    stored = StoredResponse(response, turn.new_items, turn.items)
    answer_computed(state, turn, response["output"])
    with state.lock:
        if response.get("store", True):
            existing = state.responses.get(response["id"])
            if existing is not None:
                stored.cancel = existing.cancel
            state.responses[response["id"]] = stored
        if turn.conversation_id and response["status"] in ("completed", "incomplete"):
            conversation = state.conversations.get(turn.conversation_id)
            if conversation is not None:
                conversation.items.extend(turn.new_items + list(response["output"]))
    return stored


def answer_computed(state: State, turn: Turn, output: list[dict[str, Any]]) -> None:
    """The model read the prompt and wrote ``output``: that whole context is in the prompt cache too."""
    minimum, block = state.config.cache_min_tokens, state.config.cache_block_tokens
    context = render_context(turn.instructions, turn.items + list(output))
    if len(context) < minimum:  # a token is at least one character: too short to cache, skip encoding
        return
    state.prompt_cache.remember(_tokens.encoding_for_model(turn.model).encode_ordinary(context), minimum, block)


def generate(body: dict[str, Any], state: State) -> dict[str, Any]:
    """A finished Response (with usage) for a create-response body; stored unless ``store`` is false.

    No faults, latency or streaming: this is the model alone, for the batch worker and tests.
    """
    turn = prepare(body, state)
    output = run_model(turn, state.config)
    response = finished_response(turn, output, id=new_id("resp"), created_at=int(time.time()))
    remember(state, turn, response)
    return response


def stream_events(
    state: State, turn: Turn, output: Output, fault: Fault | None, *, id: str, created_at: int
) -> Iterator[Any]:
    """The events of one streamed response, ending with completed, incomplete or failed (or a DROP)."""
    counter = iter(range(1 << 62))
    final = finished_response(turn, output, id=id, created_at=created_at, fault=fault)
    stop_after = fault.stream_cut_after() if fault is not None else None
    first_status = "queued" if turn.body.get("background") else "in_progress"
    snapshot = response_object(turn, id=id, created_at=created_at, status=first_status)

    def event(kind: str, is_delta: bool = False, /, **fields: Any) -> Event:
        return Event(kind, {"type": kind, "sequence_number": next(counter), **fields}, is_delta)

    remember(state, turn, snapshot)
    finished = False
    try:
        yield event("response.created", response=snapshot)
        yield event("response.in_progress", response={**snapshot, "status": "in_progress"})
        sent = 0
        for index, item in enumerate(output.items):
            pieces = [piece for at, piece in output.deltas if at == index]
            is_message = item["type"] == "message"
            refusal = is_message and item["content"][0]["type"] == "refusal"
            if is_message:
                yield event(
                    "response.output_item.added",
                    output_index=index,
                    item={**item, "status": "in_progress", "content": []},
                )
                empty = (
                    {"type": "refusal", "refusal": ""}
                    if refusal
                    else {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                )
                yield event(
                    "response.content_part.added", item_id=item["id"], output_index=index, content_index=0, part=empty
                )
            else:
                yield event(
                    "response.output_item.added",
                    output_index=index,
                    item={**item, "status": "in_progress", "arguments": ""},
                )
            for piece in pieces:
                if stop_after is not None and sent >= stop_after:
                    failed = {**snapshot, "status": "failed", "error": fault.failure()}
                    remember(state, turn, failed)
                    finished = True
                    yield from fault.stream_break(failed, next(counter))
                    return
                sent += 1
                if refusal:
                    yield event(
                        "response.refusal.delta",
                        True,
                        item_id=item["id"],
                        output_index=index,
                        content_index=0,
                        delta=piece,
                    )
                elif is_message:
                    yield event(
                        "response.output_text.delta",
                        True,
                        item_id=item["id"],
                        output_index=index,
                        content_index=0,
                        delta=piece,
                        logprobs=[],
                    )
                else:
                    yield event(
                        "response.function_call_arguments.delta",
                        True,
                        item_id=item["id"],
                        output_index=index,
                        delta=piece,
                    )
            if refusal:
                part = item["content"][0]
                yield event(
                    "response.refusal.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    refusal=part["refusal"],
                )
                yield event(
                    "response.content_part.done", item_id=item["id"], output_index=index, content_index=0, part=part
                )
            elif is_message:
                part = item["content"][0]
                yield event(
                    "response.output_text.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    text=part["text"],
                    logprobs=[],
                )
                yield event(
                    "response.content_part.done", item_id=item["id"], output_index=index, content_index=0, part=part
                )
            else:
                yield event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    name=item["name"],
                    arguments=item["arguments"],
                )
            yield event("response.output_item.done", output_index=index, item=item)
        # Stored before the last event goes out, so a client chaining on it at once finds it.
        remember(state, turn, final)
        finished = True
        yield event(f"response.{final['status']}", response=final)
    finally:
        if not finished:
            remember(state, turn, final)
