"""Background turns: submitted with ``background=true``, polled on the session's loop.

``submit`` returns at once with a ``Job``; the session's loop thread polls the response (the
kernel stays free for other cells) and, when it ends, finishes it through the same
``TurnRecorder`` as an ask (ledger row, thread, ``Answer`` with its cost note, warning and output
items), then calls ``on_done(job)``.

A background answer joins its thread only if the thread has not moved since submission: no turn
was committed to it (an ask, another job, a compaction, a reset) and no foreground turn is being
written on it at that moment. Otherwise the answer is still returned (``job.answer``) and in the
ledger, with ``turn=None`` and a ``notice`` saying it was not added: a background job never
rewrites a conversation that went on without it.

A session closed while a job still runs stops polling it (``LoopThread.drain`` cancels the poll) but
does not cancel it on the server: the response is the user's, stored and retrievable by its id, and
closing (an unload, a kernel shutdown) should not throw away paid work or wait for it. The server
still finishes and bills it, so the job ends ``interrupted`` here with a ledger row that says so:
its id, its input tokens estimated (the server has reported nothing), and how to retrieve it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._core._errors import NbOpenAIError, UsageError, translate
from ._answer import Answer
from ._ask import PreparedAsk, chained, holding, refused
from ._recorder import TurnRecorder, TurnServices, clock, state_of
from ._streaming import StreamState

__all__ = ["Job", "submit", "TERMINAL"]

TERMINAL = frozenset({"completed", "incomplete", "failed", "cancelled"})
# Where polling ended without a terminal status: it failed for good, or the session closed under it.
_STOPPED_HERE = frozenset({"error", "interrupted"})
_POLL_FIRST, _POLL_MAX = 0.2, 2.0


@dataclass
class Job:
    """A background turn. ``status`` follows the server: queued, in_progress, then a terminal one."""

    number: int
    response_id: str
    prompt: str
    thread: str
    model: str
    status: str = "queued"
    answer: Answer | None = None
    error: NbOpenAIError | None = None
    submitted_at: float = field(default_factory=time.time)
    _services: Any = field(default=None, repr=False)
    _future: Any = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return f"job-{self.number}"

    def done(self) -> bool:
        return self.status in TERMINAL or self.status in _STOPPED_HERE or self.error is not None

    def wait(self, timeout: float | None = None) -> Answer | None:
        """Block until the job ends (for scripts and tests); returns its answer."""
        if self._future is not None:
            self._future.result(timeout=timeout)
        return self.answer

    def cancel(self) -> None:
        """Ask the server to cancel; the poller records the final state."""
        if self.done():
            return
        services = self._services
        try:
            services.retry.call(lambda: services.client().responses.cancel(self.response_id), idempotent=True)
        except Exception as exc:  # a refused cancel is one of our errors, never the SDK's (with its request)
            raise translate(exc) from None

    def row(self) -> dict[str, Any]:
        return {
            "job": self.id,
            "status": self.status,
            "thread": self.thread,
            "model": self.model,
            "response_id": self.response_id,
            "prompt": self.prompt[:60],
            "submitted": time.strftime("%H:%M:%S", time.localtime(self.submitted_at)),
        }


def submit(
    services: TurnServices, prepared: PreparedAsk, number: int, on_done: Callable[[Job], None] | None = None
) -> Job:
    """Send ``prepared`` with ``background=true`` and start polling it as job ``number``; returns immediately."""
    # The SDK's module, imported when a job is submitted (not with nbopenai).
    from .._core._client import with_idempotency  # noqa: PLC0415

    if not prepared.params.get("store", True):
        raise UsageError("background mode needs store=True: the server must keep the response to be polled")
    # The job's clients, held from its create to its last poll (handed to ``_poll``, which lets go): the job
    # lives on that endpoint, so a setting changed before the loop begins the poll must not move the polls.
    held = services.holding_clients()
    with contextlib.ExitStack() as letting_go:  # until the poll takes the clients over: let go on a failure
        clients = letting_go.enter_context(held)
        with holding(services, prepared) as prepared:
            services.ledger.check_budget(prepared.model, lambda: prepared.estimated_input_tokens)
            recorder = TurnRecorder(services, prepared.place)

            def create(asked: PreparedAsk) -> Any:
                params = with_idempotency({**asked.params, "background": True})  # one key for every attempt
                # Rejected attempts (429, 5xx, a cut connection) are ledger rows, as they are for a plain ask.
                attempts = recorder.attempts("background")
                try:
                    send = lambda: clients.client().responses.create(**params)  # noqa: E731
                    return services.retry.call(lambda: services.breaker().call(send), on_failure=attempts)
                except Exception as exc:
                    raise refused(exc, asked, attempts) from None

            response, prepared = chained(recorder, prepared, create)  # a chain the server lost: sent again
            moves = services.threads.moves(prepared.options.thread)
        job = Job(
            number=number,
            response_id=response.id,
            prompt=prepared.prompt,
            thread=prepared.thread.name,
            model=prepared.model,
            status=response.status or "queued",
            _services=services,
        )
        job._future = services.loop.submit(_poll(services, recorder, job, moves, on_done, clients, held))
        letting_go.pop_all()
    return job


async def _poll(
    services: TurnServices,
    recorder: TurnRecorder,
    job: Job,
    moves: int,
    on_done: Callable[[Job], None] | None,
    clients: Any,
    held: Any,
) -> None:
    """Poll ``job`` until it ends, then finish it as a turn (it joins its thread only if that did not move).

    On ``clients``, held (``held``, a ``Session.holding_clients()`` entered) since the job was created: the
    job lives on that endpoint, and a key changed meanwhile (from another thread, or just after ``submit``)
    must neither close them under a poll nor send the polls elsewhere. Let go of when polling ends.
    """
    import asyncio  # noqa: PLC0415 - loaded with the session's loop, which runs this; not with `import nbopenai`

    started = clock()
    delay = _POLL_FIRST
    response = None
    closed_at: str | None = None
    try:
        try:
            while not job.done():
                await asyncio.sleep(delay)
                delay = min(_POLL_MAX, delay * 1.5)
                response = await services.retry.acall(
                    lambda: clients.async_client().responses.retrieve(job.response_id), idempotent=True
                )
                job.status = response.status
        finally:  # on the loop: replaced clients are closed here, awaited (not left to a task a close would cancel)
            await held.let_go()
    except asyncio.CancelledError:
        # Only the session's close cancels a poll (``LoopThread.drain``). The task ends normally after
        # recording, so ``job.wait()`` returns the interrupted answer instead of raising CancelledError.
        # Cancelled after the last poll saw the end (letting go of the clients): that answer is whole.
        if job.status not in TERMINAL:
            closed_at, job.status = job.status, "interrupted"
    except Exception as exc:  # polling failed for good: keep the job, say why
        job.error = translate(exc)
        job.status = "error"
    state = state_of(response) if response is not None and job.status in TERMINAL else StreamState()
    state.response_id = job.response_id
    if job.error is not None:
        state.fail(job.error.message)
    elif closed_at is not None:
        state.fail(
            f"the session closed while {job.id} was {closed_at}: the server still runs it and bills it "
            f"(input tokens here are estimated); retrieve {job.response_id} for its answer and usage"
        )
    job.answer = recorder.finish(
        state, started, kind="background", status=job.status, if_unmoved_since=moves, moved_on=job.id
    )
    if on_done is not None:
        on_done(job)
