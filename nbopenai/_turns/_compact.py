"""Long threads: compaction, and the fallback where the server has none.

``compact`` shrinks a thread with ``POST /v1/responses/compact``: the server turns the thread into
a short list of items (the user's messages and one opaque ``compaction`` item), which becomes a
turn of the thread (``status="compacted"``, see ``_conversation``). The next turn sends those
items as its input, without ``previous_response_id``, and the chain goes on from its response.
Where the endpoint does not exist (a compatible server without it) the thread is switched to
``truncation="auto"`` instead: the API then drops the oldest items when the thread overflows.

The context windows and the near-limit warning live in ``_window``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._core._errors import UsageError, translate
from .._core._tokens import InputEstimate
from ._answer import Usage
from ._conversation import COMPACTED, Turn
from ._recorder import TurnPlace, TurnRecorder, TurnServices, clock
from ._streaming import StreamState
from ._window import thread_tokens

__all__ = ["Compaction", "compact"]

# Statuses meaning "this server has no compact endpoint" rather than "this request was wrong".
_UNAVAILABLE_STATUS = frozenset({404, 405, 501})


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


def compact(services: TurnServices, thread: str = "default", *, model: str | None = None) -> Compaction:
    """Compact ``thread`` on the server; its next turn continues from the compacted state.

    Parameters
    ----------
    services
        The services of the session that owns the thread.
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
    threads = services.threads
    with threads.turn(thread):  # a turn of its own: none other is written meanwhile
        if thread not in threads or not threads.get(thread).turns:
            known = ", ".join(threads.names()) or "none"
            raise UsageError(f"thread {thread!r} has no turns: nothing to compact (threads: {known})")
        target = threads.get(thread)
        if target.conversation:  # its items are the conversation's record: not replaced by a summary here
            raise UsageError(f"thread {thread!r} is kept in a conversation, which is not compacted; start a new one "
                             "with --new")
        plan = target.plan(None)
        model = model or target.turns[-1].model or services.settings.model
        before = thread_tokens(target)
        params: dict[str, Any] = {"model": model}
        if plan.previous_response_id:
            params["previous_response_id"] = plan.previous_response_id
        if plan.replay:
            params["input"] = list(plan.replay)
        place = TurnPlace(target, plan, "(compacted)", model, estimate=InputEstimate(model, known=before))
        recorder = TurnRecorder(services, place)
        attempts = recorder.attempts("compact", unless=_unavailable)
        started = clock()
        try:
            result = services.retry.call(lambda: services.client().responses.compact(**params), on_failure=attempts)
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
        # The compaction is one billed request: recorded before anything else, like any round.
        state = StreamState(response_id=result.id, final=result, status="completed")
        usage = recorder.round(state, started, kind="compact").usage
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
        recorder.commit(turn)
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
