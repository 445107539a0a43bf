"""The models' context windows, a thread's size, and the warning when a thread nears its window.

A thread's size is what its last turn billed as input plus what it wrote: the usage the API
reported (the same numbers as the ledger), not an estimate. When that passes ``WARN_AT`` of the
model's window (``data/context_windows.json``), the answer carries a one-time ``warning``.
"""

from __future__ import annotations

import importlib.resources
import json
import re
from collections.abc import Mapping

from .._core._errors import ContextLengthExceeded
from .._core._tokens import InputEstimate
from ._conversation import Thread

__all__ = ["WARN_AT", "ContextWindows", "thread_tokens", "near_limit_warning", "refuse_oversized_prompt"]

WARN_AT = 0.8
_SNAPSHOT_SUFFIX = re.compile(r"^(?P<base>.+?)-(?:\d{4}-\d{2}-\d{2}|\d{4})$")


class ContextWindows:
    """Context window sizes in tokens, by model name (dated snapshots fall back to their base).

    Examples
    --------
    >>> ContextWindows.load().window("gpt-4.1-mini-2025-04-14")
    1047576
    >>> ContextWindows.load().with_windows({"my-model": 32000}).window("my-model")
    32000
    """

    def __init__(self, windows: Mapping[str, int]) -> None:
        self._windows = {name.lower(): int(size) for name, size in windows.items()}

    @classmethod
    def load(cls) -> ContextWindows:
        """The table shipped in ``nbopenai/data/context_windows.json``."""
        shipped = importlib.resources.files("nbopenai") / "data" / "context_windows.json"
        return cls(json.loads(shipped.read_text(encoding="utf-8"))["models"])

    def with_windows(self, windows: Mapping[str, int]) -> ContextWindows:
        """This table plus ``windows``, which win over entries of the same model."""
        return ContextWindows({**self._windows, **windows})

    def window(self, model: str) -> int | None:
        """The window of ``model`` in tokens, or ``None`` when it is not known."""
        name = (model or "").strip().lower()
        if name in self._windows:
            return self._windows[name]
        match = _SNAPSHOT_SUFFIX.match(name)
        return self._windows.get(match["base"]) if match else None


def thread_tokens(thread: Thread) -> int:
    """The thread's size: its last turn's input plus output tokens (0 when empty)."""
    if not thread.turns:
        return 0
    last = thread.turns[-1]
    return last.input_tokens + last.output_tokens


def _compact_command(thread: str) -> str:
    return f"`%nbopenai compact -t {thread}` (or `session.compact({thread!r})`)"


def near_limit_warning(windows: ContextWindows, thread: Thread, model: str) -> str | None:
    """A warning when ``thread`` has just passed ``WARN_AT`` of ``model``'s window; once per crossing."""
    window = windows.window(model)
    if window is None:
        return None
    used = thread_tokens(thread)
    if used < WARN_AT * window:
        thread.warned_near_limit = False  # it shrank (a compaction, a rewind): warn again next time
        return None
    if thread.warned_near_limit:
        return None
    thread.warned_near_limit = True
    return (
        f"thread {thread.name} holds {used:,} tokens, {used / window:.0%} of {model}'s {window:,}-token "
        f"context window: run {_compact_command(thread.name)} before it overflows"
    )


def refuse_oversized_prompt(windows: ContextWindows, estimate: InputEstimate) -> None:
    """Refuse, before sending, a prompt that alone is larger than its model's context window."""
    model = estimate.model or ""
    window = windows.window(model)
    if window is not None and estimate.prompt_exceeds(window):
        raise ContextLengthExceeded(
            f"This prompt alone is {estimate.prompt_tokens:,} tokens; the window is {window:,} ({model}). "
            "Nothing was sent.",
            hint=ContextLengthExceeded.SHORTEN,
        )
