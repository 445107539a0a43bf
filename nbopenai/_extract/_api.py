"""``extract``: validate the model once, reuse what is known, run the rest, return a frame that lines up.

The steps, in order, all before the first request: the options are checked, the strict schema is
built and linted (``SchemaError`` if it cannot be sent), the inputs are normalised, rows already
answered are taken from a previous frame (``retry_failed``; these first steps are ``_prepared``) or
the cache, and the budget is checked. Then the remaining rows run live (``_runner``) or through the
Batch API (``_batch``), and the results become one DataFrame (``_frame``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._core._errors import NbOpenAIError
from .._core._retry import retry_policy
from ._batch import submit
from ._cache import AnswerWriter
from ._prepared import ExtractOptions, Prepared, prepare
from ._progress import choose_view
from ._rows import RowResult
from ._runner import InputEstimate, LedgerBuffer, Request, Runner, Tally, drive

if TYPE_CHECKING:
    from .._session import Session

__all__ = ["ExtractPlan", "extract"]

_MAX_TICKS_PER_S = 10.0


def _use_cache(session: Session, prepared: Prepared) -> int:
    """Fill rows whose answer is cached; returns how many."""
    todo = prepared.todo
    found = session.extract_store.get_many([prepared.keys[i] for i in todo])
    hits = 0
    for position in todo:
        entry = found.get(prepared.keys[position])
        if entry is None:
            continue
        text, response_id = entry
        try:
            value = prepared.fmt.parse(text)
        except ValueError:  # ValidationError: the model's validators changed since; ask again
            continue
        prepared.results[position] = RowResult(
            status="ok", value=value, text=text, response_id=response_id, from_cache=True
        )
        hits += 1
    return hits



def _estimate_input_tokens(prepared: Prepared, positions: list[int]) -> int:
    estimate = InputEstimate(prepared.params, prepared.model)
    return sum(estimate(prepared.inputs.texts[i] or "") for i in positions)


@dataclass(frozen=True)
class ExtractPlan:
    """What an extraction would send (``dry_run=True``); nothing was sent."""

    schema: str
    model: str
    rows: int
    to_send: int
    cached: int
    reused: int
    missing: int
    estimated_input_tokens: int
    fixes: tuple[str, ...]
    request: dict[str, Any] | None

    def _summary(self) -> str:
        return (
            f"{self.schema} with {self.model}: {self.rows:,} rows, {self.to_send:,} to send "
            f"({self.cached:,} cached, {self.reused:,} kept from the earlier frame, {self.missing:,} missing), "
            f"~{self.estimated_input_tokens:,} input tokens"
        )

    def __repr__(self) -> str:
        fixes = "".join(f"\n  fix: {fix}" for fix in self.fixes)
        request = json.dumps(self.request, indent=2, ensure_ascii=False) if self.request else "(nothing to send)"
        return f"dry run: {self._summary()}{fixes}\nfirst request:\n{request}"

    def _repr_markdown_(self) -> str:
        fixes = "".join(f"\n- fix: {fix}" for fix in self.fixes)
        request = json.dumps(self.request, indent=2, ensure_ascii=False) if self.request else "(nothing to send)"
        return f"**dry run** — {self._summary()}{fixes}\n\nFirst request:\n\n```json\n{request}\n```"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/plain": repr(self), "text/markdown": self._repr_markdown_()}


def _dry_run(prepared: Prepared, cached: int) -> ExtractPlan:
    todo = prepared.todo
    reused = len(prepared.reused[1]) if prepared.reused else 0
    first = {**prepared.params, "input": prepared.inputs.texts[todo[0]]} if todo else None
    return ExtractPlan(
        schema=prepared.fmt.model.__name__,
        model=prepared.model,
        rows=len(prepared.results),
        to_send=len(todo),
        cached=cached,
        reused=reused,
        missing=sum(1 for t in prepared.inputs.texts if t is None),
        estimated_input_tokens=_estimate_input_tokens(prepared, todo),
        fixes=tuple(str(f) for f in prepared.fmt.fixes),
        request=first,
    )


@dataclass
class LiveRun:
    """How a live run ended: interrupted (the stop button), or stopped by ``error`` (fail fast, an outage)."""

    interrupted: bool = False
    error: NbOpenAIError | None = None


def _run_live(session: Session, prepared: Prepared, tally: Tally) -> LiveRun:
    """Run the pending rows. Finished rows are final whatever happens; rows not run stay ``pending``."""
    options, settings = prepared.options, session.settings
    session.async_client  # noqa: B018 - built now: a missing key is a ConfigurationError before any progress shows
    concurrency = options.concurrency or settings.concurrency
    retry = retry_policy(settings, attempts=options.max_attempts)
    request = Request(prepared.params, prepared.model, options.validation_retries, retry)
    ledger = LedgerBuffer(session)
    answers = None
    if options.cache:  # answers reach the cache as they arrive: a kernel that dies keeps what finished
        answers = AnswerWriter(session.extract_store, prepared.keys, prepared.model, prepared.fmt.model.__name__)
    pacer = session.pacer.with_limits(options.rpm, options.tpm) if options.pace else None
    runner = Runner(
        session,
        prepared.fmt,
        request,
        prepared.inputs.texts,
        prepared.results,
        tally,
        ledger,
        concurrency,
        on_row_done=answers.add if answers else None,
        pacer=pacer,
    )
    tally.limit = concurrency
    view = choose_view(options.progress)
    interval = 1.0 / min(settings.update_rate, _MAX_TICKS_PER_S)

    def save(*, due_only: bool) -> None:
        if answers is None:
            ledger.flush()
        else:
            answers.flush(ledger_first=ledger.flush, due_only=due_only)

    def tick() -> None:
        save(due_only=True)
        view.update(tally.snapshot())

    ended = LiveRun()
    try:
        drive(session, runner.run(prepared.todo), tick, interval)
    except KeyboardInterrupt:
        ended.interrupted = True
    finally:
        save(due_only=False)
        try:
            view.close(tally.snapshot(finished=True))
        except KeyboardInterrupt:  # a callback that stops at the end: everything has ended anyway
            pass
    ended.error = runner.stop_error
    return ended


def _mark_not_sent(prepared: Prepared, error: NbOpenAIError) -> None:
    """Rows a stopped run did not finish end ``cancelled``, saying why; the error says how many rows are kept."""
    reason = f"not sent: the run stopped ({error.message.split(':')[0]})"
    unfinished = 0
    for result in prepared.results:
        if result.status == "pending":
            result.status, result.error = "cancelled", reason
            unfinished += 1
    kept = sum(1 for result in prepared.results if result.status == "ok")
    if unfinished:
        error.message += (
            f" {kept:,} rows kept, {unfinished:,} not run: re-run with --retry-failed "
            "(retry_failed=True) to finish them."
        )
    error.args = (error.message,)


def _tally_for(prepared: Prepared, cached: int, label: str = "extract") -> Tally:
    tally = Tally(total=len(prepared.results), label=label)
    for result in prepared.results:
        if result.status != "pending":
            tally.finish(result)
    tally.cached = cached + (len(prepared.reused[1]) if prepared.reused else 0)
    tally.done_before = tally.done
    return tally


def extract(session: Session, schema: Any, texts: Any, /, **options: Any) -> Any:
    """Extract ``schema`` (a Pydantic class) from each text; returns a DataFrame aligned to the input.

    Parameters
    ----------
    session
        The session whose client, loop, ledger and cache are used.
    schema
        A Pydantic model class (``RootModel`` too). Checked against the strict-schema rules first:
        ``SchemaError`` names every field that cannot be sent, before anything is spent.
    texts
        One text, a list or dict of texts, a pandas Series, or a one-column DataFrame.
    **options
        See ``ExtractOptions``: ``instructions``, ``many``, ``model``, ``concurrency``,
        ``max_attempts``, ``validation_retries``, ``cache``, ``retry_failed``, ``progress``,
        ``batch``, ``wait``, ``dry_run``, ``temperature``, ``max_output_tokens``, ``reasoning``.

    Returns
    -------
    pandas.DataFrame
        One row per input (``many``: per item, indexed (source, item)), the model's fields as
        columns (nested ones dotted), and ``_status``, ``_error``, ``_attempts``, token, cost,
        ``_response_id``, ``_latency_s`` and ``_from_cache`` columns; ``df.attrs`` holds the
        provenance and totals. Interrupted (the stop button), it is the partial frame with
        ``attrs["interrupted"] = True`` and unfinished rows ``cancelled``.

    Raises
    ------
    NbOpenAIError
        When an answer shows that no row can succeed (``AuthenticationError`` for a refused key,
        ``BadRequestError`` for an unknown model, ``ConnectionError`` for a closed port,
        ``UnexpectedResponse``, ``RateLimitError`` asking for a wait longer than
        ``Settings.max_retry_wait``) or the service stays down (``APIUnavailable``): the run stops
        at once. The error's ``partial`` attribute is the frame of the rows that did finish
        (the others ``cancelled``), so ``retry_failed=error.partial`` (or ``True``) finishes
        them. ``dry_run`` returns an
        ``ExtractPlan``; ``batch`` with ``wait=False`` a ``BatchJob``.

    Examples
    --------
    >>> class Person(pydantic.BaseModel):          # doctest: +SKIP
    ...     name: str
    ...     age: int | None
    >>> df = extract(session, Person, ["Ada, 36.", "Alan Turing was 41."])  # doctest: +SKIP
    """
    opts = ExtractOptions.from_kwargs(options)
    session.follow_environment()  # a key fixed in the running kernel is used from here on
    prepared = prepare(session, schema, texts, opts)
    cached = _use_cache(session, prepared) if opts.cache else 0
    if opts.dry_run:
        return _dry_run(prepared, cached)
    todo = prepared.todo
    settings = session.settings
    if todo and (settings.budget_usd is not None or settings.budget_tokens is not None):
        session.check_budget(prepared.model, _estimate_input_tokens(prepared, todo))
    if opts.batch:
        return submit(session, prepared, cached=cached)
    tally = _tally_for(prepared, cached)
    if todo:
        ended = _run_live(session, prepared, tally)
    else:  # nothing to send: the summary line still says where the rows came from
        choose_view(opts.progress).close(tally.snapshot(finished=True))
        ended = LiveRun()
    if ended.error is not None:
        _mark_not_sent(prepared, ended.error)
    frame = prepared.frame(
        prepared.attrs(
            session, tally.totals(), interrupted=ended.interrupted, stopped=ended.error.message if ended.error else None
        )
    )
    if ended.error is not None:
        ended.error.partial = frame  # type: ignore[attr-defined]  # the rows that finished, for the caller to keep
        raise ended.error
    return frame
