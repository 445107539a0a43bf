"""An extraction ready to run: the options checked, the strict schema built, the inputs normalised,
the row keys computed, the rows an earlier frame answered marked done; nothing sent yet.

``Prepared`` is what both paths run: the live runner (``_api``) and the Batch API (``_batch``, which
also rebuilds it from a saved job record in another kernel).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from .._core._errors import UsageError
from .._core._request import RequestOptions, request_params
from ._cache import cache_key, request_scope
from ._format import StrictFormat, strict_format
from ._frame import Column, build_frame, columns_for, source_positions, splice
from ._inputs import Inputs, as_inputs
from ._rows import RowResult

if TYPE_CHECKING:
    import pandas

    from .._session import Session

__all__ = ["ExtractOptions", "Prepared", "prepare", "DEFAULT_INSTRUCTIONS", "DEFAULT_MANY_INSTRUCTIONS"]

DEFAULT_INSTRUCTIONS = (
    "Extract the requested information from the user's text into the given JSON schema. "
    "Use only what the text says; use null where the schema allows it and the text is silent."
)
DEFAULT_MANY_INSTRUCTIONS = (
    "Extract every item of the requested kind that the user's text mentions, in order, into the given "
    "JSON schema (an empty list when there is none). Use only what the text says; use null where the "
    "schema allows it and the text is silent."
)
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
