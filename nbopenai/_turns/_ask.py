"""One conversational turn: build the request, stream it, keep the thread and ledger honest.

The display is not our business here: a *sink* receives the updates (the widget, the stdout
printer, or nothing). Rules kept by this module (with ``TurnRecorder``, which finishes every turn):

- A turn that fails (error, ``response.failed``, interruption) never moves its thread.
- ``instructions`` are sent on every turn (a ``previous_response_id`` chain does not carry them).
- Every attempt that reached the server lands in the ledger, once.
- The answer is complete at ``response.completed``: the stream is closed there, whatever the
  server sends (or does not send) after it.
- One turn at a time per thread: a turn holds its thread from planning to commit (``holding``).
- A chain the server no longer has (its stored response expired or was deleted) is planned again
  without it and sent once more, only when the refusal is certain to have cost nothing (``chained``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .._core._errors import (
    ContextLengthExceeded,
    NbOpenAIError,
    PreviousResponseNotFound,
    StreamError,
    UsageError,
    translate,
)
from .._core._request import RequestOptions, request_params
from .._core._tokens import InputEstimate
from ._answer import Answer
from ._conversation import Plan, Thread
from ._conversations import choose_kind
from ._conversations import ready as conversation_ready
from ._conversations import request_fields as conversation_fields
from ._recorder import (
    AskSink,
    Attempts,
    NullSink,
    PriorRounds,
    Round,
    TurnPlace,
    TurnRecorder,
    TurnServices,
    clock,
    output_items,
    state_of,
)
from ._streaming import StreamState, TextDelta
from ._window import refuse_oversized_prompt

__all__ = [
    "AskOptions",
    "AskSink",
    "NullSink",
    "PreparedAsk",
    "PriorRounds",
    "Round",
    "Sent",
    "chained",
    "holding",
    "prepare",
    "run",
    "send",
    "send_first",
    "start",
    "state_of",
    "output_items",
]

T = TypeVar("T")


@dataclass(frozen=True)
class AskOptions(RequestOptions):
    """Per-call options; ``None`` means "the session's setting" (each checked by the setting's rule).

    The request settings (``model``, ``temperature``, ``reasoning``...) come from ``RequestOptions``.
    """

    thread: str = "default"
    new: bool = False
    stream: bool = True
    store: bool | None = None
    thread_store: str | None = None  # "conversation" keeps a new thread in a conversation object (_conversations)
    cell_id: str | None = None
    content: tuple[dict, ...] = ()  # extra input parts (images) after the prompt text
    tools: tuple[dict, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PreparedAsk:
    """A turn ready to send: the exact request, where it goes in its thread, its input estimate."""

    prompt: str
    thread: Thread
    plan: Plan
    params: dict[str, Any]
    estimate: InputEstimate
    options: AskOptions
    moves: int = 0  # the thread's ``ThreadStore.moves`` when planned: another count means a stale plan

    @property
    def model(self) -> str:
        return self.params["model"]

    @property
    def estimated_input_tokens(self) -> int:
        """tiktoken's count of what the request sends (and bills again), counted now if not yet."""
        return self.estimate.tokens

    @property
    def place(self) -> TurnPlace:
        """Where the turn goes and what it asked, for its ``TurnRecorder``."""
        return TurnPlace(
            thread=self.thread,
            plan=self.plan,
            prompt=self.prompt,
            model=self.model,
            cell_id=self.options.cell_id,
            input_items=(self.params["input"][-1],),
            estimate=self.estimate,
        )


def _user_item(prompt: str, content: Sequence[dict]) -> dict:
    if not content:
        return {"role": "user", "content": prompt}
    return {"role": "user", "content": [{"type": "input_text", "text": prompt}, *content]}


def prepare(services: TurnServices, prompt: str, options: AskOptions, *, gone: str | None = None) -> PreparedAsk:
    """Build the exact request for ``prompt`` (nothing is sent; ``--dry-run`` shows this).

    ``gone``: the server no longer has that response, the one the thread chained to (``Thread.plan``).
    """
    if not prompt.strip():
        raise UsageError("The prompt is empty: write a question in the cell (or after %ask).")
    settings = services.settings
    store = settings.store if options.store is None else options.store
    threads = services.threads
    moves = threads.moves(options.thread)
    # --new builds a detached thread: it replaces the old one only when its first turn succeeds,
    # so a failed turn or a --dry-run leaves the conversation as it was.
    thread = threads.fresh(options.thread, store=store) if options.new else threads.get(options.thread)
    if thread.store != store and not thread.turns:  # nothing said yet: follow the current setting
        thread.store = store
    if thread.store != store:
        raise UsageError(
            f"thread {thread.name!r} was started with store={thread.store}; use --new or another -t to switch"
        )
    choose_kind(thread, options.thread_store, settings.thread_store, store=store)
    plan = thread.plan(options.cell_id, gone=gone)
    user_item = _user_item(prompt, options.content)
    params = request_params(settings, {**options.overrides(), "store": store})
    params["input"] = [*plan.replay, user_item]
    if plan.previous_response_id:
        params["previous_response_id"] = plan.previous_response_id
    params.update(conversation_fields(thread))
    if options.tools:
        params["tools"] = list(options.tools)
    if thread.truncation:  # set when compaction was unavailable for this thread (see _compact)
        params["truncation"] = thread.truncation
    params.update(options.extra)
    # The chain's earlier turns are billed as input again: estimate from what the thread holds
    # (when they are sent again instead, ``gone``, their text is counted with the replay).
    kept = thread.turns[: plan.base]
    history = (kept[-1].input_tokens + kept[-1].output_tokens) if (kept and store and gone is None) else 0
    replay_text = " ".join(str(item.get("content", "")) for item in plan.replay)
    context = f"{params.get('instructions') or ''} {replay_text}".strip()
    estimate = InputEstimate(params["model"], prompt, context, known=history)
    refuse_oversized_prompt(services.context_windows(), estimate)
    return PreparedAsk(prompt, thread, plan, params, estimate, options, moves)


@contextlib.contextmanager
def holding(services: TurnServices, prepared: PreparedAsk) -> Iterator[PreparedAsk]:
    """Hold ``prepared``'s thread for one turn; yields it planned again if the thread moved since it was prepared.

    Turns on one thread then run one after the other (asks from several Python threads each build
    on the one before), and a background answer never slips in under a turn being written.
    """
    name = prepared.options.thread
    with services.threads.turn(name):
        if services.threads.moves(name) != prepared.moves:
            prepared = prepare(services, prepared.prompt, prepared.options)
        conversation_ready(services, prepared.thread, prepared.plan, prepared.params)  # created, or rewound
        yield prepared


def run(services: TurnServices, prepared: PreparedAsk, sink: AskSink | None = None) -> Answer:
    """Send ``prepared``, feed ``sink``, commit the turn on success and return the ``Answer``.

    Raises an ``NbOpenAIError`` subclass on failure (``StreamError`` carries the partial text, and
    ``sink.finished`` has already seen the partial answer). ``KeyboardInterrupt`` is re-raised after
    the partial answer was delivered to ``sink`` and recorded.
    """
    with holding(services, prepared) as prepared:
        recorder = start(services, prepared, sink)
        sent, prepared = send_first(recorder, prepared)
        return recorder.finish(sent.state, sent.started, attempt=sent.attempt)


def send_first(recorder: TurnRecorder, prepared: PreparedAsk) -> tuple[Sent, PreparedAsk]:
    """Send a turn's first request (``send``), planned again once if its chain is gone (``chained``)."""
    return chained(recorder, prepared, lambda asked: send(recorder, asked, asked.params))


def chained(
    recorder: TurnRecorder, prepared: PreparedAsk, request: Callable[[PreparedAsk], T]
) -> tuple[T, PreparedAsk]:
    """``request(prepared)``, the turn's first request; the result and the ``PreparedAsk`` it sent.

    If the server no longer has the response the thread chains to (expired, deleted: 400
    ``previous_response_not_found``), the turn is planned again without the chain, its thread's turns
    sent as input (``Thread.plan``), and sent once more, with a notice. Only when that refusal is
    certain to have cost nothing: every attempt was refused with an HTTP answer (``resendable``).
    After an attempt cut once sent, which may have been billed, the error is raised instead: what
    may have been billed is never sent again on its own.
    """
    try:
        return request(prepared), prepared
    except PreviousResponseNotFound as gone:
        head = prepared.plan.previous_response_id
        if not gone.resendable or head is None or prepared.params.get("previous_response_id") != head:
            raise
    services = recorder.services
    again = prepare(services, prepared.prompt, prepared.options, gone=head)
    services.ledger.check_budget(again.model, lambda: again.estimated_input_tokens)  # it sends more than it did
    recorder.place = again.place  # the turn's rows, estimate and commit follow what is sent now
    recorder.sink.started(again.model, again.thread.name, again.plan.notice(again.thread.name))
    return request(again), again


def start(services: TurnServices, prepared: PreparedAsk, sink: AskSink | None) -> TurnRecorder:
    """Begin ``prepared``'s turn: check the budget, tell ``sink``, and return the recorder that finishes it."""
    services.ledger.check_budget(prepared.model, lambda: prepared.estimated_input_tokens)
    recorder = TurnRecorder(services, prepared.place, sink)
    recorder.sink.started(prepared.model, prepared.thread.name, prepared.plan.notice(prepared.thread.name))
    return recorder


@dataclass
class Sent:
    """One request whose stream ended normally: what arrived, when it started, which attempt it was."""

    state: StreamState
    started: float
    attempt: int


def refused(
    exc: BaseException, prepared: PreparedAsk, attempts: Attempts | None = None, **details: Any
) -> NbOpenAIError:
    """``exc``, a request of ``prepared`` that failed for good, as our error, told what its attempts were."""
    error = translate(exc, attempts=attempts.count if attempts is not None else 1, **details)
    if isinstance(error, ContextLengthExceeded):
        error.name_thread(prepared.thread.name, fresh=prepared.plan.base == 0)
    if isinstance(error, PreviousResponseNotFound):
        error.resendable = attempts is not None and not attempts.maybe_billed
        if attempts is not None and attempts.maybe_billed:
            error.hint = (
                "It was not sent again without the chain: an earlier attempt was cut after it was sent and may "
                "have been billed (see `%nbopenai usage`). Re-run the cell to send the thread's turns again as "
                "input, or start the thread over with --new."
            )
    return error


def send(recorder: TurnRecorder, prepared: PreparedAsk, params: Mapping[str, Any], *, kind: str = "ask") -> Sent:
    """Send one request of ``prepared``'s turn (``params``, with retries) and stream it into the recorder's sink.

    The stream is read up to its end event (``response.completed`` and the like) and closed there.
    A failure or interruption is recorded and the sink gets the partial answer before the error
    (or ``KeyboardInterrupt``) is raised; the thread never moves then. Its attempts and its stream use
    the clients held when it began: a key changed from another thread meanwhile is for the next request.
    """
    with recorder.services.holding_clients() as clients:
        return _send(recorder, prepared, params, kind, clients.client)


def _send(
    recorder: TurnRecorder, prepared: PreparedAsk, params: Mapping[str, Any], kind: str, client: Callable[[], Any]
) -> Sent:
    # The SDK's module: wanted by now, this request goes out (not imported with nbopenai).
    from .._core._client import with_idempotency  # noqa: PLC0415

    services, sink = recorder.services, recorder.sink
    attempts = recorder.attempts(kind)
    state = StreamState()
    started = clock()
    stream_wanted = prepared.options.stream
    keyed = with_idempotency(dict(params))  # one key for every attempt at this request
    try:
        result = services.retry.call(
            lambda: services.breaker().call(lambda: client().responses.create(**keyed, stream=stream_wanted)),
            on_failure=attempts,
        )
    except Exception as exc:
        raise refused(exc, prepared, attempts) from None
    ending = {"attempt": attempts.count + 1, "kind": kind}
    if not stream_wanted:
        state = state_of(result, clock())
        sink.text(state.text, state)
    else:
        from .._core._client import whole_response  # noqa: PLC0415 - the SDK is loaded by now (it answered)

        answered = False  # until the answer is known to be events or a response (see below)
        try:
            with result as stream:
                whole = whole_response(stream)  # a whole response if the server ignored stream=true, else None
                answered = True
                if whole is not None:
                    state = state_of(whole, clock())
                    sink.text(state.text, state)
                for event in stream if whole is None else ():
                    for update in state.handle(event, clock()):
                        if isinstance(update, TextDelta):
                            sink.text(update.delta, state)
                    if state.done:  # the answer is complete: what a server sends after it is not ours to wait for
                        break
        except KeyboardInterrupt:  # finish delivers the partial answer, then re-raises
            recorder.finish(state, started, interrupted=True, **ending)
        except Exception as exc:  # the nested `error` event, a dropped connection, a read timeout
            if not answered:  # JSON that is no response, or a body lost: a refused attempt, as without a stream
                attempts(exc, attempts.count + 1, False)
                raise refused(exc, prepared, attempts) from None
            error = refused(exc, prepared, partial_text=state.text)
            state.fail(error.message, getattr(error, "code", None))
            recorder.finish(state, started, error=error, **ending)
            raise error from None
    if state.status in ("failed", "streaming"):  # response.failed, or a stream that stopped short
        recorder.finish(state, started, **ending)
        raise StreamError(
            f"The response failed mid-stream: {state.error}", code=state.error_code, partial_text=state.text
        )
    return Sent(state, started, attempts.count + 1)
