"""What a careless proxy or a server that is not the API sends, byte by byte (on ``_byte_server.ByteServer``).

``ECHOES`` are the shapes an echo of the ``Authorization`` header can take, and ``echo_proxy``
routes each request to one of them by a marker in the prompt (``FAULT:<name>``), so a notebook
in a real kernel can meet every shape in turn. ``http``, ``sse`` and ``response_json`` build the
bytes: a whole answer with any content type (or none), an event stream, a ``response`` object.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable
from typing import Any

from _byte_server import Received, http_reply

__all__ = ["http", "sse", "response_json", "authorization", "echo_proxy", "ECHOES"]


def http(status: int, content_type: str | None, body: bytes | str, **options: Any) -> bytes:
    """One whole HTTP/1.1 answer labelled ``content_type`` (``None``: no Content-Type header at all)."""
    body = body.encode() if isinstance(body, str) else body
    return http_reply(status, body, headers={"content-type": content_type, **options.pop("headers", {})}, **options)


def authorization(request: Received) -> str:
    """The ``Authorization`` header the client sent (what the proxy echoes)."""
    return request.headers.get("authorization", "")


def sse(*events: dict) -> bytes:
    """A 200 event stream of ``events`` (each ``event:`` line named by its ``type``)."""
    body = "".join(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n" for event in events)
    return http(200, "text/event-stream", body)


def response_json(
    status: str = "completed", *, text: str = "", error: dict | None = None, id: str = "resp_raw1"
) -> dict:
    """A Responses API ``response`` object, as small as the SDK and nbopenai read it."""
    output = []
    if text:
        output.append(
            {
                "type": "message",
                "id": "msg_raw1",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        )
    usage = {
        "input_tokens": 5,
        "output_tokens": 3,
        "total_tokens": 8,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
    }
    return {
        "id": id,
        "object": "response",
        "created_at": 1,
        "model": "nbopenai-local",
        "status": status,
        "output": output,
        "error": error,
        "usage": usage if status in ("completed", "failed") else None,
    }


def _echo(request: Received) -> str:
    """What the proxy says: the request's Authorization header, quoted."""
    return f"proxy saw {authorization(request)}"


def _created(response: dict) -> list[dict]:
    return [
        {
            "type": "response.created",
            "response": {**response, "status": "in_progress", "output": []},
            "sequence_number": 0,
        },
        {
            "type": "response.output_text.delta",
            "delta": "Some text, ",
            "item_id": "msg_raw1",
            "output_index": 0,
            "content_index": 0,
            "sequence_number": 1,
        },
    ]


def _stream_error_event(request: Received) -> bytes:
    """Text, then the flat ``error`` event quoting the header."""
    return sse(
        *_created(response_json("in_progress")),
        {"type": "error", "code": "server_error", "message": _echo(request), "param": None, "sequence_number": 2},
    )


def _stream_response_failed(request: Received) -> bytes:
    """Text, then ``response.failed`` whose error quotes the header."""
    failed = response_json("failed", error={"code": "server_error", "message": _echo(request)})
    return sse(*_created(failed), {"type": "response.failed", "response": failed, "sequence_number": 2})


def _stream_nested_error(request: Received) -> bytes:
    """Text, then the nested ``error`` event (the SDK raises it) quoting the header."""
    return sse(
        *_created(response_json("in_progress")),
        {"type": "error", "error": {"code": "server_error", "message": _echo(request)}, "sequence_number": 2},
    )


def _failed_body(request: Received, id: str = "resp_raw1") -> bytes:
    """A 200 JSON response with ``status: "failed"`` whose error quotes the header (also when a stream was asked)."""
    failed = response_json("failed", error={"code": "server_error", "message": _echo(request)}, id=id)
    return http(200, "application/json", json.dumps(failed))


def _status_401(request: Received) -> bytes:
    """401, the error quoting the header, in the body and in a response header."""
    body = {"error": {"message": _echo(request), "type": "invalid_request_error", "code": "invalid_api_key"}}
    return http(
        401, "application/json", json.dumps(body), reason="Unauthorized", headers={"x-request-id": _echo(request)}
    )


def _failed_body_gzip(request: Received) -> bytes:
    """The failed 200 body, gzip-compressed (a scrubber must read it decoded)."""
    failed = response_json("failed", error={"code": "server_error", "message": _echo(request)})
    return http(
        200, "application/json", gzip.compress(json.dumps(failed).encode()), headers={"content-encoding": "gzip"}
    )


def _stream_split_echo(request: Received) -> bytes:
    """The error event in HTTP chunks cut in the middle of the key (each chunk reaches the reader alone)."""
    body = _stream_error_event(request).partition(b"\r\n\r\n")[2]
    key = authorization(request).partition(" ")[2].encode()
    at = body.index(key) + len(key) // 2
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in (body[:at], body[at:]) if piece)
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + chunks + b"0\r\n\r\n"


def _plain_text(request: Received) -> bytes:
    return http(200, "text/plain", f"OK {_echo(request)}")


ECHOES: dict[str, Callable[[Received], bytes]] = {
    "stream_error_event": _stream_error_event,
    "stream_response_failed": _stream_response_failed,
    "stream_nested_error": _stream_nested_error,
    "failed_body": _failed_body,
    "failed_body_gzip": _failed_body_gzip,
    "stream_split_echo": _stream_split_echo,
    "status_401": _status_401,
    "plain_text": _plain_text,
}


def echo_proxy(request: Received) -> bytes:
    """Answers by the ``FAULT:<name>`` marker of the request (one of ``ECHOES``), else as the API would.

    Background jobs: created queued; ``FAULT:job_failed`` fails when polled (its error quoting the
    header), any other stays queued; every cancel is answered 401 quoting the header.
    """
    if request.path.endswith("/cancel"):
        return _status_401(request)
    if request.method == "GET" and "/responses/" in request.path:  # a job being polled
        response_id = request.path.rsplit("/", 1)[1]
        if response_id == "resp_job_failed":
            return _failed_body(request, id=response_id)
        return http(200, "application/json", json.dumps(response_json("queued", id=response_id)))
    body = request.body if isinstance(request.body, dict) else {}
    found = re.search(r"FAULT:([a-z_0-9]+)", json.dumps(body))
    marker = found.group(1) if found else None
    if body.get("background"):
        return http(200, "application/json", json.dumps(response_json("queued", id=f"resp_{marker or 'job_queued'}")))
    if marker is not None:
        return ECHOES[marker](request)
    answer = response_json("completed", text="Hello from the raw server.")
    if body.get("stream"):
        delta = {
            "type": "response.output_text.delta",
            "delta": "Hello from the raw server.",
            "item_id": "msg_raw1",
            "output_index": 0,
            "content_index": 0,
            "sequence_number": 1,
        }
        return sse(_created(answer)[0], delta, {"type": "response.completed", "response": answer, "sequence_number": 2})
    return http(200, "application/json", json.dumps(answer))
