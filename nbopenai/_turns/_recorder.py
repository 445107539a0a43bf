"""How every turn ends: its rounds in the ledger (each exactly once), the turn in its thread, the ``Answer``.

Asks, tool loops, background jobs and compactions all finish through one ``TurnRecorder``, so they
keep the same rules:

- Every request that reached the server is one ledger row, written as soon as its response ended
  (``round``) and before anything else can fail; rejected attempts are rows too (``Attempts``).
- Usage the server did not report (no ``usage``, ``{}``, a missing count) is estimated and marked
  ``estimated``, never taken as 0: a token budget must still see it.
- A failed or interrupted turn never moves its thread; a completed or incomplete one is committed
  through the ``ThreadStore`` (serialised per thread). An answer that may no longer join its thread
  (a background job whose thread moved on) is still returned and in the ledger, with a notice.
- Error text comes from the ``StreamState`` or the translated error, never from a raw server field.

Turn code gets a ``TurnServices`` (what it may use of the session), never the ``Session`` itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .._core._breaker import CircuitBreaker
from .._core._errors import NbOpenAIError, UnreadableAnswer, translate
from .._core._loop import LoopThread
from .._core._retry import RetryPolicy, failed_attempt_status, reached_server
from .._core._settings import Settings
from .._core._tokens import InputEstimate, count_tokens
from .._ledger._prices import missing_price_note
from .._ledger._writer import LedgerWriter
from ._answer import Answer, Usage
from ._conversation import Plan, Thread, ThreadStore, Turn
from ._streaming import StreamState
from ._window import ContextWindows, near_limit_warning

if TYPE_CHECKING:
    import openai

__all__ = [
    "AskSink",
    "NullSink",
    "TurnServices",
    "TurnPlace",
    "PriorRounds",
    "Round",
    "Attempts",
    "TurnRecorder",
    "output_items",
    "state_of",
    "clock",
]

INTERRUPTED = "interrupted by the user"


def clock() -> float:
    return time.perf_counter()


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
class TurnServices:
    """What turn code may use of its session; ``Session.services()`` wires one per call.

    ``client``, ``async_client``, ``breaker`` and ``context_windows`` are read on use: the session
    builds its clients on first use and rebuilds them (and the breaker) when a network setting changes.
    Work of several requests takes its clients from ``holding_clients()`` instead (``Session.holding_clients``):
    a setting changed meanwhile neither closes them under it nor moves it to another key or endpoint.
    """

    settings: Settings
    threads: ThreadStore
    ledger: LedgerWriter
    retry: RetryPolicy
    loop: LoopThread
    client: Callable[[], openai.OpenAI]
    async_client: Callable[[], openai.AsyncOpenAI]
    breaker: Callable[[], CircuitBreaker]
    context_windows: Callable[[], ContextWindows]
    holding_clients: Callable[[], Any]


@dataclass(frozen=True)
class TurnPlace:
    """Where a turn goes and what it asked: all the recorder needs of a prepared request."""

    thread: Thread
    plan: Plan
    prompt: str
    model: str
    cell_id: str | None = None
    input_items: tuple[dict, ...] = ()  # what the turn adds before the answer (the user's message)
    estimate: InputEstimate = InputEstimate(None)  # counted only if the server does not say


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


@dataclass(frozen=True)
class Round:
    """One request as the ledger got it: how it ended, its usage and the row's cost."""

    status: str
    usage: Usage
    model: str
    ended: float
    cost_usd: float | None


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


def _usage_of(response: Any) -> Any:
    if response is None:
        return None
    return response.get("usage") if isinstance(response, dict) else getattr(response, "usage", None)


