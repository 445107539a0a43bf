"""``extract``: validate the model once, reuse what is known, run the rest, return a frame that lines up.

The steps, in order, all before the first request: the options are checked, the strict schema is
built and linted (``SchemaError`` if it cannot be sent), the inputs are normalised, rows already
answered are taken from a previous frame (``retry_failed``) or the cache, and the budget is
checked. Then the remaining rows run live (``_runner``) or through the Batch API (``_batch``), and
the results become one DataFrame (``_frame``).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from .._core._errors import NbOpenAIError, UsageError
from .._core._request import RequestOptions, request_params
from .._core._retry import retry_policy
from ._batch import submit
from ._cache import AnswerWriter, cache_key, request_scope
from ._format import StrictFormat, strict_format
from ._frame import Column, build_frame, columns_for, source_positions, splice
from ._inputs import Inputs, as_inputs
from ._progress import choose_view
from ._rows import RowResult
from ._runner import InputEstimate, LedgerBuffer, Request, Runner, Tally, drive

if TYPE_CHECKING:
    import pandas

    from .._session import Session

__all__ = ["ExtractOptions", "ExtractPlan", "Prepared", "extract", "prepare", "DEFAULT_INSTRUCTIONS"]

DEFAULT_INSTRUCTIONS = (
    "Extract the requested information from the user's text into the given JSON schema. "
    "Use only what the text says; use null where the schema allows it and the text is silent."
)
DEFAULT_MANY_INSTRUCTIONS = (
    "Extract every item of the requested kind that the user's text mentions, in order, into the given "
    "JSON schema (an empty list when there is none). Use only what the text says; use null where the "
    "schema allows it and the text is silent."
)
_MAX_TICKS_PER_S = 10.0
_MISSING = "no text: the input value is missing"


@dataclass(frozen=True)
class ExtractOptions(RequestOptions):
    """Options of one extraction (``None`` means "the session's setting"), each checked by its rule.

    Parameters
    ----------
    instructions
        What to do with each text; default: extract the schema's fields from it.
    many
        Each text holds a list of objects: one frame row per object, indexed (source, item).
    model
        The LLM to ask (not the Pydantic class); default the session's model.
    concurrency
        Requests in flight at most (halved while 429s arrive); default the session's.
    max_attempts
        Attempts per request on 429, 5xx, timeouts and connection errors; default the session's.
    validation_retries
        Re-asks of an answer that fails Pydantic validation, with the error shown to the model.
    cache
        Reuse validated answers of earlier runs for the same (model, schema, instructions, text).
    retry_failed
        A frame from an earlier run: its ``ok`` rows are kept, the others run again. ``True``: the
        cache decides (every row without a cached ``ok`` answer runs).
    progress
        ``True`` (widget in Jupyter, text elsewhere), ``False``, or a callable taking a ``Snapshot``.
    batch
        Send the rows through the Batch API (half price, results within 24 h).
    wait
        With ``batch``: block with progress until the batch ends (default) or return a ``BatchJob``.
    dry_run
        Send nothing; return an ``ExtractPlan`` showing the schema, the first request and counts.
    temperature, top_p, max_output_tokens, reasoning, verbosity
        Passed on to every request (``RequestOptions``).
    rpm, tpm
        Requests and tokens per minute the account allows; default the session's (``Settings.rpm``/
        ``tpm``), else learned from the answers' ``x-ratelimit-*`` headers. Rows are paced to them.
    pace
        ``False``: send as fast as ``concurrency`` allows and let 429s slow the run (for comparison).
    """

    many: bool = False
    concurrency: int | None = None
    max_attempts: int | None = None
    validation_retries: int = 1
    cache: bool = True
    retry_failed: Any = None
    progress: Any = True
    batch: bool = False
    wait: bool = True
    dry_run: bool = False
    rpm: int | None = None
    tpm: int | None = None
    pace: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.retry_failed is True and not self.cache:
            raise UsageError("retry_failed=True relies on the cache; pass the earlier frame instead, or keep cache on")

    @classmethod
    def from_kwargs(cls, options: dict[str, Any]) -> ExtractOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise UsageError(f"unknown extract option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**options)


@dataclass
class Prepared:
    """An extraction ready to run: format, columns, inputs, row keys, the shared request."""

    fmt: StrictFormat
    columns: tuple[Column, ...]
    inputs: Inputs
    keys: list[str]
    model: str
    instructions: str
    params: dict[str, Any]
    options: ExtractOptions
    results: list[RowResult] = field(default_factory=list)
    reused: Any = None  # the earlier frame whose ok rows are kept

    @classmethod
    def build(
        cls, fmt: StrictFormat, inputs: Inputs, keys: list[str], model: str, instructions: str, params: dict[str, Any],
        options: ExtractOptions,
    ) -> Prepared:
        """An extraction of ``inputs`` sending ``params`` (see ``_params``), its columns from ``fmt``; rows pending."""
        prepared = cls(fmt, columns_for(fmt), inputs, keys, model, instructions, params, options)
        prepared.results = [RowResult() for _ in range(len(inputs))]
        return prepared

    def record(self) -> dict[str, Any]:
        """What ``from_record`` needs to rebuild this extraction in another kernel (JSON-safe)."""
        return {
            "model": self.model,
            "schema": self.fmt.model.__name__,
            "schema_hash": self.fmt.schema_hash,
            "many": self.fmt.many,
            "instructions": self.instructions,
            "rows": len(self.results),
            "index": _index_record(self.inputs.index),
            "keys": self.keys,
            "missing": [i for i, t in enumerate(self.inputs.texts) if t is None],
            "cached": [i for i, r in enumerate(self.results) if r.status == "ok"],
            "cache": self.options.cache,
        }

    @classmethod
    def from_record(cls, session: Session, fmt: StrictFormat, record: dict[str, Any], **options: Any) -> Prepared:
        """The extraction ``record()`` described (texts are not kept: rows are pending, missing ones ``error``).

        ``options`` are further ``ExtractOptions`` (``progress``, ``wait``).
        """
        rows = record["rows"]
        kept = ExtractOptions(model=record["model"], instructions=record["instructions"], many=record["many"],
                              cache=record.get("cache", True), **options)
        inputs = Inputs([None] * rows, _index_from(record["index"], rows))
        model, instructions = record["model"], record["instructions"]
        params = _params(session, fmt, model, instructions, kept)
        prepared = cls.build(fmt, inputs, record["keys"], model, instructions, params, kept)
        for position in record.get("missing", []):
            prepared.results[position] = RowResult(status="error", error=_MISSING)
        return prepared

    def save_answers(self, session: Session) -> None:
        """Cache the answers this run validated (not those it took from the cache)."""
        rows = [
            (self.keys[i], r.text, r.response_id)
            for i, r in enumerate(self.results)
            if r.status == "ok" and not r.from_cache and r.text is not None
        ]
        if rows:
            session.extract_store.put_many(rows, model=self.model, schema=self.fmt.model.__name__)

    @property
    def todo(self) -> list[int]:
        return [i for i, r in enumerate(self.results) if r.status == "pending"]

    def attrs(
        self, session: Session, totals: dict[str, Any], *, interrupted: bool = False, **more: Any
    ) -> dict[str, Any]:
        return {
            "model": self.model,
            "schema": self.fmt.model.__name__,
            "schema_hash": self.fmt.schema_hash,
            "instructions": self.instructions,
            "many": self.fmt.many,
            "fixes": [str(f) for f in self.fmt.fixes],
            "totals": totals,
            "interrupted": interrupted,
            "session_id": session.session_id,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            **more,
        }

    def frame(self, attrs: dict[str, Any]) -> pandas.DataFrame:
        frame = build_frame(self.fmt, self.columns, self.results, self.inputs.index, attrs)
        if self.reused is not None:
            previous, keep = self.reused
            frame = splice(
                frame, source_positions(frame, self.fmt.many), previous, source_positions(previous, self.fmt.many), keep
            )
        return frame


def _params(
    session: Session, fmt: StrictFormat, model: str, instructions: str, options: ExtractOptions
) -> dict[str, Any]:
    """The shared request of every row: the session's settings, these options, the schema."""
    overrides = {**options.overrides(), "model": model, "instructions": instructions}
    params = request_params(session.settings, overrides)
    params.setdefault("text", {})["format"] = fmt.text_format
    return params


