"""Stream state: events in, updates out. No I/O, no display, no clock of its own.

``StreamState.handle(event, now)`` takes one Responses API stream event (an SDK object or a plain
dict) and returns the updates it implies. Sync and async drivers, the widget and the stdout
printer all share it; tests feed it recorded events.

A failure can arrive three ways and all end in ``Failed``: the flat ``error`` event (yielded by the
SDK), ``response.failed``, or the nested ``error`` event that the SDK raises as ``openai.APIError``
while iterating (the driver passes that to :meth:`StreamState.fail`).

The event names are the API's, spelled here and again, on purpose, where the offline server writes
them (``local/_responses.py``, ``local/_faults.py``): the server is checked against OpenAI's OpenAPI
description (``tests/test_local_openapi.py``) and this parser against the server, so a misspelling on
either side fails a test; one shared constant would let both sides agree with each other and not with
the API. The shapes differ too: these are what a stream means to a view, the server's ``_wire`` items
are SSE frames to write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["StreamState", "Started", "TextDelta", "Completed", "Incomplete", "Failed", "Update"]


@dataclass(frozen=True)
class Started:
    response_id: str
    model: str | None


@dataclass(frozen=True)
class TextDelta:
    delta: str


@dataclass(frozen=True)
class Completed:
    response: Any


@dataclass(frozen=True)
class Incomplete:
    response: Any
    reason: str | None


@dataclass(frozen=True)
class Failed:
    message: str
    code: str | None = None
    response: Any = None


Update = Started | TextDelta | Completed | Incomplete | Failed


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


@dataclass
class StreamState:
    """Accumulates one response stream.

    Attributes
    ----------
    text
        All text received so far (exact, never throttled).
    response_id, model
        From ``response.created``.
    first_text_at
        The ``now`` passed with the first text delta (time to first token).
    final
        The finished response object, once ``completed``/``incomplete``/``failed`` arrived.
    status
        ``streaming`` until an end event, then ``completed``, ``incomplete`` or ``failed``.
    refused
        The text is a refusal (``response.refusal.delta``), not an answer.
    """

    response_id: str | None = None
    model: str | None = None
    first_text_at: float | None = None
    final: Any = None
    status: str = "streaming"
    error: str | None = None
    error_code: str | None = None
    refused: bool = False
    _parts: list[str] = field(default_factory=list, repr=False)

    @property
    def text(self) -> str:
        if len(self._parts) > 1:
            self._parts[:] = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    @property
    def done(self) -> bool:
        return self.status != "streaming"

    def handle(self, event: Any, now: float | None = None) -> list[Update]:
        kind = _get(event, "type")
        if kind == "response.refusal.delta":  # the model's refusal is its answer: show its words
            self.refused = True
            kind = "response.output_text.delta"
        if kind == "response.output_text.delta":
            delta = _get(event, "delta") or ""
            if self.first_text_at is None:
                self.first_text_at = now
            self._parts.append(delta)
            return [TextDelta(delta)]
        if kind == "response.created":
            response = _get(event, "response")
            self.response_id = _get(response, "id")
            self.model = _get(response, "model")
            return [Started(self.response_id, self.model)]
        if kind == "response.completed":
            self.final, self.status = _get(event, "response"), "completed"
            return [Completed(self.final)]
        if kind == "response.incomplete":
            self.final, self.status = _get(event, "response"), "incomplete"
            details = _get(self.final, "incomplete_details")
            reason = _get(details, "reason") if details is not None else None
            self.error = f"incomplete ({reason})" if reason else "incomplete"
            return [Incomplete(self.final, reason)]
        if kind == "response.failed":
            response = _get(event, "response")
            error = _get(response, "error")
            if self.status != "failed":  # an `error` event may already have said why
                self.fail(_get(error, "message") or "the response failed", _get(error, "code"))
            self.final = response
            return [Failed(self.error or "the response failed", self.error_code, response)]
        if kind == "error":
            return [self.fail(_get(event, "message") or "stream error", _get(event, "code"))]
        return []

    def fail(self, message: str, code: str | None = None) -> Failed:
        """Mark the stream failed (also used for the nested ``error`` event the SDK raises)."""
        self.status, self.error, self.error_code = "failed", message, code
        return Failed(message, code)
