"""Structured extraction: Pydantic results as DataFrames, from one text or a whole column.

``extract(session, Model, texts, **options)`` is the whole API (``nbopenai.extract`` without the
session); the pieces, each usable alone:

- ``_format`` (with ``_core._strict``): the strict schema, linted and fixed once, before anything is sent;
- ``_inputs``: a text, a list, a dict or a Series to texts plus the index the frame keeps;
- ``_prepared``: the options, schema, inputs and row keys of one extraction, before anything is sent;
- ``_runner``: the bounded, adaptive, retrying async runner on the session's loop;
- ``_rows``: one row's outcome, and how a response becomes one (``ok``, ``refusal``, ...);
- ``_frame``: results to a DataFrame with typed, flattened columns;
- ``_cache``: validated answers by content address, and batch records;
- ``_batch``: the Batch API path (JSONL out, JSONL back, same frame);
- ``_snapshot``, ``_progress``: a run's counts, the text bar and the choice of view (the widget lives in
  ``nbopenai.widgets``).
"""

from .._core._strict import Finding, LintReport, lint_schema
from ._api import ExtractPlan, extract
from ._batch import BatchJob, batch_jobs, collect_batch
from ._format import StrictFormat, strict_format
from ._prepared import ExtractOptions
from ._snapshot import Snapshot

__all__ = [
    "BatchJob",
    "ExtractOptions",
    "ExtractPlan",
    "Finding",
    "LintReport",
    "Snapshot",
    "StrictFormat",
    "batch_jobs",
    "collect_batch",
    "extract",
    "lint_schema",
    "strict_format",
]
