"""The live runner: every row's request on the session's loop, bounded and adaptive, never losing a row.

- ``concurrency`` workers take rows in order; an ``AdaptiveLimit`` decides how many requests may be
  in flight. A row that must wait out a retry is parked in a task of its own (at most
  ``concurrency`` of them), so its worker goes on with the next row meanwhile.
  The limit starts at ``concurrency``, halves when more than a quarter of recent answers are 429s
  (once per wave) and grows by one per ``limit`` successes back up (AIMD).
- 429, 5xx, timeouts and connection errors are retried per row with the session's full-jitter
  backoff, honouring ``Retry-After``; a row waiting to retry gives its slot up meanwhile.
- An answer that fails validation is re-asked (``validation_retries`` times at most) with the
  Pydantic error appended; each re-ask has its own retry budget.
- Every attempt that reached the server is a ledger row, usage included. Records are built on the
  loop and written from the caller's thread between progress ticks, so SQLite never stalls the loop.
- Results live in ``RowResult`` objects created by the caller: if the run is interrupted, what
  finished is already there. ``on_row_done(position, result)`` is called (on the loop) as each row ends.
- **Fail fast**: the first answer no row can get past (``_retry.fails_every_request``: a refused key,
  an unknown model, a closed port, not the API, a wait longer than allowed), or ``UNREADABLE_IN_A_ROW``
  billed answers in a row whose bodies were lost (a proxy corrupting every answer), stops the run: nothing
  new is sent, requests in flight finish, rows not begun stay ``pending`` (``cancelled`` in the
  frame) and ``stop_error`` holds the typed error for the caller to raise.
- **Circuit breaker** (``session.breaker``): every attempt reports to it; while it is open rows wait
  without spending attempts; an outage longer than ``Settings.outage_timeout`` stops the run as above.
  A model not yet answered on this endpoint goes out one request at a time until one is answered.

``drive`` runs the coroutine on ``session.loop`` and, while waiting, ticks the progress view and
flushes the ledger from the calling thread. ``KeyboardInterrupt`` (Jupyter's stop button) cancels
the run, waits for it to unwind, and re-raises (``LoopThread.run``, which owns that rule).
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._core._breaker import SUCCESS
from .._core._client import create_response_dict, idempotency_headers
from .._core._errors import NbOpenAIError, RateLimitError, UnreadableAnswer, translate
from .._core._pacing import rate_limit_kind
from .._core._retry import (
    UNREADABLE_IN_A_ROW,
    RetryPolicy,
    describe_wait,
    failed_attempt_status,
    fails_every_request,
    reached_server,
    retry_after,
    too_long_to_wait,
    unreadable_answer,
)
from .._core._tokens import count_tokens
from .._turns._answer import Usage
from ._progress import Snapshot
from ._rows import Outcome, RowResult, classify

if TYPE_CHECKING:
    from .._core._pacing import Pacer
    from .._ledger._usage import UsageRecord
    from .._session import Session
    from ._format import StrictFormat

__all__ = ["AdaptiveLimit", "InputEstimate", "Tally", "Runner", "drive"]


class AdaptiveLimit:
    """At most ``limit`` holders at once; the limit halves when rate limits are the rule, and creeps back (AIMD).

    A 429 that says when to come back is first the row's business: it waits as told. It is a sign
    that *we* are too fast only when it is common: the limit is cut when more than a quarter of the
    last answers (at least ``min_samples`` of them) were 429s, and once per wave (a 429 on a request
    sent before the last cut is old news). Scattered 429s (a shared quota, a busy minute) then cost
    their own retries and nothing more, while a real storm still throttles us down. The limit grows
    by one per ``limit`` successes, back to the maximum.

    Parameters
    ----------
    maximum
        The ceiling, and the starting limit.
    """

    CUT_ABOVE = 0.25

    def __init__(self, maximum: int, *, min_samples: int = 10) -> None:
        if maximum < 1:
            raise ValueError("maximum must be at least 1")
        self.maximum = maximum
        self.limit = maximum
        self.in_flight = 0
        self.epoch = 0  # bumped by every cut; a 429 on a request sent before the cut is old news
        self.min_samples = min_samples
        self._recent: collections.deque[bool] = collections.deque(maxlen=max(2 * min_samples, maximum))
        self._successes = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._under_way: collections.deque[asyncio.Future[None]] = collections.deque()  # served first

    async def acquire(self, *, first: bool = False) -> int:
        """Wait for a slot; returns the epoch to pass to ``rate_limited``.

        Waiters are served in order, ``first`` ones (rows already under way: retries) before the
        others.
        """
        if self.in_flight < self.limit:  # (then nobody is waiting: ``_wake`` hands free slots over)
            self.in_flight += 1
            return self.epoch
        waiter = asyncio.get_running_loop().create_future()
        queue = self._under_way if first else self._waiters
        queue.append(waiter)
        try:
            await waiter  # ``_wake`` hands the slot over: ``in_flight`` already counts us
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot just before the cancel: pass it on
            elif waiter in queue:  # (``_wake`` drops cancelled waiters it meets)
                queue.remove(waiter)
            raise
        return self.epoch

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def rate_limited(self, epoch: int) -> None:
        self._recent.append(True)
        common = len(self._recent) >= self.min_samples and sum(self._recent) > self.CUT_ABOVE * len(self._recent)
        if epoch == self.epoch and common:
            self.limit = max(1, self.limit // 2)
            self.epoch += 1
            self._successes = 0

    def succeeded(self) -> None:
        self._recent.append(False)
        if self.limit < self.maximum:
            self._successes += 1
            if self._successes >= self.limit:
                self.limit += 1
                self._successes = 0
                self._wake()

    def _wake(self) -> None:
        # Hand free slots straight to the oldest waiters, so a holder that releases and at once
        # asks again queues behind them instead of taking the slot back.
        while self.in_flight < self.limit and (self._under_way or self._waiters):
            waiter = (self._under_way or self._waiters).popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)


@dataclass
class Tally:
    """Live counters, written on the loop and read by the progress view (plain ints: no lock needed)."""

    total: int
    ok: int = 0
    failed: int = 0
    retrying: int = 0
    cached: int = 0
    requests: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    limit: int = 0
    label: str = "extract"
    done_before: int = 0  # rows that ended before the run (cached, kept, missing): not part of its pace
    pace: str | None = None  # "paced to 3,000 requests/min ..." once limits are known
    notice: str | None = None  # why rows wait (the breaker is open)

    @property
    def done(self) -> int:
        return self.ok + self.failed

    def pace_so_far(self, elapsed: float) -> tuple[float | None, float | None]:
        """``(rows a second, seconds left)`` at this run's pace so far (None before its first row has ended)."""
        ran = self.done - self.done_before
        if ran < 1 or elapsed <= 0:
            return None, None
        return ran / elapsed, (self.total - self.done) * elapsed / ran

    def finish(self, result: RowResult) -> None:
        if result.status == "ok":
            self.ok += 1
        else:
            self.failed += 1

    def snapshot(self, *, finished: bool = False) -> Snapshot:
        elapsed = time.perf_counter() - self.started
        rows_per_s, eta_s = self.pace_so_far(elapsed)
        return Snapshot(
            total=self.total,
            done=self.done,
            ok=self.ok,
            failed=self.failed,
            retrying=self.retrying,
            cached=self.cached,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cost_usd=self.cost_usd,
            elapsed_s=elapsed,
            limit=self.limit,
            finished=finished,
            label=self.label,
            pace=self.pace,
            eta_s=None if finished else eta_s,
            rows_per_s=rows_per_s,
            notice=self.notice,
        )

    def totals(self) -> dict[str, Any]:
        return {
            "rows": self.total,
            "ok": self.ok,
            "failed": self.failed,
            "cached": self.cached,
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "cached_tokens": self.cached_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": round(self.cost_usd, 10),
            "elapsed_s": round(time.perf_counter() - self.started, 3),
        }


