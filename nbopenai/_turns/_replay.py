"""Replay (opt in): a cell asked again with the same prompt, settings and predecessor reuses its answer, unsent.

The key is the exact request a turn would send (``PreparedAsk.params``: prompt, model, instructions,
sampling settings, images, and its place in the chain: ``previous_response_id``, or the earlier
turns it re-sends) and the endpoint (``_extract._cache.request_scope``'s rule). A replayed turn is
committed to its thread with the stored response id, so the next cell's request, and key, is what it
was the first time: a Run All of an unchanged notebook sends nothing. The first changed cell asks
again; its new response id changes its successor's ``previous_response_id``, so every cell after it
asks again too.

Only completed, plain answers (no tool calls) are stored; a conversation thread (``--store
conversation``) always asks, since the server's conversation object must hold every turn. A replayed
answer costs nothing and writes no ledger row (nothing was billed); it is marked ``replayed`` and says
so. The store (``_replay_store``) is SQLite beside the ledger (in memory when the ledger is); the session
owns it (``Session.replay_store``), as it owns the ledger and the extraction cache.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._answer import Answer, Usage
from ._ask import PreparedAsk, holding
from ._conversation import Turn
from ._recorder import AskSink, NullSink, TurnRecorder, TurnServices
from ._replay_store import ReplayStore, replay_path
from ._streaming import StreamState

if TYPE_CHECKING:
    from .._core._settings import Settings
    from .._session import Session

__all__ = ["ReplayStore", "Replays", "replay_key", "replay_path", "replayed"]


def replay_key(settings: Settings, params: dict[str, Any]) -> str:
    """What a stored answer is found by: the endpoint and the exact request (its input and chain included)."""
    from .._extract._cache import cache_key, request_scope  # noqa: PLC0415 - extraction loads when used; one rule for an endpoint and a request

    return cache_key(request_scope(settings, params), [params.get("input"), params.get("store")])


def replayed(services: TurnServices, prepared: PreparedAsk, record: dict[str, Any], sink: AskSink | None) -> Answer:
    """Commit the stored answer as ``prepared``'s turn, with no request; hand ``sink`` the answer, marked replayed."""
    sink = sink or NullSink()
    with holding(services, prepared) as held:
        recorder = TurnRecorder(services, held.place, sink)
        thread, plan = held.thread, held.plan
        notice = "; ".join(filter(None, [f"replayed: the stored answer of {record['answered_at']}, nothing sent",
                                         plan.notice(thread.name)]))
        sink.started(record["model"], thread.name, notice)
        state = StreamState()
        state.handle({"type": "response.output_text.delta", "delta": record["text"]})
        sink.text(record["text"], state)
        usage = Usage(*record["usage"])
        turn = Turn(
            prompt=held.prompt,
            answer=record["text"],
            response_id=record["response_id"],
            model=record["model"],
            status=record["status"],
            cell_id=held.options.cell_id,
            input_items=held.place.input_items,
            output_items=({"role": "assistant", "content": record["text"]},) if record["text"] else (),
            input_tokens=usage.input,
            cached_tokens=usage.cached,
            output_tokens=usage.output,
        )
        number = recorder.commit(turn)
    answer = Answer(
        text=record["text"],
        model=record["model"],
        thread=thread.name,
        response_id=record["response_id"],
        status=record["status"],
        usage=usage,
        cost_usd=0.0,
        turn=number,
        cell_id=held.options.cell_id,
        notice=notice,
        answered_at=record["answered_at"],
        replayed=True,
    )
    sink.finished(answer)
    return answer


class Replays:
    """A session's asks with replay, on its ``replay_store`` (which the session opens beside the ledger, reopens
    where the ledger moves, and closes with itself)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def store(self) -> ReplayStore:
        return self.session.replay_store

    def ask(self, prompt: str, *, sink: AskSink | None = None, confirm: Any = None, max_tool_rounds: int | None = None,
            **options: Any) -> Answer:
        """``Session.ask``, unless this exact request was answered before: then that answer, replayed, unsent."""
        session = self.session
        prepared = session.prepare(prompt, **options)
        if prepared.thread.conversation:  # the server's conversation must get every turn: never replayed
            return session.ask(prompt, sink=sink, confirm=confirm, max_tool_rounds=max_tool_rounds, **options)
        key = replay_key(session.settings, prepared.params)
        store = self.store()
        if (record := store.get(key)) is not None:
            return replayed(session.services(), prepared, record, sink)
        answer = session.ask(prompt, sink=sink, confirm=confirm, max_tool_rounds=max_tool_rounds, **options)
        store.put(key, answer)
        return answer
