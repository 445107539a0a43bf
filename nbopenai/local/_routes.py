"""The API routes: responses, conversations, token counts, compaction and models.

Each handler takes a ``Request`` and returns a ``Reply`` (or raises ``ApiError``). Other modules
(``_chat.py``, and ``_batches.py`` for ``/v1/files`` and ``/v1/batches``) declare their own ``ROUTES``
the same way; ``_http.route_table`` gathers them.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._errors import ApiError, model_not_found, not_found
from ._faults import Fault
from ._items import encode_compaction, normalize_input, render_context
from ._responses import (
    Output,
    finished_response,
    prepare,
    remember,
    response_object,
    run_model,
    stream_events,
    usage,
)
from ._state import DEMO_MODEL, State, new_id
from ._wire import Incoming, Reply

__all__ = ["Request", "Reply", "Route", "ROUTES", "route", "paginate"]


@dataclass
class Request(Incoming):
    """What a route receives: the request, the server's state, and the fault chosen for this request."""

    state: State
    fault: Fault | None = None


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Callable[[Request], Reply]


ROUTES: list[Route] = []


def route(
    method: str, pattern: str, table: list[Route] = ROUTES
) -> Callable[[Callable[[Request], Reply]], Callable[[Request], Reply]]:
    """Register ``handler`` for ``method`` and a path pattern like ``/v1/responses/{id}``."""
    regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")

    def register(handler: Callable[[Request], Reply]) -> Callable[[Request], Reply]:
        table.append(Route(method, regex, handler))
        return handler

    return register


def paginate(items: list[dict[str, Any]], query: dict[str, str], default_order: str = "desc") -> dict[str, Any]:
    """A cursor page (``limit``, ``order``, ``after``) in the API's list shape."""
    order = query.get("order", default_order)
    if order not in ("asc", "desc"):
        raise ApiError(400, f"Invalid value for 'order': '{order}'.", param="order", code="invalid_value")
    try:
        limit = int(query.get("limit", 20))
    except ValueError:
        raise ApiError(
            400, "Invalid value for 'limit': expected an integer.", param="limit", code="invalid_type"
        ) from None
    limit = max(1, min(limit, 100))
    ordered = list(items) if order == "asc" else list(reversed(items))
    after = query.get("after")
    if after:
        ids = [item.get("id") for item in ordered]
        ordered = ordered[ids.index(after) + 1 :] if after in ids else []
    page = ordered[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0].get("id", "") if page else "",
        "last_id": page[-1].get("id", "") if page else "",
        "has_more": len(ordered) > limit,
    }


def _stored(state: State, response_id: str):
    stored = state.responses.get(response_id)
    if stored is None:
        raise not_found("Response", response_id, why=state.responses.forgotten("responses"))
    return stored


@route("POST", "/v1/responses")
def create_response(request: Request) -> Reply:
    state, body = request.state, request.body
    turn = prepare(body, state)
    stream = body.get("stream") is True
    if body.get("background"):
        if body.get("store") is False:
            raise ApiError(400, "Background mode requires store=true.", param="background")
        if not stream:
            return Reply(json=_start_background(state, turn, request.fault))
    with state.lock:
        config = state.config
    output = run_model(turn, config, request.fault)
    response_id, created_at = new_id("resp"), int(time.time())
    if stream:
        return Reply(events=stream_events(state, turn, output, request.fault, id=response_id, created_at=created_at))
    response = finished_response(turn, output, id=response_id, created_at=created_at, fault=request.fault)
    remember(state, turn, response)
    return Reply(json=response)


def _start_background(state: State, turn, fault: Fault | None) -> dict[str, Any]:
    response_id, created_at = new_id("resp"), int(time.time())
    queued = response_object(turn, id=response_id, created_at=created_at, status="queued")
    stored = remember(state, turn, queued)
    worker = threading.Thread(
        target=_run_background,
        args=(state, turn, stored.cancel, fault, response_id, created_at),
        name=f"nbopenai-background-{response_id[-8:]}",
        daemon=True,
    )
    worker.start()
    return queued


def _run_background(
    state: State, turn, cancel: threading.Event, fault: Fault | None, response_id: str, created_at: int
) -> None:
    """queued -> in_progress -> completed, taking ``chunk_delay`` per delta; stops when cancelled."""
    config = state.config
    if cancel.wait(config.background_delay):
        return
    with state.lock:
        if cancel.is_set():
            return
        remember(state, turn, response_object(turn, id=response_id, created_at=created_at, status="in_progress"))
    output = run_model(turn, config, fault)
    if config.chunk_delay > 0:
        for _ in output.deltas:
            if cancel.wait(config.chunk_delay):
                return
    response = finished_response(turn, output, id=response_id, created_at=created_at, fault=fault)
    with state.lock:
        if not cancel.is_set():
            remember(state, turn, response)


@route("GET", "/v1/responses/{id}")
def retrieve_response(request: Request) -> Reply:
    if request.query.get("stream") in ("true", "1"):
        raise ApiError(
            400, "The offline server cannot stream a stored response again; retrieve it without stream.", param="stream"
        )
    with request.state.lock:
        return Reply(json=dict(_stored(request.state, request.params["id"]).response))


@route("DELETE", "/v1/responses/{id}")
def delete_response(request: Request) -> Reply:
    with request.state.lock:
        stored = _stored(request.state, request.params["id"])
        stored.cancel.set()
        del request.state.responses[request.params["id"]]
    return Reply(json={"id": request.params["id"], "object": "response", "deleted": True})


