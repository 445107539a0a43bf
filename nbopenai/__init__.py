"""nbopenai: the OpenAI Responses API as a first-class citizen of Jupyter.

In a notebook::

    %load_ext nbopenai
    %%ask
    What is a p-value, in one paragraph?

From Python (no IPython needed)::

    import nbopenai
    session = nbopenai.Session(local=True)      # offline demo server; or Session() with OPENAI_API_KEY
    print(session.ask("My name is Ada.").text)

Importing this package loads neither IPython, ipywidgets nor pandas.
"""

from __future__ import annotations

from typing import Any

from ._core._errors import (
    APIError,
    APIUnavailable,
    AuthenticationError,
    BadRequestError,
    BudgetExceeded,
    ConfigurationError,
    ConnectionError,
    ContextLengthExceeded,
    NbOpenAIError,
    PreviousResponseNotFound,
    RateLimitError,
    SchemaError,
    ServerError,
    StreamError,
    TimeoutError,
    UnexpectedResponse,
    UnreadableAnswer,
    UsageError,
)
from ._core._settings import Secret, Settings, Timeouts
from ._core._tokens import count_tokens
from ._session import Session, current_session, use_session
from ._turns._answer import Answer, Usage
from ._turns._provenance import read_provenance as _read_provenance
from ._turns._tool_ledger import tool
from ._version import __version__

__all__ = [
    "APIError",
    "APIUnavailable",
    "Answer",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceeded",
    "ConfigurationError",
    "ConnectionError",
    "ContextLengthExceeded",
    "NbOpenAIError",
    "PreviousResponseNotFound",
    "RateLimitError",
    "SchemaError",
    "Secret",
    "ServerError",
    "Session",
    "Settings",
    "StreamError",
    "TimeoutError",
    "Timeouts",
    "UnexpectedResponse",
    "UnreadableAnswer",
    "Usage",
    "UsageError",
    "__version__",
    "ask",
    "batch_jobs",
    "collect_batch",
    "count_tokens",
    "current_session",
    "extract",
    "load_ipython_extension",
    "provenance",
    "tool",
    "unload_ipython_extension",
    "usage",
    "use_session",
]


def ask(prompt: str, *, session: Session | None = None, **options: Any) -> Answer:
    """Ask ``prompt`` in the current session (see ``Session.ask`` for options)."""
    return (session or current_session()).ask(prompt, **options)


def extract(schema: Any, texts: Any, /, *, session: Session | None = None, **options: Any):
    """Extract ``schema`` (a Pydantic class) from one text or many; returns a DataFrame.

    One row per input, aligned to its index, with ``_status``/``_error``/token/cost columns.
    Options: ``instructions``, ``many``, ``model``, ``concurrency``, ``max_attempts``,
    ``validation_retries``, ``cache``, ``retry_failed``, ``progress``, ``batch``, ``wait``, ``dry_run``,
    ``rpm``, ``tpm``, ``pace`` and the request settings ``temperature``, ``top_p``, ``max_output_tokens``,
    ``reasoning``, ``verbosity`` (see ``ExtractOptions``; each checked as the session's setting is).
    """
    from ._extract import extract as _extract  # noqa: PLC0415 - extraction (pydantic, SQLite, the SDK) loads when used

    return _extract(session or current_session(), schema, texts, **options)


def collect_batch(job_id: str, schema: Any, *, session: Session | None = None, **options: Any):
    """Finish (or collect after a kernel restart) the batch extraction ``job_id``; returns its frame."""
    from ._extract import collect_batch as _collect  # noqa: PLC0415 - extraction (pydantic, SQLite, the SDK) loads when used

    return _collect(session or current_session(), job_id, schema, **options)


def batch_jobs(*, session: Session | None = None):
    """The batch extractions this data folder knows of (ids, status, parts)."""
    from ._extract import batch_jobs as _jobs  # noqa: PLC0415 - extraction (pydantic, SQLite, the SDK) loads when used

    return _jobs(session or current_session())


def usage(*, session: Session | None = None, all_sessions: bool = False, **filters: Any):
    """The usage ledger as a DataFrame (this session unless ``all_sessions=True``)."""
    return (session or current_session()).usage(all_sessions=all_sessions, **filters)


def provenance(path: Any):
    """Where each answer in a saved notebook came from, as a DataFrame (one row per answer).

    Columns: cell, cell_id, execution_count, response_id, model, thread, turn, status, token counts,
    cost_usd, latency_s, answered_at (UTC), replayed and the nbopenai version that answered.
    """

    return _read_provenance(path)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext nbopenai``: register ``%%ask``, ``%ask``, ``%%extract`` and ``%nbopenai``."""
    from .ipython import load_ipython_extension as _load  # noqa: PLC0415 - the IPython edge loads with %load_ext

    _load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from .ipython import unload_ipython_extension as _unload  # noqa: PLC0415 - the IPython edge loads with %load_ext

    _unload(ipython)