class LedgerBuffer:
    """Usage records made on the loop, written to the ledger from the caller's thread."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._pending: collections.deque[UsageRecord] = collections.deque()

    def add(self, record: UsageRecord) -> None:
        self._pending.append(record)

    def flush(self) -> None:
        ledger = self.session.ledger
        batch = []
        while True:
            try:
                batch.append(self._pending.popleft())
            except IndexError:
                break
        if not batch:
            return
        ledger.record_many(batch)


class InputEstimate:
    """Input tokens of one row's request, counted offline (tiktoken) before sending: the shared instructions and
    schema once, plus the row's input. For the budget check, pacing, and answers billed but lost."""

    def __init__(self, params: dict[str, Any], model: str) -> None:
        self.model = model
        schema = ((params.get("text") or {}).get("format") or {}).get("schema")
        self.shared = count_tokens(f"{params.get('instructions') or ''}{json.dumps(schema) if schema else ''}", model)

    def __call__(self, row_input: Any) -> int:
        if isinstance(row_input, str):
            return self.shared + count_tokens(row_input, self.model)
        text = " ".join(str(item.get("content", "")) for item in row_input or ())
        return self.shared + count_tokens(text, self.model)


@dataclass(frozen=True)
class Request:
    """What every row's request shares (``input`` is added per row)."""

    params: dict[str, Any]
    model: str
    validation_retries: int
    retry: RetryPolicy


