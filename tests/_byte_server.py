"""A tiny HTTP server written byte by byte, for answers the offline server cannot give.

``ByteServer(answer)`` listens on 127.0.0.1; for each request it reads the head and the body and
sends back exactly the bytes ``answer(request)`` returns (a ``bytes``, or a list of chunks sent one
by one; a callable in the list is called with the connection, to hold it open, say), then closes the
connection. ``requests`` lists what arrived. Use as a context manager.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["ByteServer", "Received", "http_reply", "json_reply"]


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    received_at: float  # time.monotonic()


def http_reply(status: int, body: bytes, *, headers: dict[str, str] | None = None, length: int | None = None,
               reason: str = "X") -> bytes:
    """A whole HTTP/1.1 answer; ``length`` overrides the ``Content-Length`` (a lie, to cut a body short); a header
    given as ``None`` is left out."""
    head = {"content-type": "application/json", "content-length": str(len(body) if length is None else length),
            "connection": "close", **(headers or {})}
    lines = [
        f"HTTP/1.1 {status} {reason}",
        *(f"{name}: {value}" for name, value in head.items() if value is not None),
        "",
        "",
    ]
    return "\r\n".join(lines).encode() + body


def json_reply(status: int, payload: Any, **options: Any) -> bytes:
    return http_reply(status, json.dumps(payload).encode(), **options)


class ByteServer:
    def __init__(self, answer: Callable[[Received], bytes]) -> None:
        self.answer = answer
        self.requests: list[Received] = []
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(64)
        self.port = self._socket.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._lock = threading.Lock()

    def __enter__(self) -> ByteServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._socket.close()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(connection,), daemon=True).start()

    def _handle(self, connection: socket.socket) -> None:
        with connection:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = connection.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
            while len(body) < int(headers.get("content-length", "0")):
                chunk = connection.recv(65536)
                if not chunk:
                    break
                body += chunk
            method, path, _ = request_line.split(" ", 2)
            try:
                parsed = json.loads(body) if body else None
            except ValueError:
                parsed = None
            received = Received(method, path, headers, parsed, time.monotonic())
            with self._lock:
                self.requests.append(received)
            reply = self.answer(received)
            for part in reply if isinstance(reply, list) else [reply]:
                if callable(part):
                    part(connection)
                    continue
                try:
                    connection.sendall(part)
                except OSError:
                    return
