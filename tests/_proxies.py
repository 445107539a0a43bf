"""Small servers written byte by byte: what a careless proxy or a server that is not the API sends.

``RawServer(handler)`` listens on 127.0.0.1. For each connection it reads one request (the head,
then ``Content-Length`` bytes of body), calls ``handler(request)`` and writes the bytes it returns
exactly as they are, then closes the connection. Nothing is framed for the handler: the status
line, the headers and the body are its own, so a test controls every byte (a wrong content type,
an event stream that quotes the request's headers, a 501 from a plain web server).

``ECHOES`` are the shapes an echo of the ``Authorization`` header can take, and ``echo_proxy``
routes each request to one of them by a marker in the prompt (``FAULT:<name>``), so a notebook
in a real kernel can meet every shape in turn.
"""

from __future__ import annotations

import gzip
import json
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["RawServer", "RawRequest", "http", "sse", "response_json", "echo_proxy", "ECHOES"]


@dataclass
class RawRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def authorization(self) -> str:
        return self.headers.get("authorization", "")

    def json(self) -> dict:
        return json.loads(self.body) if self.body else {}


@dataclass
class RawServer:
    """A one-request-per-connection HTTP server whose answers are whatever ``handler`` returns."""

    handler: Callable[[RawRequest], bytes]
    requests: list[RawRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="raw-server", daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = connection.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, path, _ = request_line.split(" ", 2)
            headers = {}
            for line in header_lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            while len(body) < length:
                chunk = connection.recv(65536)
                if not chunk:
                    return
                body += chunk
            request = RawRequest(method, path, headers, body)
            self.requests.append(request)
            connection.sendall(self.handler(request))

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> "RawServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def http(status: int, content_type: str | None, body: bytes | str, *, reason: str = "X", headers: dict | None = None) -> bytes:
    """One whole HTTP/1.1 response, byte for byte (``Connection: close``, a Content-Length)."""
    body = body.encode() if isinstance(body, str) else body
    lines = [f"HTTP/1.1 {status} {reason}"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    lines += [f"Content-Length: {len(body)}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def sse(*events: dict) -> bytes:
    """A 200 event stream of ``events`` (each ``event:`` line named by its ``type``)."""
    body = "".join(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n" for event in events)
    return http(200, "text/event-stream", body)


def response_json(status: str = "completed", *, text: str = "", error: dict | None = None, id: str = "resp_raw1") -> dict:
    """A Responses API ``response`` object, as small as the SDK and nbopenai read it."""
    output = []
    if text:
        output.append({
            "type": "message", "id": "msg_raw1", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        })
    usage = {"input_tokens": 5, "output_tokens": 3, "total_tokens": 8,
             "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}
    return {"id": id, "object": "response", "created_at": 1, "model": "nbopenai-local", "status": status,
            "output": output, "error": error, "usage": usage if status in ("completed", "failed") else None}


def _echo(request: RawRequest) -> str:
    """What the proxy says: the request's Authorization header, quoted."""
    return f"proxy saw {request.authorization}"


def _created(response: dict) -> list[dict]:
    return [{"type": "response.created", "response": {**response, "status": "in_progress", "output": []}, "sequence_number": 0},
            {"type": "response.output_text.delta", "delta": "Some text, ", "item_id": "msg_raw1", "output_index": 0,
             "content_index": 0, "sequence_number": 1}]


def _stream_error_event(request: RawRequest) -> bytes:
    """Text, then the flat ``error`` event quoting the header."""
    return sse(*_created(response_json("in_progress")),
               {"type": "error", "code": "server_error", "message": _echo(request), "param": None, "sequence_number": 2})


def _stream_response_failed(request: RawRequest) -> bytes:
    """Text, then ``response.failed`` whose error quotes the header."""
    failed = response_json("failed", error={"code": "server_error", "message": _echo(request)})
    return sse(*_created(failed), {"type": "response.failed", "response": failed, "sequence_number": 2})


def _stream_nested_error(request: RawRequest) -> bytes:
    """Text, then the nested ``error`` event (the SDK raises it) quoting the header."""
    return sse(*_created(response_json("in_progress")),
               {"type": "error", "error": {"code": "server_error", "message": _echo(request)}, "sequence_number": 2})


def _failed_body(request: RawRequest, id: str = "resp_raw1") -> bytes:
    """A 200 JSON response with ``status: "failed"`` whose error quotes the header (also when a stream was asked)."""
    failed = response_json("failed", error={"code": "server_error", "message": _echo(request)}, id=id)
    return http(200, "application/json", json.dumps(failed))


def _status_401(request: RawRequest) -> bytes:
    """401, the error quoting the header, in the body and in a response header."""
    body = {"error": {"message": _echo(request), "type": "invalid_request_error", "code": "invalid_api_key"}}
    return http(401, "application/json", json.dumps(body), reason="Unauthorized", headers={"x-request-id": _echo(request)})


def _failed_body_gzip(request: RawRequest) -> bytes:
    """The failed 200 body, gzip-compressed (a scrubber must read it decoded)."""
    head, _, body = _failed_body(request).partition(b"\r\n\r\n")
    packed = gzip.compress(body)
    head = head.replace(f"Content-Length: {len(body)}".encode(), f"Content-Length: {len(packed)}".encode())
    return head + b"\r\nContent-Encoding: gzip\r\n\r\n" + packed


def _stream_split_echo(request: RawRequest) -> bytes:
    """The error event in HTTP chunks cut in the middle of the key (each chunk reaches the reader alone)."""
    body = _stream_error_event(request).partition(b"\r\n\r\n")[2]
    key = request.authorization.partition(" ")[2].encode()
    at = body.index(key) + len(key) // 2
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in (body[:at], body[at:]) if piece)
    head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    return head.encode() + chunks + b"0\r\n\r\n"


def _plain_text(request: RawRequest) -> bytes:
    return http(200, "text/plain", f"OK {_echo(request)}")


ECHOES: dict[str, Callable[[RawRequest], bytes]] = {
    "stream_error_event": _stream_error_event,
    "stream_response_failed": _stream_response_failed,
    "stream_nested_error": _stream_nested_error,
    "failed_body": _failed_body,
    "failed_body_gzip": _failed_body_gzip,
    "stream_split_echo": _stream_split_echo,
    "status_401": _status_401,
    "plain_text": _plain_text,
}


def echo_proxy(request: RawRequest) -> bytes:
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
    found = re.search(r"FAULT:([a-z_0-9]+)", request.body.decode("utf-8", "replace"))
    marker = found.group(1) if found else None
    if request.json().get("background"):
        return http(200, "application/json", json.dumps(response_json("queued", id=f"resp_{marker or 'job_queued'}")))
    if marker is not None:
        return ECHOES[marker](request)
    answer = response_json("completed", text="Hello from the raw server.")
    if request.json().get("stream"):
        delta = {"type": "response.output_text.delta", "delta": "Hello from the raw server.", "item_id": "msg_raw1",
                 "output_index": 0, "content_index": 0, "sequence_number": 1}
        return sse(_created(answer)[0], delta, {"type": "response.completed", "response": answer, "sequence_number": 2})
    return http(200, "application/json", json.dumps(answer))
