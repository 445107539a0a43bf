"""What a turn produces: the ``Answer`` value and its token ``Usage``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .._version import __version__

__all__ = ["Usage", "Answer"]


@dataclass(frozen=True)
class Usage:
    """Token counts of one response (reasoning tokens are part of ``output``, as the API bills them)."""

    input: int = 0
    cached: int = 0
    output: int = 0
    reasoning: int = 0
    estimated: bool = False

    @property
    def total(self) -> int:
        return self.input + self.output

    def __add__(self, other: Usage) -> Usage:
        """The usage of two requests together (a tool loop's rounds); estimated if either was."""
        return Usage(
            input=self.input + other.input,
            cached=self.cached + other.cached,
            output=self.output + other.output,
            reasoning=self.reasoning + other.reasoning,
            estimated=self.estimated or other.estimated,
        )

    @classmethod
    def from_api(cls, usage: Any) -> Usage:
        """From an SDK ``ResponseUsage`` (or a dict of the same shape, or ``None``)."""
        if usage is None:
            return cls()
        # Attribute reads, not model_dump(): this runs once per extraction row.
        get = dict.get if isinstance(usage, dict) else getattr
        details_in = get(usage, "input_tokens_details", None)
        details_out = get(usage, "output_tokens_details", None)
        return cls(
            input=_count(get(usage, "input_tokens", None)) or 0,
            cached=(_count(get(details_in, "cached_tokens", None)) or 0) if details_in is not None else 0,
            output=_count(get(usage, "output_tokens", None)) or 0,
            reasoning=(_count(get(details_out, "reasoning_tokens", None)) or 0) if details_out is not None else 0,
        )

    @classmethod
    def reported_or(cls, usage: Any, estimate: Callable[[], Usage]) -> Usage:
        """The ``usage`` a response reported, with what it lacks taken from ``estimate()`` and marked estimated.

        No usage (``null``), an empty one (``{}``) or a missing input or output count means the
        count is unknown, not 0: a token budget must still see the call. ``estimate`` is called only
        then (counting tokens offline is not free).
        """
        get = dict.get if isinstance(usage, dict) else getattr
        reported_input = _count(get(usage, "input_tokens", None)) if usage is not None else None
        reported_output = _count(get(usage, "output_tokens", None)) if usage is not None else None
        if reported_input is not None and reported_output is not None:
            return cls.from_api(usage)
        known, guess = cls.from_api(usage), estimate()
        return cls(
            input=known.input if reported_input is not None else guess.input,
            cached=known.cached,
            output=known.output if reported_output is not None else guess.output,
            reasoning=known.reasoning,
            estimated=True,
        )


_MAX_COUNT = 10**12  # more tokens than any call has: a server's number past it is not a count


def _count(value: Any) -> int | None:
    """A token count a server reported, or ``None`` (unknown) for what no count is: a negative, huge, fractional,
    boolean or non-numeric value. (A negative count would shrink the budget; a huge one broke ``usage()``.)"""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if value != value or not 0 <= value < _MAX_COUNT or value != int(value):
        return None
    return int(value)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _format_seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f} s"


