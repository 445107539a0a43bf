"""Input items: normalise what clients send, and render items to the text that tokens are counted on.

The rendering is deliberately plain, one line per item, so a test can write the expected text by hand::

    developer: <instructions>
    user: <text> [image]
    assistant: <text>
    function_call get_weather({"city": "Paris"})
    function_call_output call_abc: sunny
"""

from __future__ import annotations

import base64
import json
from typing import Any

from ._errors import ApiError
from ._state import new_id

__all__ = [
    "normalize_input",
    "render_context",
    "message_text",
    "count_images",
    "encode_compaction",
    "decode_compaction",
]

_TEXT_PARTS = ("input_text", "output_text", "text", "summary_text", "reasoning_text")
_COMPACTION_MAGIC = "nbopenai-compaction-v1:"


def _text_part(role: str, text: str) -> dict[str, Any]:
    if role == "assistant":
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"type": "input_text", "text": text}


def _normalize_message(item: dict[str, Any]) -> dict[str, Any]:
    role = item.get("role", "user")
    if role not in ("user", "assistant", "system", "developer"):
        raise ApiError(
            400,
            f"Invalid value: '{role}'. Supported values are: 'user', 'assistant', 'system', and 'developer'.",
            param="input[].role",
            code="invalid_value",
        )
    content = item.get("content")
    if isinstance(content, str):
        parts = [_text_part(role, content)]
    elif isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or "type" not in part:
                raise ApiError(400, "Each content part must be an object with a 'type'.", param="input[].content")
            part = dict(part)
            if part["type"] == "input_image":
                part.setdefault("detail", "auto")
            if part["type"] == "output_text":
                part.setdefault("annotations", [])
                part.setdefault("logprobs", [])
            parts.append(part)
    else:
        raise ApiError(400, "Message content must be a string or a list of content parts.", param="input[].content")
    message = {"type": "message", "role": role, "content": parts, "id": item.get("id") or new_id("msg")}
    message["status"] = item.get("status") or "completed"
    return message


def normalize_input(value: Any) -> list[dict[str, Any]]:
    """``input`` as a list of items with ids and statuses, the shape ``input_items`` lists them in."""
    if value is None:
        return []
    if isinstance(value, str):
        return [_normalize_message({"role": "user", "content": value})]
    if not isinstance(value, list):
        raise ApiError(
            400,
            "Invalid type for 'input': expected a string or an array of input items.",
            param="input",
            code="invalid_type",
        )
    items = []
    for raw in value:
        if not isinstance(raw, dict):
            raise ApiError(400, "Each input item must be an object.", param="input", code="invalid_type")
        kind = raw.get("type") or ("message" if "role" in raw else None)
        if kind == "message":
            items.append(_normalize_message(raw))
        elif kind == "function_call_output":
            if "call_id" not in raw or "output" not in raw:
                raise ApiError(400, "A function_call_output item needs 'call_id' and 'output'.", param="input")
            items.append({**raw, "id": raw.get("id") or new_id("fco"), "status": raw.get("status") or "completed"})
        elif kind == "function_call":
            items.append({**raw, "id": raw.get("id") or new_id("fc"), "status": raw.get("status") or "completed"})
        elif kind == "item_reference":
            raise ApiError(400, "item_reference inputs are not supported by the offline server.", param="input")
        elif kind:
            items.append(dict(raw))
        else:
            raise ApiError(400, "Each input item needs a 'type' (or a 'role' for messages).", param="input")
    return items


def message_text(item: dict[str, Any]) -> str:
    """The text of a message item, parts joined by a space."""
    content = item.get("content")
    if isinstance(content, str):
        return content
    return " ".join(part.get("text", "") for part in content or [] if part.get("type") in _TEXT_PARTS)


def count_images(item: dict[str, Any]) -> int:
    content = item.get("content")
    if not isinstance(content, list):
        return 0
    return sum(1 for part in content if isinstance(part, dict) and part.get("type") == "input_image")


def _render_item(item: dict[str, Any]) -> str:
    kind = item.get("type")
    if kind == "message":
        text = message_text(item)
        images = " [image]" * count_images(item)
        return f"{item.get('role', 'user')}: {text}{images}\n"
    if kind == "function_call":
        return f"function_call {item.get('name')}({item.get('arguments', '')})\n"
    if kind == "function_call_output":
        output = item.get("output")
        if not isinstance(output, str):
            output = json.dumps(output)
        return f"function_call_output {item.get('call_id')}: {output}\n"
    if kind == "compaction":
        return "".join(_render_item(inner) for inner in decode_compaction(item))
    if kind == "reasoning":
        return ""
    return json.dumps(item, sort_keys=True) + "\n"


def render_context(instructions: str | None, items: list[dict[str, Any]]) -> str:
    """The text whose tokens are the input tokens: instructions, then one line per item."""
    head = f"developer: {instructions}\n" if instructions else ""
    return head + "".join(_render_item(item) for item in items)


def expand_compactions(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Items with every compaction item replaced by the items it stands for (what the demo reads)."""
    expanded = []
    for item in items:
        if item.get("type") == "compaction":
            expanded.extend(expand_compactions(decode_compaction(item)))
        else:
            expanded.append(item)
    return expanded


def encode_compaction(items: list[dict[str, Any]]) -> dict[str, Any]:
    """A compaction item whose opaque ``encrypted_content`` carries the items themselves (base64 JSON).

    The real service encrypts a summary; ours is reversible so a later turn sees the whole thread.
    """
    payload = _COMPACTION_MAGIC + json.dumps(items, separators=(",", ":"))
    content = base64.b64encode(payload.encode()).decode()
    return {"type": "compaction", "id": new_id("cmp"), "encrypted_content": content, "created_by": "nbopenai-local"}


def decode_compaction(item: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        payload = base64.b64decode(item.get("encrypted_content", ""), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        payload = ""
    if not payload.startswith(_COMPACTION_MAGIC):
        raise ApiError(
            400,
            "The compaction item was not made by this server (encrypted_content is not ours).",
            param="input",
            code="invalid_encrypted_content",
        )
    return json.loads(payload[len(_COMPACTION_MAGIC) :])