class Runner:
    """Runs rows against the Responses API on the session's loop (see the module docstring)."""

    def __init__(
        self,
        session: Session,
        fmt: StrictFormat,
        request: Request,
        texts: Sequence[str | None],
        results: list[RowResult],
        tally: Tally,
        ledger: LedgerBuffer,
        concurrency: int,
        on_row_done: Callable[[int, RowResult], None] | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        self.session = session
        self.fmt = fmt
        self.request = request
        self.texts = texts
        self.results = results
        self.tally = tally
        self.ledger = ledger
        self.concurrency = concurrency
        self.limit = AdaptiveLimit(concurrency)
        self.estimate = InputEstimate(request.params, request.model)
        self.pacer = pacer
        self.max_output_tokens = request.params.get("max_output_tokens")
        self.on_row_done = on_row_done
        self.breaker = session.breaker
        self.outage_timeout = session.settings.outage_timeout
        self.stop_error: NbOpenAIError | None = None  # set by the first answer that ends the run
        self._unreadable_in_a_row = 0  # billed answers lost since the last one read (see UNREADABLE_IN_A_ROW)
        self._stopped = asyncio.Event()
        self._news = asyncio.Event()  # replaced after every answer: rows held back for the breaker look again
        self._parked: set[asyncio.Future[None]] = set()  # rows waiting out a retry in tasks of their own
        self._pace_queue = asyncio.Lock()  # rows wait for their share of the limits one at a time, in order

    async def run(self, positions: Sequence[int]) -> None:
        """Run every row in ``positions``; returns when all have ended (or raises when cancelled)."""
        if not positions:
            return
        async with self.session.holding_clients() as clients:  # a key changed meanwhile is for the next run
            await self._run(clients.async_client(), positions)

    async def _run(self, client: Any, positions: Sequence[int]) -> None:
        rows = iter(positions)

        async def worker() -> None:
            for position in rows:
                if self._stopped.is_set():
                    return
                await self._guarded(client, _Row(position, self.texts[position]))

        workers = [asyncio.ensure_future(worker()) for _ in range(min(self.concurrency, len(positions)))]
        try:
            await asyncio.gather(*workers)
            while self._parked:
                await asyncio.gather(*self._parked)
        finally:
            unfinished = workers + list(self._parked)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)

    async def _guarded(self, client: Any, row: _Row, parked_for: float | None = None) -> None:
        try:
            await self._row(client, row, parked_for)
        except Exception as exc:  # a bug costs one row, not the run
            self._finish(row.position, row.started, Outcome("error", error=f"unexpected {type(exc).__name__}: {exc}"))

    def _park(self, client: Any, row: _Row, wait: float) -> None:
        """Finish ``row`` in a task of its own after ``wait`` s, so its worker moves on to the next row.

        The limit, not the workers, bounds requests in flight; a row waiting out a retry-after has
        given its slot up, and without parking its worker would leave that slot idle (with 10 % of
        requests answered 429 that made us slower than the raw SDK: benchmarks/extraction.py).
        """
        task = asyncio.ensure_future(self._guarded(client, row, parked_for=wait))
        self._parked.add(task)
        task.add_done_callback(self._parked.discard)

    def _record(self, *, status: str, started_wall: float, latency: float, attempt: int, model: str,
                usage: Usage | None = None, response_id: str | None = None, error: str | None = None) -> UsageRecord:
        record = self.session.usage_record(kind="extract", model=model, status=status, usage=usage, latency_s=latency,
                                           started=started_wall, response_id=response_id, attempt=attempt, error=error)
        self.ledger.add(record)
        return record

    async def _row(self, client: Any, row: _Row, parked_for: float | None = None) -> None:
        """Ask for ``row`` until it ends; a parked row (in a task of its own) first waits ``parked_for`` s.

        A row still ``pending`` when this returns was not finished because the run stopped.
        """
        request, limit = self.request, self.limit
        result = self.results[row.position]
        parked = parked_for is not None
        if parked:
            await self._sleep(parked_for)
        held = False
        while True:
            if self._stopped.is_set():
                if held:
                    limit.release()
                return
            # A row already started (a retry, a re-ask) goes before rows not yet begun.
            epoch = limit.epoch if held else await limit.acquire(first=result.attempts > 0)
            held = False
            probe = await self._admitted()
            paced = await self._paced(row) if probe is not None else False
            if probe is None or not paced:  # the run stopped while this row waited
                self._abandoned(bool(probe))
                limit.release()
                return
            if row.started is None:  # from its first send: time queued for a slot is not its latency
                row.started = time.perf_counter()
            row.tries += 1
            result.attempts += 1
            self.tally.limit = limit.limit
            self.tally.requests += 1
            started, started_wall = time.perf_counter(), time.time()
            try:
                body = {**request.params, "input": row.input}
                response, headers = await create_response_dict(client, body, headers=row.idempotency)
            except asyncio.CancelledError:
                limit.release()
                self._abandoned(probe)
                self._record(status="cancelled", started_wall=started_wall, latency=time.perf_counter() - started,
                             attempt=result.attempts, model=request.model, error="interrupted by the user")
                raise
            except Exception as exc:
                limit.release()
                self._settled(exc, probe)
                wait = self._failed(exc, epoch, row, result, started, started_wall)
                self._heard_refusal(exc)
                lost = self._unreadable_in_a_row >= UNREADABLE_IN_A_ROW
                ends_the_run = lost or fails_every_request(exc, max_wait=request.retry.max_wait)
                if wait is None or ends_the_run:
                    error = translate(exc, attempts=row.tries)
                    if ends_the_run:
                        self._stop(self._lost_answers(exc) if lost else self._run_ender(exc, error))
                    self._finish(row.position, row.started, Outcome("error", error=error.message))
                    return
                if not parked and len(self._parked) < self.concurrency:
                    self._park(client, row, wait)
                    return
                await self._sleep(wait)
                continue
            try:
                self._settled(None, probe)
                limit.succeeded()
                self._heard(headers, row, response)
                outcome = self._answered(response, result, started, started_wall, row.input)
                reask_left = row.reasks < request.validation_retries and not self._stopped.is_set()
                if outcome.status == "invalid" and reask_left:
                    row.reasks, row.tries, held = row.reasks + 1, 0, True  # the re-ask goes out on this same slot
                    row.idempotency = idempotency_headers()  # another question: another key
                    row.input = reask(row.text or "", outcome.text, outcome.error)
                    continue
            finally:
                if not held:
                    limit.release()
            self._finish(row.position, row.started, outcome)
            return

    async def _admitted(self) -> bool | None:
        """Wait until the breaker lets a request go: True for its half-open probe, None if the run stopped.

        While the breaker is open (or a model's first request is out) rows wait here, spending no
        attempt; an outage longer than ``outage_timeout`` stops the run.
        """
        breaker, model = self.breaker, self.request.model
        while not self._stopped.is_set():
            wait, probe = breaker.wait_before_sending()
            if wait <= 0:
                if probe or breaker.first_contact(model):
                    return probe
                wait = 1.0  # the first request for this model is out: its answer (news) wakes us sooner
            elif (outage := breaker.outage_s()) >= self.outage_timeout:
                self._stop(breaker.unavailable())
                break
            else:
                self.tally.notice = (f"the API is failing: rows wait for it ({describe_wait(outage)} so far, "
                                     f"giving up after {describe_wait(self.outage_timeout)})")
            self.tally.retrying += 1
            try:
                await self._until(self._news, min(wait, 1.0))
            finally:
                self.tally.retrying -= 1
        return None

    async def _paced(self, row: _Row) -> bool:
        """Wait until this request's share of the account's limits is there (its input tokens counted offline,
        plus its ``max_output_tokens``) and take it; False if the run stopped meanwhile. One row waits at a time."""
        pacer = self.pacer
        row.estimated_input = row.reserved_input = 0
        if pacer is None or (pacer.calibrated and not pacer.active):
            return True
        row.estimated_input = self.estimate(row.input)  # (before any limit is known: to calibrate on the answer)
        row.reserved_input = pacer.input_tokens_for(row.estimated_input)
        tokens = row.reserved_input + (self.max_output_tokens or 0)
        if not pacer.active:
            pacer.take(tokens)  # remembered: it still counts against the limits once they are known
            row.reserved_input = 0
            return True
        async with self._pace_queue:
            while (wait := pacer.wait_for(tokens)) > 0:
                if wait > self.request.retry.max_wait:  # a 429's hour (held for the next run too): stop, don't sit
                    self._stop(self._held_too_long(wait))
                    return False
                await self._until(self._stopped, wait)
                if self._stopped.is_set():
                    return False
            pacer.take(tokens)
        return True

    def _heard(self, headers: Any, row: _Row, response: dict[str, Any]) -> None:
        """An answer: learn the limits its headers announce, and how the server counts tokens."""
        pacer = self.pacer
        if pacer is None:
            return
        pacer.learn(headers)
        if row.estimated_input:
            pacer.counted(row.estimated_input, row.reserved_input, Usage.from_api(response.get("usage")).input)
        self.tally.pace = pacer.describe()

    def _heard_refusal(self, exc: BaseException) -> None:
        """A refused attempt: its headers may announce the limits; a 429 holds everyone back for its wait."""
        pacer, response = self.pacer, getattr(exc, "response", None)
        if pacer is None or response is None:
            return
        if getattr(exc, "status_code", None) == 429:
            pacer.rejected(response.headers, rate_limit_kind(exc), retry_after(exc))
        else:
            pacer.learn(response.headers)
        self.tally.pace = pacer.describe()

    def _settled(self, exc: BaseException | None, probe: bool) -> None:
        """Tell the breaker how an attempt went, count unreadable answers in a row, and wake the rows waiting for
        news."""
        if exc is not None and unreadable_answer(exc):
            self._unreadable_in_a_row += 1
        elif exc is None or getattr(exc, "status_code", None) is not None:  # an answer read: its body came through
            self._unreadable_in_a_row = 0
        kind = self.breaker.settle(exc, model=self.request.model, probe=probe, describe=lambda e: translate(e).message)
        if kind == SUCCESS:
            self.tally.notice = None
        self._news.set()
        self._news = asyncio.Event()

    def _abandoned(self, probe: bool) -> None:
        """An attempt cancelled before its answer: the breaker hears nothing, the next request may try."""
        if probe:
            self.breaker.release_probe()
        self.breaker.forget_contact(self.request.model)

    def _run_ender(self, exc: BaseException, error: NbOpenAIError) -> NbOpenAIError:
        """The error that ends the run for ``exc``; a wait too long to sit out says how long it was."""
        asked = too_long_to_wait(exc, self.request.retry.max_wait)
        if asked is not None:
            error.message += (f" The server asked to wait {describe_wait(asked)}, longer than the "
                              f"{describe_wait(self.request.retry.max_wait)} nbopenai waits (Settings.max_retry_wait).")
            error.args = (error.message,)
        return error

    def _lost_answers(self, exc: BaseException) -> UnreadableAnswer:
        """The error that ends a run whose answers keep arriving unreadable (``UNREADABLE_IN_A_ROW``)."""
        cause = type(exc.__cause__ or exc).__name__
        return UnreadableAnswer(f"{self._unreadable_in_a_row} answers in a row could not be read: each was billed "
                                f"(tokens estimated in the ledger) and lost (the last to {cause}), so the run stopped "
                                "rather than pay for every row that way.",
                                hint="Something between you and the API (a proxy, a VPN, the network) is cutting or "
                                     "corrupting its answers: once that is fixed, re-run with --retry-failed "
                                     "(retry_failed=True) to finish the rows.")

    def _held_too_long(self, wait: float) -> RateLimitError:
        """The error that ends a run the account's limits would hold back longer than ``max_retry_wait``."""
        cap = self.request.retry.max_wait
        return RateLimitError(f"The account's rate limits hold the next request back for {describe_wait(wait)}, longer "
                              f"than the {describe_wait(cap)} nbopenai waits (Settings.max_retry_wait).",
                              hint="Re-run the cell once that wait is over; the finished rows are kept.")

    def _stop(self, error: NbOpenAIError) -> None:
        """End the run: nothing new is sent; requests in flight finish; ``error`` is what the caller raises."""
        if self.stop_error is None:
            self.stop_error = error
        self._stopped.set()
        self._news.set()

    async def _until(self, event: asyncio.Event, seconds: float) -> None:
        """Sleep ``seconds``, or less if ``event`` or the stop comes first."""
        waits = [asyncio.ensure_future(event.wait())]
        if event is not self._stopped:
            waits.append(asyncio.ensure_future(self._stopped.wait()))
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    async def _sleep(self, seconds: float) -> None:
        """Wait out a retry's pause (cut short if the run stops)."""
        self.tally.retrying += 1
        try:
            await self._until(self._stopped, seconds)
        finally:
            self.tally.retrying -= 1

    def _failed(self, exc: Exception, epoch: int, row: _Row, result: RowResult, started: float,
                started_wall: float) -> float | None:
        """Account for a failed attempt; returns the seconds to wait before the next, or None to give up."""
        if getattr(exc, "status_code", None) == 429:
            self.limit.rate_limited(epoch)
            self.tally.limit = self.limit.limit
        if reached_server(exc):
            status = failed_attempt_status(exc)
            # Refused before any token: billed nothing. Unreadable: billed, its body lost; estimate what it cost.
            usage = Usage(input=self.estimate(row.input), estimated=True) if status == "unreadable" else None
            cost = self._record(status=status, started_wall=started_wall, latency=time.perf_counter() - started,
                                attempt=result.attempts, model=self.request.model, usage=usage,
                                error=translate(exc).message).cost_usd
            if usage is not None:
                self._count_usage(result, usage, cost)
        return self.request.retry.delay(row.tries, exc)

    def _answered(self, response: dict[str, Any], result: RowResult, started: float, started_wall: float,
                  row_input: Any) -> Outcome:
        """Account for an answer (ledger, row and tally usage); returns what it means for the row."""
        latency = time.perf_counter() - started
        response_id = response.get("id")
        try:
            outcome = classify(response, self.fmt.parse)
        except Exception as exc:  # a validator raising TypeError, say: this row's error, and the answer stays billed
            outcome = Outcome("error", error=f"the validator raised {type(exc).__name__}: {exc}")

        def estimate() -> Usage:  # usage the server left out is unknown, not 0 (see Usage.reported_or)
            output = count_tokens(outcome.text or "", self.request.model)
            return Usage(self.estimate(row_input), output=output, estimated=True)

        usage = Usage.reported_or(response.get("usage"), estimate)
        cost = self._record(status=response.get("status") or "completed", started_wall=started_wall, latency=latency,
                            attempt=result.attempts, model=response.get("model") or self.request.model, usage=usage,
                            response_id=response_id, error=outcome.error).cost_usd
        self._count_usage(result, usage, cost)
        result.response_id = response_id
        return outcome

    def _count_usage(self, result: RowResult, usage: Usage, cost: float | None) -> None:
        result.add_usage(usage, cost)
        tally = self.tally
        tally.input_tokens += usage.input
        tally.cached_tokens += usage.cached
        tally.output_tokens += usage.output
        tally.cost_usd += cost or 0.0

    def _finish(self, position: int, row_started: float | None, outcome: Outcome) -> None:
        result = self.results[position]
        result.status, result.value = outcome.status, outcome.value
        result.text, result.error = outcome.text, outcome.error
        result.latency_s = time.perf_counter() - row_started if row_started is not None else None
        self.tally.finish(result)
        if self.on_row_done is not None:
            self.on_row_done(position, result)


