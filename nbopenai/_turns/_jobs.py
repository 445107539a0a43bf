"""Background turns: submitted with ``background=true``, polled on the session's loop.

``submit`` returns at once with a ``Job``; the session's loop thread polls the response (the
kernel stays free for other cells) and, when it ends, records usage, commits the turn to its
thread and calls ``on_done(job)``. The turn is committed only if the thread's head is still where
it was at submission; otherwise the answer stays with the job and the thread is left alone (its
``notice`` says so), so a background job never rewrites a conversation you continued meanwhile.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._answer import Answer, Usage
from ._ask import _Attempts, state_of
from ._conversation import Turn
from .._core._errors import NbOpenAIError, UsageError, translate

if TYPE_CHECKING:
    from ._ask import PreparedAsk
    from .._session import Session

__all__ = ["Job", "submit", "TERMINAL"]

TERMINAL = frozenset({"completed", "incomplete", "failed", "cancelled"})
_POLL_FIRST, _POLL_MAX = 0.2, 2.0
_numbers = itertools.count(1)


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
    _session: Any = field(default=None, repr=False)
    _future: Any = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return f"job-{self.number}"

    def done(self) -> bool:
        return self.status in TERMINAL or self.error is not None

    def wait(self, timeout: float | None = None) -> Answer | None:
        """Block until the job ends (for scripts and tests); returns its answer."""
        if self._future is not None:
            self._future.result(timeout=timeout)
        return self.answer

    def cancel(self) -> None:
        """Ask the server to cancel; the poller records the final state."""
        if self.done():
            return
        try:
            self._session.retry.call(lambda: self._session.client.responses.cancel(self.response_id), idempotent=True)
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


def submit(session: "Session", prepared: "PreparedAsk", on_done: Callable[[Job], None] | None = None) -> Job:
    """Send ``prepared`` with ``background=true`` and start polling it; returns immediately."""
    if not prepared.params.get("store", True):
        raise UsageError("background mode needs store=True: the server must keep the response to be polled")
    session.check_budget(prepared.model, prepared.estimated_input_tokens)
    params = {**prepared.params, "background": True}
    # Rejected attempts (429, 5xx, a cut connection) are ledger rows, as they are for a plain ask.
    attempts = _Attempts(session, prepared, "background")
    try:
        response = session.retry.call(lambda: session.breaker.call(lambda: session.client.responses.create(**params)),
                                      on_failure=attempts)
    except Exception as exc:
        raise translate(exc, attempts=attempts.count) from None
    job = Job(
        number=next(_numbers),
        response_id=response.id,
        prompt=prepared.prompt,
        thread=prepared.thread.name,
        model=prepared.model,
        status=response.status or "queued",
        _session=session,
    )
    session.jobs.append(job)
    head_at_submit = prepared.thread.head
    job._future = session.loop.submit(_poll(session, prepared, job, head_at_submit, on_done))
    return job


def _failure(job: Job, response: Any) -> str | None:
    """Why the job did not complete: polling failed, or the server's own reason for a failed response."""
    if job.error is not None:
        return job.error.message
    error = getattr(response, "error", None) if response is not None else None
    return (getattr(error, "message", None) or "the response failed") if job.status == "failed" else None


async def _poll(session: "Session", prepared: "PreparedAsk", job: Job, head: str | None, on_done) -> None:
    started = time.perf_counter()
    delay = _POLL_FIRST
    response = None
    try:
        while not job.done():
            await asyncio.sleep(delay)
            delay = min(_POLL_MAX, delay * 1.5)
            response = await session.retry.acall(
                lambda: session.async_client.responses.retrieve(job.response_id), idempotent=True
            )
            job.status = response.status
    except Exception as exc:  # polling failed for good: keep the job, say why
        job.error = translate(exc)
        job.status = "error"
    latency = time.perf_counter() - started
    usage = Usage.from_api(response.usage) if response is not None and response.usage else Usage()
    state = state_of(response) if response is not None else None
    text = state.text if state is not None else ""
    refused = state is not None and state.refused and job.status == "completed"
    record = session.record(
        kind="background",
        model=prepared.model,
        status=job.status,
        usage=usage,
        latency_s=latency,
        thread=job.thread,
        cell_id=prepared.options.cell_id,
        response_id=job.response_id,
        error=_failure(job, response),
    )
    turn_number, notice = None, None
    if job.status in ("completed", "incomplete"):
        if prepared.thread.head == head:
            turn = Turn(
                prompt=prepared.prompt,
                answer=text,
                response_id=job.response_id,
                model=prepared.model,
                status=job.status,
                cell_id=prepared.options.cell_id,
                input_items=(prepared.params["input"][-1],),
                output_items=({"role": "assistant", "content": text},),
                input_tokens=usage.input,
                cached_tokens=usage.cached,
                output_tokens=usage.output,
            )
            turn_number = prepared.thread.commit(prepared.plan, turn)
            session.threads.adopt(prepared.thread)
        else:
            notice = f"thread {job.thread} moved on while {job.id} ran; its answer was not added to the thread"
    job.answer = Answer(
        text=text,
        model=prepared.model,
        thread=job.thread,
        response_id=job.response_id,
        status="refused" if refused else job.status,
        usage=usage,
        latency_s=latency,
        cost_usd=record.cost_usd,
        error="the model declined to answer" if refused else _failure(job, response),
        turn=turn_number,
        cell_id=prepared.options.cell_id,
        notice=notice,
    )
    if on_done is not None:
        on_done(job)
