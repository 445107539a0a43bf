"""One conversational turn: build the request, stream it, keep the thread and ledger honest.

The display is not our business here: a *sink* receives the updates (the widget, the stdout
printer, or nothing). Rules kept by this module:

- A turn that fails (error, ``response.failed``, interruption) never moves its thread.
- ``instructions`` are sent on every turn (a ``previous_response_id`` chain does not carry them).
- Every attempt that reached the server lands in the ledger, once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ._answer import Answer, Usage
from ._conversation import Plan, Thread, Turn
from ._compact import near_limit_warning, refuse_oversized_prompt
from .._ledger._prices import missing_price_note
from .._core._errors import ContextLengthExceeded, NbOpenAIError, StreamError, UnreadableAnswer, UsageError, translate
from .._core._request import RequestOptions, request_params
from .._core._retry import failed_attempt_status, reached_server
from ._streaming import StreamState, TextDelta
from .._core._tokens import count_tokens

if TYPE_CHECKING:
    from .._session import Session

__all__ = [
    "AskOptions",
    "AskSink",
    "PreparedAsk",
    "PriorRounds",
    "Round",
    "Sent",
    "prepare",
    "run",
    "send",
    "state_of",
    "record_round",
    "finish",
]

@dataclass(frozen=True)
class AskOptions(RequestOptions):
    """Per-call options; ``None`` means "the session's setting" (each checked by the setting's rule).

    The request settings (``model``, ``temperature``, ``reasoning``...) come from ``RequestOptions``.
    """

    thread: str = "default"
    new: bool = False
    stream: bool = True
    store: bool | None = None
    cell_id: str | None = None
    content: tuple[dict, ...] = ()  # extra input parts (images) after the prompt text
    tools: tuple[dict, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)


class AskSink(Protocol):
    """Receives a turn's progress; every method is optional in spirit (see ``NullSink``).

    A sink may also define ``tool_call(name, arguments, output)``: a tool loop calls it after each
    function it ran (looked up with ``getattr``, so sinks without it keep working).
    """

    def started(self, model: str, thread: str, notice: str | None) -> None: ...
    def text(self, delta: str, state: StreamState) -> None: ...
    def finished(self, answer: Answer) -> None: ...


class NullSink:
    def started(self, model: str, thread: str, notice: str | None) -> None:
        pass

    def text(self, delta: str, state: StreamState) -> None:
        pass

    def finished(self, answer: Answer) -> None:
        pass


@dataclass(frozen=True)
class PreparedAsk:
    """A turn ready to send: the exact request, where it goes in its thread, its input estimate."""

    prompt: str
    thread: Thread
    plan: Plan
    params: dict[str, Any]
    estimated_input_tokens: int
    options: AskOptions

    @property
    def model(self) -> str:
        return self.params["model"]


def _user_item(prompt: str, content: Sequence[dict]) -> dict:
    if not content:
        return {"role": "user", "content": prompt}
    return {"role": "user", "content": [{"type": "input_text", "text": prompt}, *content]}


def prepare(session: "Session", prompt: str, options: AskOptions) -> PreparedAsk:
    """Build the exact request for ``prompt`` (nothing is sent; ``--dry-run`` shows this)."""
    if not prompt.strip():
        raise UsageError("The prompt is empty: write a question in the cell (or after %ask).")
    settings = session.settings
    store = settings.store if options.store is None else options.store
    # --new builds a detached thread: it replaces the old one only when its first turn succeeds,
    # so a failed turn or a --dry-run leaves the conversation as it was.
    thread = session.threads.fresh(options.thread, store=store) if options.new else session.threads.get(options.thread)
    if thread.store != store and not thread.turns:  # nothing said yet: follow the current setting
        thread.store = store
    if thread.store != store:
        raise UsageError(
            f"thread {thread.name!r} was started with store={thread.store}; use --new or another -t to switch"
        )
    plan = thread.plan(options.cell_id)
    user_item = _user_item(prompt, options.content)
    params = request_params(settings, {**options.overrides(), "store": store})
    params["input"] = [*plan.replay, user_item]
    if plan.previous_response_id:
        params["previous_response_id"] = plan.previous_response_id
    if options.tools:
        params["tools"] = list(options.tools)
    if thread.truncation:  # set when compaction was unavailable for this thread (see _compact)
        params["truncation"] = thread.truncation
    params.update(options.extra)
    # The chain's earlier turns are billed as input again: estimate from what the thread holds.
    kept = thread.turns[: plan.base]
    history = (kept[-1].input_tokens + kept[-1].output_tokens) if (kept and store) else 0
    replay_text = " ".join(str(item.get("content", "")) for item in plan.replay)
    prompt_tokens = count_tokens(prompt, params["model"])  # counted once: for the window and the estimate
    refuse_oversized_prompt(session, params["model"], prompt_tokens)
    context = f"{params.get('instructions') or ''} {replay_text}".strip()
    estimate = history + prompt_tokens + (count_tokens(context, params["model"]) if context else 0)
    return PreparedAsk(prompt, thread, plan, params, estimate, options)


def _clock() -> float:
    return time.perf_counter()


def output_items(response: Any) -> tuple[dict, ...]:
    if response is None:
        return ()
    items = response.output if not isinstance(response, dict) else response.get("output", [])
    return tuple(item.model_dump(exclude_none=True) if hasattr(item, "model_dump") else item for item in items or ())


def _text_events(response: Any) -> list[dict[str, str]]:
    """The delta events a streamed copy of ``response`` would have carried (text and refusals)."""
    events = []
    for item in output_items(response):
        if item.get("type") != "message":
            continue
        for part in item.get("content", []):
            if part.get("type") == "output_text":
                events.append({"type": "response.output_text.delta", "delta": part.get("text", "")})
            elif part.get("type") == "refusal":
                events.append({"type": "response.refusal.delta", "delta": part.get("refusal", "")})
    return events


def state_of(response: Any, now: float | None = None) -> StreamState:
    """The ``StreamState`` a finished (not streamed) ``response`` amounts to: one way to read text,
    refusals and the end status, whether the answer streamed, came whole, or was polled."""
    state = StreamState()
    state.handle({"type": "response.created", "response": response})
    for event in _text_events(response):
        state.handle(event, now)
    state.handle({"type": f"response.{response.status}", "response": response})
    if state.status == "streaming":  # a status without an end event (e.g. cancelled): take it as is
        state.final, state.status = response, response.status
    return state


def _estimated_usage(prepared: PreparedAsk, text: str) -> Usage:
    return Usage(
        input=prepared.estimated_input_tokens,
        output=count_tokens(text, prepared.model),
        estimated=True,
    )


class _Attempts:
    """Counts attempts and records those that reached the server but failed."""

    def __init__(self, session: "Session", prepared: PreparedAsk, kind: str) -> None:
        self.session, self.prepared, self.kind, self.count = session, prepared, kind, 0

    def __call__(self, exc: BaseException, attempt: int, will_retry: bool) -> None:
        self.count = attempt
        if reached_server(exc):
            status = failed_attempt_status(exc)
            self.session.record(
                kind=self.kind,
                model=self.prepared.model,
                status=status,
                usage=_estimated_usage(self.prepared, "") if status == "unreadable" else None,  # billed, body lost
                thread=self.prepared.thread.name,
                cell_id=self.prepared.options.cell_id,
                attempt=attempt,
                error=translate(exc).message,
            )


def run(session: "Session", prepared: PreparedAsk, sink: AskSink | None = None) -> Answer:
    """Send ``prepared``, feed ``sink``, commit the turn on success and return the ``Answer``.

    Raises an ``NbOpenAIError`` subclass on failure (``StreamError`` carries the partial text, and
    ``sink.finished`` has already seen the partial answer). ``KeyboardInterrupt`` is re-raised after
    the partial answer was delivered to ``sink`` and recorded.
    """
    sink = sink or NullSink()
    session.check_budget(prepared.model, prepared.estimated_input_tokens)
    sink.started(prepared.model, prepared.thread.name, prepared.plan.notice(prepared.thread.name))
    sent = send(session, prepared, prepared.params, sink)
    return finish(session, prepared, sent.state, sent.started, sink, attempt=sent.attempt)


@dataclass
class Sent:
    """One request whose stream ended normally: what arrived, when it started, which attempt it was."""

    state: StreamState
    started: float
    attempt: int


@dataclass(frozen=True)
class PriorRounds:
    """The earlier requests of a turn that took several (a tool loop), folded into its final answer."""

    items: tuple[dict, ...] = ()  # the model's calls and our outputs, after the user's message
    texts: tuple[str, ...] = ()
    tool_calls: tuple[dict, ...] = ()
    usage: Usage = field(default_factory=Usage)
    cost_usd: float | None = 0.0
    started: float | None = None
    first_text_at: float | None = None
    stopped: str | None = None  # why the loop stopped early: the answer is then marked incomplete


def _translated(exc: BaseException, prepared: PreparedAsk, **details: Any) -> NbOpenAIError:
    error = translate(exc, **details)
    if isinstance(error, ContextLengthExceeded):
        error.name_thread(prepared.thread.name, fresh=prepared.plan.base == 0)
    return error


def send(
    session: "Session",
    prepared: PreparedAsk,
    params: Mapping[str, Any],
    sink: AskSink,
    *,
    kind: str = "ask",
    prior: PriorRounds | None = None,
) -> Sent:
    """Send one request of ``prepared``'s turn (``params``, with retries) and stream it into ``sink``.

    A failure or interruption is recorded and ``sink.finished`` gets the partial answer before the
    error (or ``KeyboardInterrupt``) is raised; the thread never moves then.
    """
    attempts = _Attempts(session, prepared, kind)
    state = StreamState()
    started = _clock()
    stream_wanted = prepared.options.stream
    try:
        result = session.retry.call(
            lambda: session.breaker.call(lambda: session.client.responses.create(**params, stream=stream_wanted)),
            on_failure=attempts,
        )
    except Exception as exc:
        raise _translated(exc, prepared, attempts=attempts.count) from None
    ending = {"attempt": attempts.count + 1, "kind": kind, "prior": prior}
    if not stream_wanted:
        state = state_of(result, _clock())
        sink.text(state.text, state)
    else:
        from .._core._client import whole_response  # the SDK is loaded by now (it answered)

        try:
            with result as stream:
                if (whole := whole_response(stream)) is not None:  # the server ignored stream=true
                    state = state_of(whole, _clock())
                    sink.text(state.text, state)
                for event in stream if whole is None else ():
                    for update in state.handle(event, _clock()):
                        if isinstance(update, TextDelta):
                            sink.text(update.delta, state)
        except KeyboardInterrupt:  # finish delivers the partial answer, then re-raises
            finish(session, prepared, state, started, sink, interrupted=True, **ending)
        except Exception as exc:  # the nested `error` event, a dropped connection, a read timeout
            error = _translated(exc, prepared, partial_text=state.text)
            state.fail(error.message, getattr(error, "code", None))
            finish(session, prepared, state, started, sink, error=error, **ending)
            raise error from None
    if state.status in ("failed", "streaming"):  # response.failed, or a stream that stopped short
        finish(session, prepared, state, started, sink, **ending)
        raise StreamError(
            f"The response failed mid-stream: {state.error}", code=state.error_code, partial_text=state.text
        )
    return Sent(state, started, attempts.count + 1)


@dataclass(frozen=True)
class Round:
    """One request as the ledger got it: how it ended, its usage and the row written."""

    status: str
    usage: Usage
    model: str
    ended: float
    cost_usd: float | None


def record_round(
    session: "Session",
    prepared: PreparedAsk,
    state: StreamState,
    started: float,
    *,
    kind: str = "ask",
    attempt: int = 1,
    interrupted: bool = False,
    error: NbOpenAIError | None = None,
) -> Round:
    """Write the ledger row of one request (exactly once) and say how it ended."""
    ended = _clock()
    response = state.final
    status = "interrupted" if interrupted else ("failed" if error else state.status)
    if isinstance(error, UnreadableAnswer):  # a 2xx whose body was lost: billed, tokens estimated
        status = "unreadable"
    if status == "streaming":  # the stream ended without an end event
        status, state.error = "failed", "the stream ended before the response completed"
    usage_obj = getattr(response, "usage", None) if response is not None else None
    usage = Usage.from_api(usage_obj) if usage_obj is not None else _estimated_usage(prepared, state.text)
    model = (getattr(response, "model", None) or state.model or prepared.model) if response is not None else prepared.model
    record = session.record(
        kind=kind,
        model=model,
        status=status,
        thread=prepared.thread.name,
        cell_id=prepared.options.cell_id,
        response_id=state.response_id,
        usage=usage,
        latency_s=ended - started,
        ttft_s=(state.first_text_at - started) if state.first_text_at is not None else None,
        attempt=attempt,
        error=("interrupted by the user" if interrupted else state.error),
    )
    return Round(status, usage, model, ended, record.cost_usd if record else None)


def finish(
    session: "Session",
    prepared: PreparedAsk,
    state: StreamState,
    started: float,
    sink: AskSink,
    *,
    interrupted: bool = False,
    error: NbOpenAIError | None = None,
    attempt: int = 1,
    kind: str = "ask",
    prior: PriorRounds | None = None,
) -> Answer:
    """Record the turn's last request, commit the turn when it succeeded, and hand ``sink`` the answer."""
    done = record_round(
        session, prepared, state, started, kind=kind, attempt=attempt, interrupted=interrupted, error=error
    )
    prior = prior or PriorRounds()
    status, reason = done.status, ("interrupted by the user" if interrupted else state.error)
    if prior.stopped and status == "completed":
        status, reason = "incomplete", prior.stopped
    if state.refused and status == "completed":  # billed and kept in the thread, but marked
        status, reason = "refused", "the model declined to answer"
    text = "\n\n".join(part for part in (*prior.texts, state.text) if part)
    thread = prepared.thread
    turn_number = None
    # A failed or interrupted turn never moves the thread; an incomplete one is a real, stored
    # response the model can continue from, so it does.
    if done.status in ("completed", "incomplete") and state.final is not None:
        turn = Turn(
            prompt=prepared.prompt,
            answer=text,
            response_id=state.response_id,
            model=done.model,
            status=status,
            cell_id=prepared.options.cell_id,
            input_items=(prepared.params["input"][-1], *prior.items),
            output_items=({"role": "assistant", "content": state.text},) if state.text else (),
            input_tokens=done.usage.input,
            cached_tokens=done.usage.cached,
            output_tokens=done.usage.output,
        )
        turn_number = thread.commit(prepared.plan, turn)
        session.threads.adopt(thread)
    first_started = prior.started if prior.started is not None else started
    first_text_at = prior.first_text_at if prior.first_text_at is not None else state.first_text_at
    cost = None if done.cost_usd is None or prior.cost_usd is None else done.cost_usd + prior.cost_usd
    answer = Answer(
        text=text,
        model=done.model,
        thread=thread.name,
        response_id=state.response_id,
        status=status,
        usage=prior.usage + done.usage,
        latency_s=done.ended - first_started,
        ttft_s=(first_text_at - first_started) if first_text_at is not None else None,
        cost_usd=cost,
        cost_note=missing_price_note(done.model) if cost is None else None,
        error=reason,
        turn=turn_number,
        cell_id=prepared.options.cell_id,
        notice=prepared.plan.notice(thread.name) if turn_number else None,
        output=list(output_items(state.final)),
        tool_calls=list(prior.tool_calls),
        warning=near_limit_warning(session, thread, done.model) if turn_number else None,
    )
    sink.finished(answer)
    if interrupted:
        raise KeyboardInterrupt
    return answer
