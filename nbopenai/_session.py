"""``Session``: the object that owns a client pair, the threads, the ledger and the event loop.

Nothing in nbopenai keeps state at module level; everything a kernel remembers lives here. The
IPython extension holds one session; scripts make their own (``nbopenai.Session()``) or use the
*current* one that ``nbopenai.ask`` falls back to.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

from . import _ask
from ._answer import Answer, Usage
from ._conversation import ThreadStore
from ._loop import LoopThread
from ._retry import RetryPolicy
from ._settings import LOCAL_MODEL, Settings

if TYPE_CHECKING:
    import openai

    from ._jobs import Job
    from ._usage import Ledger, UsageRecord
    from ._prices import PriceTable

__all__ = ["Session", "current_session", "use_session"]

# Settings whose change needs new clients (the pool is rebuilt; threads and ledger stay).
_NETWORK_FIELDS = frozenset({"api_key", "base_url", "organization", "project", "timeouts", "concurrency"})


class Session:
    """A conversation context: one client pair, named threads, a usage ledger.

    Parameters
    ----------
    settings
        A ``Settings``; by default ``Settings.from_env()`` (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``).
    local
        Start the offline demo server (``nbopenai.local``) and point this session at it.
    **overrides
        Any ``Settings`` field, e.g. ``model="gpt-4.1"``, ``store=False``, ``ledger_path=":memory:"``.

    Examples
    --------
    >>> s = Session(local=True, ledger_path=":memory:")
    >>> s.ask("My name is Ada.").text  # doctest: +SKIP
    >>> s.ask("What is my name?").text  # doctest: +SKIP
    """

    def __init__(self, settings: Settings | None = None, *, local: bool = False, **overrides: Any) -> None:
        base = settings or Settings.from_env()
        self.settings = base.replace(**overrides) if overrides else base
        self.session_id = uuid.uuid4().hex[:12]
        self.threads = ThreadStore(store=self.settings.store)
        self.loop = LoopThread(name=f"nbopenai-{self.session_id}")
        self.local_server = None
        self._clients_lock = threading.Lock()
        self._client: openai.OpenAI | None = None
        self._async_client: openai.AsyncOpenAI | None = None
        self.jobs: list[Job] = []
        if local:
            self.use_local(model=overrides.get("model"))

    # ---- configuration -------------------------------------------------------------------

    def configure(self, **changes: Any) -> Settings:
        """Change settings; clients are rebuilt only when a network setting changed."""
        new = self.settings.replace(**changes)
        if any(getattr(new, f) != getattr(self.settings, f) for f in _NETWORK_FIELDS):
            self._drop_clients()
        if new.ledger_path != self.settings.ledger_path:
            self.__dict__.pop("ledger", None)
        if new.prices_path != self.settings.prices_path:
            self.__dict__.pop("prices", None)
        self.settings = new
        return new

    def use_local(self, *, model: str | None = None, **server_config: Any) -> str:
        """Start the offline demo server (once) and point the session at it; returns its base URL."""
        from .local import start

        if self.local_server is None:
            self.local_server = start(**server_config)
        self.configure(base_url=self.local_server.base_url, api_key=None, model=model or LOCAL_MODEL)
        return self.local_server.base_url

    @property
    def retry(self) -> RetryPolicy:
        s = self.settings
        return RetryPolicy(attempts=s.max_attempts, base=s.backoff_base, cap=s.backoff_max)

    # ---- clients: built once, reused (one connection pool each) ---------------------------

    @property
    def client(self) -> "openai.OpenAI":
        with self._clients_lock:
            if self._client is None:
                from ._client import build_sync_client

                self._client = build_sync_client(self.settings)
            return self._client

    @property
    def async_client(self) -> "openai.AsyncOpenAI":
        """The async client; use it only on ``self.loop``."""
        with self._clients_lock:
            if self._async_client is None:
                from ._client import build_async_client

                self._async_client = build_async_client(self.settings)
            return self._async_client

    def _drop_clients(self) -> None:
        with self._clients_lock:
            old, self._client = self._client, None
            old_async, self._async_client = self._async_client, None
        if old is not None:
            old.close()
        if old_async is not None and self.loop._loop is not None:
            self.loop.submit(old_async.close())

    # ---- ledger, prices, budget -----------------------------------------------------------

    @cached_property
    def ledger(self) -> "Ledger":
        from ._usage import Ledger

        return Ledger(self.settings.resolved_ledger_path)

    @cached_property
    def prices(self) -> "PriceTable":
        from ._prices import PriceTable

        return PriceTable.load(self.settings.prices_path)

    def record(
        self,
        *,
        kind: str,
        model: str,
        status: str,
        usage: Usage | None = None,
        latency_s: float | None = None,
        **fields: Any,
    ) -> "UsageRecord":
        """Write one ledger row for one API call (cost from the price table, never guessed)."""
        from ._usage import UsageRecord

        usage = usage or Usage()
        cost = self.prices.cost(model, usage.input, usage.cached, usage.output)
        record = UsageRecord(
            time=time.time() - (latency_s or 0.0),
            session_id=self.session_id,
            kind=kind,
            model=model,
            status=status,
            input_tokens=usage.input,
            cached_tokens=usage.cached,
            output_tokens=usage.output,
            reasoning_tokens=usage.reasoning,
            total_tokens=usage.total,
            latency_s=latency_s,
            cost_usd=cost,
            **fields,
        )
        self.ledger.record(record)
        return record

    def check_budget(self, model: str, estimated_input_tokens: int) -> None:
        """Refuse (``BudgetExceeded``) a call that would pass the session's cap."""
        s = self.settings
        if s.budget_usd is None and s.budget_tokens is None:
            return
        from ._budget import Budget

        Budget(usd=s.budget_usd, tokens=s.budget_tokens).check(
            self.ledger.totals(session_id=self.session_id),
            model=model,
            estimated_input_tokens=estimated_input_tokens,
            prices=self.prices,
        )

    def usage(self, *, all_sessions: bool = False, **filters: Any):
        """This session's ledger rows as a DataFrame (``all_sessions=True`` for every kernel's)."""
        if not all_sessions:
            filters.setdefault("session_id", self.session_id)
        return self.ledger.to_dataframe(**filters)

    # ---- asking ---------------------------------------------------------------------------

    def prepare(self, prompt: str, **options: Any) -> "_ask.PreparedAsk":
        """The exact request ``ask`` would send (for ``--dry-run``); sends nothing."""
        return _ask.prepare(self, prompt, _ask.AskOptions(**options))

    def ask(self, prompt: str, *, sink: "_ask.AskSink | None" = None, **options: Any) -> Answer:
        """Ask in a thread and return the ``Answer`` (see ``AskOptions`` for the options).

        With no ``sink``, text streams to stdout when ``echo=True`` (default off).
        """
        echo = options.pop("echo", False)
        prepared = self.prepare(prompt, **options)
        if sink is None and echo:
            from ._printer import StdoutSink

            sink = StdoutSink()
        return _ask.run(self, prepared, sink)

    def submit(self, prompt: str, *, on_done=None, **options: Any) -> "Job":
        """Ask in the background (``background=true``); returns a ``Job`` at once.

        The session's loop polls it; ``on_done(job)`` is called (from that loop's thread) when it ends.
        """
        from ._jobs import submit

        return submit(self, self.prepare(prompt, **options), on_done)

    def history(self, thread: str = "default"):
        """The thread's turns as a DataFrame (turn, cell, prompt, answer, response id, tokens)."""
        import pandas as pd

        return pd.DataFrame(self.threads.history_rows(thread))

    def reset(self, thread: str | None = None) -> None:
        """Forget one thread (or all); the server keeps what it stored."""
        self.threads.reset(thread)

    # ---- life cycle -----------------------------------------------------------------------

    def close(self) -> None:
        self._drop_clients()
        self.loop.close()
        if self.local_server is not None:
            self.local_server.stop()
            self.local_server = None
        if "ledger" in self.__dict__:
            self.ledger.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        s = self.settings
        key = s.api_key.masked if s.api_key else "none"
        return f"<nbopenai.Session {self.session_id} model={s.model!r} base_url={s.base_url!r} key={key}>"


class _Current:
    """The session that module-level helpers (``nbopenai.ask``) use; set by the IPython extension."""

    def __init__(self) -> None:
        self._session: Session | None = None
        self._lock = threading.Lock()

    def get(self) -> Session:
        with self._lock:
            if self._session is None:
                self._session = Session()
            return self._session

    def set(self, session: Session | None) -> None:
        with self._lock:
            self._session = session


# The one piece of module state: a pointer to the current session, like matplotlib's current
# figure, so `nbopenai.ask(...)` works without passing a session around.
_current = _Current()


def current_session() -> Session:
    """The session ``nbopenai.ask``/``extract``/``usage`` use (created from the environment on first use)."""
    return _current.get()


def use_session(session: Session | None) -> None:
    """Make ``session`` the current one (the IPython extension does this on load)."""
    _current.set(session)
