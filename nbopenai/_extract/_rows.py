"""One input row's outcome, and the pure rule that turns an API response into one.

``classify`` reads SDK ``Response`` objects and plain dicts alike (the Batch API's output file holds
dicts), so the live runner and the batch merger share it and it can be unit-tested on hand-built
responses. Statuses:

=============  ===========================================================================
``ok``         the answer validated; ``value`` holds the instance (a list of them with ``many``)
``refusal``    the model refused (a ``refusal`` content part); ``error`` holds its words
``incomplete`` the response stopped early (``max_output_tokens``, content filter)
``invalid``    JSON that Pydantic rejects, after the re-asks ran out; ``error`` says why
``error``      the API failed after every retry; ``error`` holds the translated message
``cancelled``  never finished: the run was interrupted, or a batch part failed or expired
=============  ===========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pydantic

from .._turns._answer import Usage

__all__ = [
    "RowResult", "Outcome", "classify", "STATUSES", "FAILED", "validation_message", "BOOKKEEPING_COLUMNS",
    "META_COLUMNS",
]

STATUSES = ("ok", "refusal", "incomplete", "invalid", "error", "cancelled")
FAILED = frozenset(STATUSES) - {"ok"}

# The frame's columns for a RowResult (``_frame.build_frame`` fills them), beside the model's fields.
META_COLUMNS = (
    "_status",
    "_error",
    "_attempts",
    "_input_tokens",
    "_cached_tokens",
    "_output_tokens",
    "_reasoning_tokens",
    "_cost_usd",
    "_response_id",
    "_latency_s",
    "_from_cache",
)

# Every column the frame adds beside the model's fields: no field may take one of these names.
BOOKKEEPING_COLUMNS = frozenset({*META_COLUMNS, "_n_items"})


@dataclass(slots=True)
class RowResult:
    """Everything the frame shows about one input row (``pending`` until it ends)."""

    status: str = "pending"
    value: Any = None
    text: str | None = None
    error: str | None = None
    attempts: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float | None = None
    response_id: str | None = None
    latency_s: float | None = None
    from_cache: bool = False

    def add_usage(self, usage: Usage, cost: float | None) -> None:
        self.input_tokens += usage.input
        self.cached_tokens += usage.cached
        self.output_tokens += usage.output
        self.reasoning_tokens += usage.reasoning
        if cost is not None:
            self.cost_usd = (self.cost_usd or 0.0) + cost


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str
    value: Any = None
    text: str | None = None
    error: str | None = None


def _get(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def validation_message(exc: pydantic.ValidationError, limit: int = 5) -> str:
    """A short, one-line account of what failed validation (field path and reason)."""
    parts = []
    for error in exc.errors(include_url=False)[:limit]:
        where = ".".join(str(part) for part in error.get("loc", ())) or "(root)"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    more = exc.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def classify(response: Any, parse: Any) -> Outcome:
    """The outcome of one response; ``parse(text)`` validates the answer (``StrictFormat.parse``)."""
    texts: list[str] = []
    refusal = None
    for item in _get(response, "output") or ():
        if _get(item, "type") != "message":
            continue
        phase = _get(item, "phase")
        if phase is not None and phase != "final_answer":  # commentary, not the structured answer
            continue
        for part in _get(item, "content") or ():
            kind = _get(part, "type")
            if kind == "output_text":
                texts.append(_get(part, "text") or "")
            elif kind == "refusal":
                refusal = _get(part, "refusal") or "the model refused"
    text = "".join(texts)
    if refusal is not None:
        return Outcome("refusal", error=refusal)
    status = _get(response, "status")
    if status == "incomplete":
        reason = _get(_get(response, "incomplete_details"), "reason") or "unknown reason"
        return Outcome("incomplete", text=text or None, error=f"the response stopped early ({reason})")
    if status == "failed":
        failure = _get(response, "error")
        return Outcome("error", error=_get(failure, "message") or "the response failed")
    if not text.strip():
        return Outcome("invalid", error="the answer was empty")
    try:
        value = parse(text)
    except pydantic.ValidationError as exc:
        return Outcome("invalid", text=text, error=validation_message(exc))
    return Outcome("ok", value=value, text=text)
