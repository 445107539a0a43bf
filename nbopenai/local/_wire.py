"""What comes in and what goes back on the wire: ``Incoming``, ``Reply`` and the items of a stream.

A stream (``Reply.events``) yields ``Event`` objects, and may also yield ``Comment`` (an SSE comment
line, the keep-alive pings proxies send), ``Pause`` (flush, then wait) or ``DROP`` (cut the connection
right there). Faults (``_faults``) read requests and shape replies with these, so they live apart from
the routes; a route's ``Request`` (``_routes``) adds the server's state and the request's fault.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Comment", "Cut", "DROP", "Event", "Incoming", "Pause", "Reply"]


@dataclass(frozen=True)
class Event:
    """One server-sent event: ``event: <name>`` (omitted when None) and ``data: <json>``."""

    name: str | None
    data: Any
    delta: bool = False  # the writer waits ``chunk_delay`` before each delta


@dataclass(frozen=True)
class Comment:
    """An SSE comment line (``: text``): clients ignore it; proxies send them to keep a connection alive."""

    text: str


@dataclass(frozen=True)
class Pause:
    """Flush what was written, then wait ``seconds`` before the next item of the stream."""

    seconds: float


DROP = object()  # yielded by a stream to have the connection cut right there


class Cut(Exception):
    """Raised before any byte of the answer to have the connection cut (RST), as a crashed proxy would."""


@dataclass
class Incoming:
    """A request as it arrived, before any route ran: what a fault may look at."""

    method: str
    path: str
    params: dict[str, str]  # named groups of the route pattern
    query: dict[str, str]
    headers: dict[str, str]  # lowercase names
    body: Any  # parsed JSON, or None
    raw: bytes

    @property
    def streaming(self) -> bool:
        return isinstance(self.body, dict) and self.body.get("stream") is True

    @property
    def background(self) -> bool:
        return isinstance(self.body, dict) and self.body.get("background") is True


@dataclass
class Reply:
    status: int = 200
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    events: Iterator[Any] | None = None  # server-sent events (Event, Comment, Pause or DROP)
    content: bytes | None = None  # a raw body (file downloads), sent with ``content_type``
    content_type: str = "application/octet-stream"
    # A Content-Length larger than ``content``: the connection is closed after what there is (a cut body).
    claimed_length: int | None = None