@route("POST", "/v1/responses/{id}/cancel")
def cancel_response(request: Request) -> Reply:
    with request.state.lock:
        stored = _stored(request.state, request.params["id"])
        if not stored.response.get("background"):
            raise ApiError(400, "Only responses created with background=true can be cancelled.", param="response_id")
        if stored.response["status"] in ("queued", "in_progress"):
            stored.cancel.set()
            stored.response = {**stored.response, "status": "cancelled"}
        return Reply(json=dict(stored.response))


@route("GET", "/v1/responses/{id}/input_items")
def list_input_items(request: Request) -> Reply:
    with request.state.lock:
        items = list(_stored(request.state, request.params["id"]).input_items)
    return Reply(json=paginate(items, request.query))


@route("POST", "/v1/responses/input_tokens")
def count_input_tokens(request: Request) -> Reply:
    turn = prepare(request.body, request.state, need_model=False, compute=False)
    return Reply(json={"object": "response.input_tokens", "input_tokens": turn.input_tokens})


@route("POST", "/v1/responses/compact")
def compact(request: Request) -> Reply:
    """One compaction item that stands for the whole thread (ours is reversible: see _items).

    It is also stored as a response, so ``previous_response_id=<compaction id>`` continues the thread.
    """
    state = request.state
    turn = prepare(request.body, state)
    item = encode_compaction(turn.items)
    compact_usage = {
        "input_tokens": turn.input_tokens,
        "input_tokens_details": {"cached_tokens": turn.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": 0,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": turn.input_tokens,
    }
    compacted = {
        "id": new_id("resp"),
        "object": "response.compaction",
        "created_at": int(time.time()),
        "output": [item],
        "usage": compact_usage,
    }
    output = Output([item], [], 0)
    stored_turn = type(turn)(
        turn.body,
        turn.model,
        turn.instructions,
        [],
        [],
        render_context(turn.instructions, [item]),
        turn.input_tokens,
        0,
    )
    remember(
        state,
        stored_turn,
        response_object(
            stored_turn,
            id=compacted["id"],
            created_at=compacted["created_at"],
            status="completed",
            output=[item],
            usage=usage(turn, output),
        ),
    )
    return Reply(json=compacted)


@route("POST", "/v1/conversations")
def create_conversation(request: Request) -> Reply:
    body = request.body or {}
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    conversation = request.state.new_conversation(body.get("metadata"), normalize_input(body.get("items") or []))
    return Reply(json=conversation.resource())


def _conversation(state: State, conversation_id: str):
    conversation = state.conversations.get(conversation_id)
    if conversation is None:
        raise not_found("Conversation", conversation_id, why=state.conversations.forgotten("conversations"))
    return conversation


@route("GET", "/v1/conversations/{id}")
def retrieve_conversation(request: Request) -> Reply:
    with request.state.lock:
        return Reply(json=_conversation(request.state, request.params["id"]).resource())


@route("POST", "/v1/conversations/{id}")
def update_conversation(request: Request) -> Reply:
    with request.state.lock:
        conversation = _conversation(request.state, request.params["id"])
        conversation.metadata = dict((request.body or {}).get("metadata") or {})
        return Reply(json=conversation.resource())


@route("DELETE", "/v1/conversations/{id}")
def delete_conversation(request: Request) -> Reply:
    with request.state.lock:
        _conversation(request.state, request.params["id"])
        del request.state.conversations[request.params["id"]]
    return Reply(json={"id": request.params["id"], "object": "conversation.deleted", "deleted": True})


@route("GET", "/v1/conversations/{id}/items")
def list_conversation_items(request: Request) -> Reply:
    with request.state.lock:
        items = list(_conversation(request.state, request.params["id"]).items)
    return Reply(json=paginate(items, request.query))


@route("POST", "/v1/conversations/{id}/items")
def add_conversation_items(request: Request) -> Reply:
    items = normalize_input((request.body or {}).get("items") or [])
    with request.state.lock:
        conversation = _conversation(request.state, request.params["id"])
        conversation.items.extend(items)
    return Reply(json=paginate(items, {"limit": "100"}, default_order="asc"))


@route("GET", "/v1/conversations/{id}/items/{item_id}")
def retrieve_conversation_item(request: Request) -> Reply:
    with request.state.lock:
        for item in _conversation(request.state, request.params["id"]).items:
            if item.get("id") == request.params["item_id"]:
                return Reply(json=item)
    raise not_found("Item", request.params["item_id"])


@route("DELETE", "/v1/conversations/{id}/items/{item_id}")
def delete_conversation_item(request: Request) -> Reply:
    with request.state.lock:
        conversation = _conversation(request.state, request.params["id"])
        kept = [item for item in conversation.items if item.get("id") != request.params["item_id"]]
        if len(kept) == len(conversation.items):
            raise not_found("Item", request.params["item_id"])
        conversation.items = kept
        return Reply(json=conversation.resource())


# The demo model and OpenAI's models are answered (others get the API's 404); these are the ones listed.
LISTED_MODELS = (DEMO_MODEL, "gpt-5-mini", "gpt-4.1-mini", "gpt-4o-mini", "o4-mini")


def _model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 1735689600, "owned_by": "nbopenai-local"}


@route("GET", "/v1/models")
def list_models(request: Request) -> Reply:
    return Reply(json={"object": "list", "data": [_model(m) for m in LISTED_MODELS]})


@route("GET", "/v1/models/{id}")
def retrieve_model(request: Request) -> Reply:
    if not request.state.knows_model(request.params["id"]):
        raise model_not_found(request.params["id"])
    return Reply(json=_model(request.params["id"]))