def _index_record(index: pandas.Index) -> dict[str, Any] | None:
    labels = index.tolist()
    simple = (str, int, float, bool, type(None))
    flat = [item for label in labels for item in (label if isinstance(label, tuple) else (label,))]
    if not all(isinstance(item, simple) for item in flat):
        return None  # timestamps and other objects: the collected frame gets 0..n-1
    labelled = [list(label) if isinstance(label, tuple) else label for label in labels]
    return {"labels": labelled, "names": list(index.names)}


def _index_from(record: dict[str, Any] | None, rows: int) -> pandas.Index:
    import pandas as pd  # noqa: PLC0415 - pandas loads when a frame is made

    if record is None:
        return pd.RangeIndex(rows)
    names = record["names"]
    if len(names) > 1:
        return pd.MultiIndex.from_tuples([tuple(label) for label in record["labels"]], names=names)
    return pd.Index(record["labels"], name=names[0])


def _reuse_previous(prepared: Prepared, previous: Any) -> None:
    """Mark the rows an earlier frame answered ``ok`` as done; they are spliced back in at the end."""
    import numpy as np  # noqa: PLC0415 - pandas loads when a frame is made
    import pandas as pd  # noqa: PLC0415 - pandas loads when a frame is made

    if not isinstance(previous, pd.DataFrame) or "_status" not in previous.columns:
        raise UsageError("retry_failed takes a frame returned by an earlier extract (or True to use the cache)")
    fmt = prepared.fmt
    if previous.attrs.get("schema_hash") != fmt.schema_hash or bool(previous.attrs.get("many")) != fmt.many:
        raise UsageError(
            "retry_failed: that frame was extracted with another schema (or --many setting); run without it"
        )
    positions = source_positions(previous, fmt.many)
    sources = int(positions.max()) + 1 if len(positions) else 0
    if sources != len(prepared.inputs):
        raise UsageError(f"retry_failed: that frame has {sources} input rows, these inputs have {len(prepared.inputs)}")
    ok = previous["_status"].to_numpy() == "ok"
    keep = set(np.unique(positions[ok]).tolist())
    for position in keep:
        prepared.results[position] = RowResult(status="ok", from_cache=True)
    prepared.reused = (previous, keep)


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


def prepare(session: Session, schema: Any, texts: Any, options: ExtractOptions) -> Prepared:
    """Everything up to the first request; raises ``SchemaError``/``UsageError`` before spending."""
    fmt = strict_format(schema, many=options.many)
    inputs = as_inputs(texts)
    model = options.model or session.settings.model
    instructions = options.instructions or (DEFAULT_MANY_INSTRUCTIONS if options.many else DEFAULT_INSTRUCTIONS)
    params = _params(session, fmt, model, instructions, options)
    scope = request_scope(session.settings, params)
    keys = [cache_key(scope, text) if text is not None else "" for text in inputs.texts]
    prepared = Prepared.build(fmt, inputs, keys, model, instructions, params, options)
    for position, text in enumerate(inputs.texts):
        if text is None:
            prepared.results[position] = RowResult(status="error", error=_MISSING)
    if options.retry_failed is not None and options.retry_failed is not True and options.retry_failed is not False:
        _reuse_previous(prepared, options.retry_failed)
    return prepared


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
