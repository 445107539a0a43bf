"""The HTTP layer: a keep-alive ``ThreadingHTTPServer``, routing, faults, JSON and SSE replies.

Every answer carries an ``x-request-id``; every error is in OpenAI's envelope. Streams use chunked
transfer encoding so the connection stays open for the client's pool afterwards. A client that
goes away mid-answer costs the server nothing but that connection.
"""

from __future__ import annotations

import json
import secrets
import socket
import struct
import sys
import threading
import time
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .._core._tokens import count_tokens
from . import _batches, _chat, _routes
from ._azure import azure_path
from ._errors import ApiError, error_body
from ._faults import MODEL_ROUTES, Fault, parse_fault_header, unauthorized_error
from ._items import normalize_input, render_context
from ._routes import Request, Route
from ._state import RecordedRequest, State
from ._wire import DROP, Comment, Cut, Event, Pause, Reply

__all__ = ["LocalHTTPServer", "route_table"]

ADMIN_PREFIX = "/_nbopenai/"
_DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)
_FLUSH_BYTES = 64 * 1024


def route_table() -> list[Route]:
    """Every route: each module declares its own ``ROUTES`` (see _routes.route)."""
    return [*_routes.ROUTES, *_chat.ROUTES, *_batches.ROUTES]


class _Aborted(Exception):
    """The connection was cut on purpose (the ``drop`` fault) or by the client."""


class LocalHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256  # benchmarks open many connections at once

    def __init__(self, address: tuple[str, int], state: State, admin: Any) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.state = state
        self.admin = admin  # callable(method, name, body) -> (status, json) for the /_nbopenai routes
        self.routes = route_table()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Close idle keep-alive connections too, so no handler thread outlives ``stop``."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], _DISCONNECTS + (_Aborted, OSError)):
            return
        traceback.print_exc()


def _token_cost(path: str, body: Any) -> int:
    """What the API charges a request against the TPM limit before running it: its prompt plus ``max_output_tokens``."""
    if not isinstance(body, dict):
        return 0
    try:
        if path == "/v1/chat/completions":
            body = _chat.responses_body(body)
        items = normalize_input(body.get("input"))
    except ApiError:
        return 0  # the route answers the 400
    instructions = body.get("instructions") if isinstance(body.get("instructions"), str) else None
    limit = body.get("max_output_tokens")
    reserved = limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else 0
    model = body.get("model") if isinstance(body.get("model"), str) else ""
    return count_tokens(render_context(instructions, items), model) + reserved


