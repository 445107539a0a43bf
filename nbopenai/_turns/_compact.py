"""Long threads: the models' context windows, the near-limit warning, and compaction.

A thread's size is what its last turn billed as input plus what it wrote: the usage the API
reported (the same numbers as the ledger), not an estimate. When that passes ``WARN_AT`` of the
model's window (``data/context_windows.json``), the answer carries a one-time ``warning``.

``compact`` shrinks a thread with ``POST /v1/responses/compact``: the server turns the thread into
a short list of items (the user's messages and one opaque ``compaction`` item), which becomes a
turn of the thread (``status="compacted"``, see ``_conversation``). The next turn sends those
items as its input, without ``previous_response_id``, and the chain goes on from its response.
Where the endpoint does not exist (a compatible server without it) the thread is switched to
``truncation="auto"`` instead: the API then drops the oldest items when the thread overflows.
"""

from __future__ import annotations

import importlib.resources
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._answer import Usage
from ._conversation import COMPACTED, Thread, Turn
from .._core._errors import ContextLengthExceeded, UsageError, translate
from .._core._retry import reached_server

if TYPE_CHECKING:
    from .._session import Session

__all__ = ["WARN_AT", "ContextWindows", "Compaction", "thread_tokens", "near_limit_warning", "refuse_oversized_prompt", "compact"]

WARN_AT = 0.8
_SNAPSHOT_SUFFIX = re.compile(r"^(?P<base>.+?)-(?:\d{4}-\d{2}-\d{2}|\d{4})$")
# Statuses meaning "this server has no compact endpoint" rather than "this request was wrong".
_UNAVAILABLE_STATUS = frozenset({404, 405, 501})


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
    def load(cls) -> "ContextWindows":
        """The table shipped in ``nbopenai/data/context_windows.json``."""
        shipped = importlib.resources.files("nbopenai") / "data" / "context_windows.json"
        return cls(json.loads(shipped.read_text(encoding="utf-8"))["models"])

    def with_windows(self, windows: Mapping[str, int]) -> "ContextWindows":
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


def near_limit_warning(session: "Session", thread: Thread, model: str) -> str | None:
    """A warning when ``thread`` has just passed ``WARN_AT`` of ``model``'s window; once per crossing."""
    window = session.context_windows.window(model)
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


def refuse_oversized_prompt(session: "Session", model: str, prompt_tokens: int) -> None:
    """Refuse, before sending, a prompt that alone is larger than ``model``'s context window."""
    window = session.context_windows.window(model)
    if window is not None and prompt_tokens > window:
        raise ContextLengthExceeded(
            f"This prompt alone is {prompt_tokens:,} tokens; the window is {window:,} ({model}). Nothing was sent.",
            hint=ContextLengthExceeded.SHORTEN,
        )


@dataclass(frozen=True)
class Compaction:
    """What ``Session.compact`` did to a thread.

    Attributes
    ----------
    thread
        The thread's name.
    method
        ``"compact"`` (the thread now continues from the compacted items) or ``"truncation"``
        (the server has no compact endpoint; the thread now sends ``truncation="auto"``).
    tokens_before
        The thread's size before (its last turn's input + output tokens).
    items
        How many items the compacted thread holds (0 for ``truncation``).
    response_id
        The id of the compaction the server returned, if any.
    usage
        Tokens the compaction itself was billed for (also in the ledger, ``kind="compact"``).
    """

    thread: str
    method: str
    tokens_before: int
    items: int = 0
    response_id: str | None = None
    usage: Usage = Usage()
    message: str = ""

    def __str__(self) -> str:
        return self.message

    def _repr_markdown_(self) -> str:
        return self.message


def _as_input(item: Any) -> dict:
    """An output item of the compaction, shaped as an input item for the next request."""
    data = item.model_dump(exclude_none=True) if hasattr(item, "model_dump") else dict(item)
    if data.get("type") == "compaction":  # the input form takes only these fields
        return {key: data[key] for key in ("type", "encrypted_content", "id") if key in data}
    return data


def _unavailable(exc: BaseException) -> bool:
    return isinstance(exc, AttributeError) or getattr(exc, "status_code", None) in _UNAVAILABLE_STATUS


def compact(session: "Session", thread: str = "default", *, model: str | None = None) -> Compaction:
    """Compact ``thread`` on the server; its next turn continues from the compacted state.

    Parameters
    ----------
    session
        The session that owns the thread.
    thread
        The thread's name.
    model
        The model that compacts (default: the model of the thread's last turn).

    Raises
    ------
    UsageError
        The thread does not exist or has no turns.
    APIError
        The compaction failed (other than the endpoint being unavailable).
    """
    if thread not in session.threads or not session.threads.get(thread).turns:
        known = ", ".join(session.threads.names()) or "none"
        raise UsageError(f"thread {thread!r} has no turns: nothing to compact (threads: {known})")
    target = session.threads.get(thread)
    plan = target.plan(None)
    model = model or target.turns[-1].model or session.settings.model
    before = thread_tokens(target)
    params: dict[str, Any] = {"model": model}
    if plan.previous_response_id:
        params["previous_response_id"] = plan.previous_response_id
    if plan.replay:
        params["input"] = list(plan.replay)

    def on_failure(exc: BaseException, attempt: int, will_retry: bool) -> None:
        if reached_server(exc) and not _unavailable(exc):
            status = "rate_limited" if getattr(exc, "status_code", None) == 429 else "error"
            error = translate(exc).message
            session.record(kind="compact", model=model, status=status, thread=thread, attempt=attempt, error=error)

    try:
        result = session.retry.call(lambda: session.client.responses.compact(**params), on_failure=on_failure)
    except Exception as exc:
        if not _unavailable(exc):
            raise translate(exc) from None
        target.truncation = "auto"
        why = "this SDK has no responses.compact" if isinstance(exc, AttributeError) else f"HTTP {exc.status_code}"
        return Compaction(
            thread,
            "truncation",
            before,
            message=(
                f"Compaction is not available here ({why}): thread {thread} now sends truncation='auto', "
                "so the API drops its oldest items when it overflows."
            ),
        )
    usage = Usage.from_api(getattr(result, "usage", None))
    session.record(kind="compact", model=model, status="completed", thread=thread, response_id=result.id, usage=usage)
    items = tuple(_as_input(item) for item in result.output)
    turn = Turn(
        prompt="(compacted)",
        answer="",
        response_id=None,
        model=model,
        status=COMPACTED,
        input_items=items,
        output_tokens=usage.output,
    )
    target.commit(target.plan(None), turn)
    target.warned_near_limit = False
    return Compaction(
        thread,
        "compact",
        before,
        items=len(items),
        response_id=result.id,
        usage=usage,
        message=(
            f"Thread {thread} compacted: {before:,} tokens became {len(items)} item{'s' if len(items) != 1 else ''}; "
            "the next turn continues from them."
        ),
    )