@dataclass(slots=True)
class _Row:
    """Where one row's questioning stands (it moves to a task of its own when parked)."""

    position: int
    text: str | None
    input: Any = None
    tries: int = 0  # attempts at the current question; a re-ask starts a fresh retry budget
    reasks: int = 0
    started: float | None = None
    estimated_input: int = 0  # input tokens of the request out, counted offline (when paced)
    reserved_input: int = 0  # and reserved against the tokens limit
    idempotency: dict[str, str] = field(default_factory=idempotency_headers)  # one key for the attempts at a question

    def __post_init__(self) -> None:
        if self.input is None:
            self.input = self.text


def reask(text: str, answer: str | None, error: str | None) -> list[dict[str, str]]:
    """The input of a re-ask: the text, the rejected answer, and what was wrong with it."""
    items = [{"role": "user", "content": text}]
    if answer:
        items.append({"role": "assistant", "content": answer})
    items.append(
        {
            "role": "user",
            "content": f"That answer did not validate ({error}). Reply again with JSON that fixes it.",
        }
    )
    return items


def drive(
    session: Session,
    coro: Coroutine[Any, Any, Any],
    tick: Callable[[], None],
    interval: float,
) -> Any:
    """Run ``coro`` on ``session.loop``, calling ``tick()`` every ``interval`` seconds from this thread.

    ``LoopThread.run`` waits: on ``KeyboardInterrupt`` (the stop button, or ``tick`` raising it: a
    progress callback that wants to stop) it cancels, waits for the coroutine to unwind (so its
    finished rows are final) and re-raises.
    """
    if session.loop.in_loop_thread():
        raise RuntimeError("extract was called from the session's own event loop; call it from ordinary code")
    return session.loop.run(coro, tick=tick, interval=interval)