@dataclass
class Answer:
    """One answer from the model, with where it came from and what it cost.

    ``status`` is ``completed``, ``incomplete`` (cut short, e.g. by ``max_output_tokens`` or a tool
    loop's round cap), ``failed`` (the stream broke; ``text`` is what arrived), ``interrupted`` (you
    pressed stop), or ``queued``/``in_progress``/``cancelled`` for a background job.

    ``tool_calls`` lists the functions a tool loop ran (``name``, ``arguments``, ``output``,
    ``error``, ``call_id``); ``usage`` and ``cost_usd`` then cover every request of the turn.
    ``warning`` says when the thread is close to the model's context window. ``answered_at`` is
    when the answer ended (UTC, ISO 8601); ``replayed`` says it came from the replay store, unsent.
    """

    text: str
    model: str
    thread: str | None = None
    response_id: str | None = None
    status: str = "completed"
    usage: Usage = field(default_factory=Usage)
    latency_s: float | None = None
    ttft_s: float | None = None
    cost_usd: float | None = None
    cost_note: str | None = None
    error: str | None = None
    turn: int | None = None
    cell_id: str | None = None
    notice: str | None = None
    output: list[dict] = field(default_factory=list, repr=False)
    tool_calls: list[dict] = field(default_factory=list, repr=False)
    warning: str | None = None
    answered_at: str = field(default_factory=_now, repr=False)
    replayed: bool = False

    @property
    def partial(self) -> bool:
        return self.status in {"incomplete", "failed", "interrupted"}

    def footer(self) -> str:
        """One line: model, tokens in/out (cached, reasoning), latency, first token, cost."""
        u = self.usage
        approx = "~" if u.estimated else ""
        cost = f"${self.cost_usd:.6f}" if self.cost_usd is not None else "cost n/a"
        parts = [
            self.model,
            f"{approx}{u.input:,} in ({u.cached:,} cached) / {approx}{u.output:,} out ({u.reasoning:,} reasoning)",
            f"{_format_seconds(self.latency_s)} (first token {_format_seconds(self.ttft_s)})",
            cost,
        ]
        if self.thread:
            parts.append(f"thread {self.thread}" + (f" turn {self.turn}" if self.turn else ""))
        return " · ".join(parts)

    def status_line(self) -> str | None:
        """Why the text is partial, if it is."""
        if self.status == "completed":
            return None
        reason = f": {self.error}" if self.error else ""
        return f"[{self.status}{reason}]"

    def tool_calls_markdown(self) -> str:
        """The tool calls as a collapsed ``<details>`` block ("" when there were none)."""
        if not self.tool_calls:
            return ""
        count = len(self.tool_calls)
        lines = [f"<details><summary>{count} tool call{'s' if count != 1 else ''}</summary>", ""]
        for call in self.tool_calls:
            mark = (" ⚠" if call.get("error") and not call.get("note") else "") + (
                f" ({call['note']})" if call.get("note") else "")
            lines += [f"- `{_call_signature(call)}`{mark} →", "", _indented_block(str(call.get("output", ""))), ""]
        lines.append("</details>")
        return "\n".join(lines)

    def tool_calls_text(self) -> str:
        """One line per tool call, for plain-text displays."""
        return "\n".join(
            f"[tool] {_call_signature(call)} -> {_one_line(str(call.get('output', '')))}" for call in self.tool_calls
        )

    def __str__(self) -> str:
        return self.text

    def _repr_markdown_(self) -> str:
        lines = [self.text]
        if details := self.tool_calls_markdown():
            lines.append(f"\n{details}")
        if status := self.status_line():
            lines.append(f"\n*{status}*")
        if self.warning:
            lines.append(f"\n*⚠ {self.warning}*")
        lines.append(f"\n<sub>{self.footer()}</sub>")
        return "\n".join(lines)

    def mime_bundle(self) -> dict[str, str]:
        """The answer as ``text/markdown`` and ``text/plain`` (what a saved notebook shows)."""
        calls = f"{self.tool_calls_text()}\n" if self.tool_calls else ""
        plain = calls + self.text + (f"\n{status}" if (status := self.status_line()) else "")
        plain += (f"\n{self.warning}" if self.warning else "") + f"\n-- {self.footer()}"
        return {"text/markdown": self._repr_markdown_(), "text/plain": plain}

    def provenance(self) -> dict[str, Any]:
        """Where the answer came from, for the output's metadata (``nbopenai.provenance`` reads it back)."""
        u = self.usage
        return {
            "response_id": self.response_id,
            "model": self.model,
            "thread": self.thread,
            "turn": self.turn,
            "status": self.status,
            "usage": {"input": u.input, "cached": u.cached, "output": u.output, "reasoning": u.reasoning,
                      "estimated": u.estimated},
            "cost_usd": self.cost_usd,
            "latency_s": self.latency_s,
            "answered_at": self.answered_at,
            "replayed": self.replayed,
            "nbopenai": __version__,
        }

    def _repr_mimebundle_(self, include=None, exclude=None) -> tuple[dict[str, str], dict[str, Any]]:
        """IPython's display: the bundle, and the provenance under the output's ``nbopenai`` metadata key."""
        return self.mime_bundle(), {"nbopenai": self.provenance()}


_SHOWN_CHARS = 300


def _one_line(text: str, limit: int = _SHOWN_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _call_signature(call: dict) -> str:
    arguments = call.get("arguments")
    if isinstance(arguments, dict):
        shown = ", ".join(f"{key}={value!r}" for key, value in arguments.items())
    else:
        shown = str(arguments or "")
    return _one_line(f"{call.get('name', '?')}({shown})", 120).replace("`", "'")


def _indented_block(text: str) -> str:
    """``text`` as an indented code block under a list item (a fence could be closed by the text)."""
    shown = text if len(text) <= _SHOWN_CHARS * 4 else text[: _SHOWN_CHARS * 4] + "…"
    return "\n".join("      " + line for line in (shown.splitlines() or [""]))