class Attempts:
    """A request's attempts, counted; those that reached the server but failed are ledger rows.

    Pass one as ``RetryPolicy.call(on_failure=...)``. ``unless(exc)`` exempts a failure that is no
    call at all (compaction's "no such endpoint"). ``maybe_billed`` is true once an attempt reached the
    server without an HTTP refusal (cut or timed out after sending, an answer that could not be read).
    """

    def __init__(self, recorder: TurnRecorder, kind: str, *, unless: Callable[[BaseException], bool] | None = None):
        self.recorder, self.kind, self.unless, self.count = recorder, kind, unless, 0
        self.maybe_billed = False

    def __call__(self, exc: BaseException, attempt: int, will_retry: bool) -> None:
        self.count = attempt
        if not reached_server(exc):
            return
        status = failed_attempt_status(exc)
        refused = getattr(exc, "status_code", None)
        if status == "unreadable" or not (isinstance(refused, int) and refused >= 400):
            self.maybe_billed = True
        if not (self.unless is not None and self.unless(exc)):
            self.recorder.record(
                kind=self.kind,
                status=status,
                usage=self.recorder.estimate("") if status == "unreadable" else None,  # billed, its body lost
                attempt=attempt,
                error=translate(exc).message,
            )


class TurnRecorder:
    """Finishes one turn: records its rounds, commits it to its thread and builds its ``Answer``.

    Parameters
    ----------
    services
        The session's services (ledger, threads, context windows).
    place
        Where the turn goes and what it asked.
    sink
        Gets the finished answer (``sink.finished``), partial ones included.
    """

    def __init__(self, services: TurnServices, place: TurnPlace, sink: AskSink | None = None) -> None:
        self.services = services
        self.place = place
        self.sink = sink or NullSink()
        self.prior = PriorRounds()
        self._last: tuple[StreamState, Round] | None = None

    # ---- the ledger -------------------------------------------------------------------------

    def attempts(self, kind: str, **options: Any) -> Attempts:
        return Attempts(self, kind, **options)

    def record(self, **fields: Any):
        """Write one ledger row of this turn (thread, cell and model filled in)."""
        fields.setdefault("model", self.place.model)
        return self.services.ledger.record(thread=self.place.thread.name, cell_id=self.place.cell_id, **fields)

    def estimate(self, text: str) -> Usage:
        """The usage of a request of this turn that wrote ``text``, estimated (the server did not say)."""
        return Usage(self.place.estimate.tokens, output=count_tokens(text, self.place.model), estimated=True)

    def usage(self, state: StreamState) -> Usage:
        """What the response reported; counts it did not report are estimated (and marked so), never 0."""
        return Usage.reported_or(_usage_of(state.final), lambda: self.estimate(state.text))

    def round(
        self,
        state: StreamState,
        started: float,
        *,
        kind: str,
        attempt: int = 1,
        interrupted: bool = False,
        error: NbOpenAIError | None = None,
        status: str | None = None,
    ) -> Round:
        """Write the ledger row of one request, once: asked again for the same ``state``, the first row's ``Round``."""
        if self._last is not None and self._last[0] is state:
            return self._last[1]
        ended = clock()
        response = state.final
        status = status or ("interrupted" if interrupted else ("failed" if error else state.status))
        if isinstance(error, UnreadableAnswer):  # a 2xx whose body was lost: billed, tokens estimated
            status = "unreadable"
        if status == "streaming":  # the stream ended without an end event
            status, state.error = "failed", "the stream ended before the response completed"
        usage = self.usage(state)
        model = self.place.model
        if response is not None:
            model = getattr(response, "model", None) or state.model or model
        row = self.record(
            kind=kind,
            model=model,
            status=status,
            response_id=state.response_id,
            usage=usage,
            latency_s=ended - started,
            ttft_s=(state.first_text_at - started) if state.first_text_at is not None else None,
            attempt=attempt,
            error=INTERRUPTED if interrupted else state.error,
        )
        done = Round(status, usage, model, ended, row.cost_usd)
        self._last = (state, done)
        return done

    def carry(
        self,
        state: StreamState,
        started: float,
        done: Round,
        *,
        items: tuple[dict, ...],
        tool_calls: tuple[dict, ...],
        stopped: str | None = None,
    ) -> None:
        """Fold a recorded round that asked for tools into the turn (its final answer comes later)."""
        prior = self.prior
        cost = None if prior.cost_usd is None or done.cost_usd is None else prior.cost_usd + done.cost_usd
        self.prior = PriorRounds(
            items=(*prior.items, *items),
            texts=(*prior.texts, state.text) if state.text else prior.texts,
            tool_calls=(*prior.tool_calls, *tool_calls),
            usage=prior.usage + done.usage,
            cost_usd=cost,
            started=prior.started if prior.started is not None else started,
            first_text_at=prior.first_text_at if prior.first_text_at is not None else state.first_text_at,
            stopped=stopped,
        )

    # ---- the end ----------------------------------------------------------------------------

    def commit(self, turn: Turn, *, if_unmoved_since: int | None = None) -> int | None:
        """Add ``turn`` to the thread where the plan says (``ThreadStore.commit``); its number, or None if refused."""
        place = self.place
        return self.services.threads.commit(place.thread, place.plan, turn, if_unmoved_since=if_unmoved_since)

    def finish(
        self,
        state: StreamState,
        started: float,
        *,
        kind: str = "ask",
        attempt: int = 1,
        interrupted: bool = False,
        error: NbOpenAIError | None = None,
        status: str | None = None,
        if_unmoved_since: int | None = None,
        moved_on: str = "this answer",
    ) -> Answer:
        """Record the turn's last request (unless already), commit the turn when it succeeded, hand ``sink`` the answer.

        ``if_unmoved_since`` (a background answer's): commit only if the thread has not moved since
        (``ThreadStore.commit``); otherwise the answer says so in its ``notice`` (naming ``moved_on``).
        Re-raises ``KeyboardInterrupt`` after the partial answer was delivered when ``interrupted``.
        """
        done = self.round(
            state, started, kind=kind, attempt=attempt, interrupted=interrupted, error=error, status=status
        )
        place, prior = self.place, self.prior
        # Interrupted after its round was recorded as completed (the stop button while a tool ran):
        # the turn is still interrupted, and does not move the thread.
        status, reason = ("interrupted", INTERRUPTED) if interrupted else (done.status, state.error)
        if prior.stopped and status == "completed":
            status, reason = "incomplete", prior.stopped
        if state.refused and status == "completed":  # billed and kept in the thread, but marked
            status, reason = "refused", "the model declined to answer"
        text = "\n\n".join(part for part in (*prior.texts, state.text) if part)
        thread = place.thread
        turn_number, notice, warning = None, None, None
        # A failed or interrupted turn never moves the thread; an incomplete one is a real, stored
        # response the model can continue from, so it does.
        if status in ("completed", "incomplete", "refused") and state.final is not None:
            turn = Turn(
                prompt=place.prompt,
                answer=text,
                response_id=state.response_id,
                model=done.model,
                status=status,
                cell_id=place.cell_id,
                input_items=(*place.input_items, *prior.items),
                output_items=({"role": "assistant", "content": state.text},) if state.text else (),
                input_tokens=done.usage.input,
                cached_tokens=done.usage.cached,
                output_tokens=done.usage.output,
            )
            turn_number = self.commit(turn, if_unmoved_since=if_unmoved_since)
            if turn_number is None:
                notice = f"thread {thread.name} moved on before {moved_on} came back; it was not added to the thread"
            else:
                notice = place.plan.notice(thread.name)
                warning = near_limit_warning(self.services.context_windows(), thread, done.model)
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
            cell_id=place.cell_id,
            notice=notice,
            output=list(output_items(state.final)),
            tool_calls=list(prior.tool_calls),
            warning=warning,
        )
        self.sink.finished(answer)
        if interrupted:
            raise KeyboardInterrupt
        return answer