def _sse_bytes(event: Event | Comment) -> bytes:
    if isinstance(event, Comment):
        return f": {event.text}\n\n".encode()
    data = (
        event.data if isinstance(event.data, str) else json.dumps(event.data, separators=(",", ":"), ensure_ascii=False)
    )
    head = f"event: {event.name}\n" if event.name else ""
    return f"{head}data: {data}\n\n".encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nbopenai-local"
    sys_version = ""
    wbufsize = _FLUSH_BYTES  # buffered: a stream of small events goes out in few packets
    server: LocalHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests and notebooks do not want a line per request

    def handle(self) -> None:
        try:
            super().handle()
        except _DISCONNECTS + (_Aborted,):
            self.close_connection = True

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_DELETE = do_PUT = do_PATCH = do_GET

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server's own errors (bad request line, header too long) in OpenAI's envelope too.
        self.close_connection = True
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "Error"
        self._send_json(code, error_body(message or phrase, "invalid_request_error"), "req_" + secrets.token_hex(16))

    def _dispatch(self) -> None:
        request_id = "req_" + secrets.token_hex(16)
        started = time.monotonic()
        state = self.server.state
        split = urlsplit(self.path)
        path = split.path.rstrip("/") or "/"
        query = dict(parse_qsl(split.query))
        headers = {name.lower(): value for name, value in self.headers.items()}
        sent_path = path
        try:
            path = azure_path(path, query)
        except ApiError as error:
            self._send_error(error, request_id)
            return
        try:
            raw = self._read_body(state.config.max_body_bytes)
        except ApiError as error:
            self.close_connection = True
            claimed = headers.get("content-length", "")
            size = int(claimed) if claimed.isdigit() else 0
            state.record(RecordedRequest(self.command, path, headers, None, size, started, sent_path=sent_path))
            self._send_error(error, request_id)
            return
        if path.startswith(ADMIN_PREFIX):
            self._admin(path[len(ADMIN_PREFIX) :], raw, request_id)
            return
        fault: Fault | None = None
        try:
            body = self._parse_json(raw, headers)
            self._admit(path, body)
            if headers.get("x-nbopenai-fault"):
                try:
                    fault = parse_fault_header(headers["x-nbopenai-fault"])
                except ValueError as error:
                    raise ApiError(400, str(error), param="x-nbopenai-fault") from None
            else:
                config = state.config
                fault = state.faults.take(self.command, path, rate=config.fault_rate, kinds=tuple(config.fault_kinds))
        except ApiError as error:
            limited = "rate_limit" if error.code == "rate_limit_exceeded" else None
            kept = body if limited else None
            state.record(
                RecordedRequest(self.command, path, headers, kept, len(raw), started, limited, sent_path=sent_path)
            )
            self._send_error(error, request_id)
            return
        kind = fault.kind if fault else None
        state.record(RecordedRequest(self.command, path, headers, body, len(raw), started, kind, sent_path=sent_path))
        request = Request(self.command, path, {}, query, headers, body, raw, state, fault)
        try:
            reply = self._before_first_byte(request)
            if reply is None:
                if fault is not None:
                    request.body = fault.request_body(body)
                reply = self._route(request)
            if fault is not None:
                reply = fault.on_reply(reply)
        except ApiError as error:
            self._send_error(error, request_id)
            return
        except Cut:
            self._abort()
        except (_Aborted,) + _DISCONNECTS:
            raise
        except Exception:
            # A bug in a route: answer 500 in the API's shape rather than dropping the connection.
            traceback.print_exc()
            self._send_error(
                ApiError(500, "The offline server failed on this request (see its stderr).", type="server_error"),
                request_id,
            )
            return
        self._send_reply(reply, request_id, started)

    def _admit(self, path: str, body: Any) -> None:
        """Charge a model request to the rate limits (when set), or raise the 429 the API would send."""
        state = self.server.state
        config = state.config
        if not (config.rpm or config.tpm) or (self.command, path) not in MODEL_ROUTES:
            return
        model = body.get("model") if isinstance(body, dict) and isinstance(body.get("model"), str) else "this model"
        error = state.limits.admit(config, _token_cost(path, body) if config.tpm else 0, model)
        if error is not None:
            raise error

    def _before_first_byte(self, request: Request) -> Reply | None:
        """Latency, the API key, then the fault's first hook (which may answer instead of the route)."""
        config = self.server.state.config
        if config.latency > 0:
            time.sleep(config.latency)
        if config.require_api_key is not None:
            sent = (request.headers.get("authorization", ""), "Bearer " + request.headers.get("api-key", ""))
            if f"Bearer {config.require_api_key}" not in sent:  # Azure's clients send the key as api-key
                raise unauthorized_error()
        if config.token_lifetime is not None:
            self.server.state.tokens.admit(request.headers, config.expire_tokens_after)
        return request.fault.before_body(request) if request.fault is not None else None

    def _route(self, request: Request) -> Reply:
        allowed, path = [], request.path
        for route in self.server.routes:
            match = route.pattern.match(path)
            if match is None:
                continue
            if route.method != self.command:
                allowed.append(route.method)
                continue
            request.params = match.groupdict()
            return route.handler(request)
        if allowed:
            raise ApiError(
                405, f"Method {self.command} is not allowed on {path} (use {', '.join(sorted(set(allowed)))})."
            )
        raise ApiError(404, f"Invalid URL ({self.command} {path})", code="unknown_url")

    def _read_body(self, limit: int) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            return self._read_chunked(limit)
        try:
            length = int(self.headers.get("content-length") or 0)
        except ValueError:
            raise ApiError(400, "Invalid Content-Length header.") from None
        if length < 0:  # read(-1) would wait for the client to close the connection
            raise ApiError(400, "Invalid Content-Length header.")
        if length > limit:
            # Read and discard a moderately oversized body so the connection stays in sync.
            if length <= 4 * limit:
                self._discard(length)
            raise ApiError(
                413, f"Request body too large: {length} bytes; the limit is {limit} bytes.", code="request_too_large"
            )
        return self.rfile.read(length) if length else b""

    def _discard(self, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 20))
            if not chunk:
                break
            length -= len(chunk)

    def _read_chunked(self, limit: int) -> bytes:
        parts, total = [], 0
        while True:
            try:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            except ValueError:
                raise ApiError(400, "Invalid chunked request body.") from None
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            total += size
            if total > limit:
                raise ApiError(413, f"Request body too large: over {limit} bytes.", code="request_too_large")
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    @staticmethod
    def _parse_json(raw: bytes, headers: dict[str, str]) -> Any:
        content_type = headers.get("content-type", "")
        if not raw or ("json" not in content_type and content_type and raw.lstrip()[:1] not in (b"{", b"[")):
            return None
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as error:  # RecursionError: nesting too deep
            raise ApiError(
                400,
                f"We could not parse the JSON body of your request ({error}). The body must be valid JSON.",
            ) from None

    def _admin(self, name: str, raw: bytes, request_id: str) -> None:
        try:
            body = self._parse_json(raw, {"content-type": "application/json"}) or {}
            status, payload = self.server.admin(self.command, name, body)
        except ApiError as error:
            self._send_error(error, request_id)
            return
        except (TypeError, ValueError) as error:
            self._send_error(ApiError(400, str(error)), request_id)
            return
        self._send_json(status, payload, request_id)

    def _common_headers(self, request_id: str, started: float | None, headers: dict[str, str]) -> None:
        """The headers of every answer (the rate-limit ones too), then ``headers``, which take precedence."""
        state = self.server.state
        common = {"x-request-id": request_id, "openai-version": "2020-10-01", **state.limits.headers(state.config)}
        if started is not None:
            common["openai-processing-ms"] = str(int((time.monotonic() - started) * 1000))
        for name, value in {**common, **headers}.items():
            self.send_header(name, value)

    def _send_json(
        self,
        status: int,
        payload: Any,
        request_id: str,
        headers: dict[str, str] | None = None,
        started: float | None = None,
    ) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self._common_headers(request_id, started, headers or {})
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _send_error(self, error: ApiError, request_id: str) -> None:
        self._send_json(error.status, error.body(), request_id, error.headers)

    def _send_reply(self, reply: Reply, request_id: str, started: float) -> None:
        if reply.events is not None:
            self._send_events(reply, request_id, started)
        elif reply.content is not None:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(reply.claimed_length or len(reply.content)))
            self._common_headers(request_id, started, reply.headers)
            self.end_headers()
            self.wfile.write(reply.content)
            self.wfile.flush()
            if reply.claimed_length is not None and reply.claimed_length > len(reply.content):
                self._abort()  # the rest never comes
        else:
            self._send_json(reply.status, reply.json, request_id, reply.headers, started)

    def _send_events(self, reply: Reply, request_id: str, started: float) -> None:
        events = reply.events
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self._common_headers(request_id, started, reply.headers)
            self.end_headers()
            state = self.server.state
            for event in events:
                if event is DROP:
                    self._abort()
                if isinstance(event, Pause):
                    self.wfile.flush()
                    time.sleep(event.seconds)
                    continue
                delay = state.config.chunk_delay if isinstance(event, Event) and event.delta else 0.0
                if delay > 0:
                    self.wfile.flush()
                    time.sleep(delay)
                data = _sse_bytes(event)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()

    def _abort(self) -> None:
        """Cut the connection now (RST), as a crashed proxy would, and stop handling this request."""
        try:
            self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        raise _Aborted()
