"""``Session``: the object that owns a client pair, the threads, the ledger and the event loop.

Nothing in nbopenai keeps state at module level; everything a kernel remembers lives here. The
IPython extension holds one session; scripts make their own (``nbopenai.Session()``) and call
``session.ask``, or use the *current* one that ``nbopenai.ask`` falls back to (see ``_Current``).

The session is a facade: it owns the pieces and wires them (``services()``); the turns themselves
(``_turns``) get a ``TurnServices`` (settings, threads, ledger writer, retry policy, clients), never
the session, so no turn module imports this one.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import itertools
import os
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable
from functools import cached_property
from typing import TYPE_CHECKING, Any

from ._core._breaker import CircuitBreaker
from ._core._errors import UsageError, translate
from ._core._loop import LoopThread
from ._core._pacing import Pacer
from ._core._request import request_params
from ._core._retry import RetryPolicy, retry_policy
from ._core._settings import ENVIRONMENT, LOCAL_MODEL, EnvironmentWatch, Settings, shown_url
from ._core._tokens import encoding_for_model, vocabulary_package
from ._ledger._budget import Budget
from ._ledger._prices import PriceTable
from ._ledger._writer import LedgerWriter
from ._turns import _ask
from ._turns._answer import Answer
from ._turns._compact import Compaction, compact
from ._turns._conversation import ThreadStore
from ._turns._images import image_parts
from ._turns._jobs import Job, submit
from ._turns._printer import StdoutSink
from ._turns._recorder import AskSink, TurnServices
from ._turns._window import ContextWindows

if TYPE_CHECKING:
    import openai

    from ._extract._cache import ExtractStore
    from ._ledger._usage import Ledger, UsageRecord
    from ._turns._replay_store import ReplayStore
    from ._turns._tool_ledger import ToolLedger

__all__ = ["Session", "current_session", "use_session"]

# Modules the first ask imports besides the client's: the tool loop (pydantic), the ledger, and the SDK's
# streaming helpers (imported by its first streamed response; a name this SDK lacks is skipped).
_WARM_MODULES = ("nbopenai._turns._tools", "nbopenai._ledger._usage", "openai.lib.streaming.responses", "tiktoken")
# The stores kept next to the ledger (cached properties): reopened where it moves, closed with the session.
_BESIDE_THE_LEDGER = ("ledger", "extract_store", "tool_ledger", "replay_store")
# Settings whose change needs new clients (the pool is rebuilt; threads and ledger stay).
_NETWORK_FIELDS = frozenset({
    "api_key", "base_url", "organization", "project", "timeouts", "concurrency", "azure_endpoint", "api_version",
    "token_provider",
})


class WarmUp(threading.Thread):
    """``Session.warm_up``'s thread: runs ``imports``, sets ``imported``, then runs ``computations``.

    Every step is optional: one that fails is skipped (the first ask does it, and reports it).
    """

    def __init__(self, imports: Iterable[Callable[[], object]], computations: Iterable[Callable[[], object]]) -> None:
        super().__init__(name="nbopenai-warm-up", daemon=True)
        self.imported = threading.Event()
        self._imports, self._computations = list(imports), list(computations)

    def run(self) -> None:
        try:
            self._steps(self._imports)
        finally:
            self.imported.set()
        self._steps(self._computations)

    @staticmethod
    def _steps(steps: list[Callable[[], object]]) -> None:
        for step in steps:
            with contextlib.suppress(Exception):
                step()


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

    Settings read from the environment follow it: after ``os.environ["OPENAI_API_KEY"] = ...`` the
    next request uses the new key (likewise ``OPENAI_BASE_URL``, ``OPENAI_ORG_ID``,
    ``OPENAI_PROJECT_ID``, ``NBOPENAI_MODEL``), unless that setting was given explicitly (here or
    with ``configure``).

    The newest session is the one ``nbopenai.ask`` uses, unless the IPython extension's is loaded;
    inside ``with session:`` it is that session (closed at the end of the block).

    Examples
    --------
    >>> s = Session(local=True, ledger_path=":memory:")
    >>> s.ask("My name is Ada.").text  # doctest: +SKIP
    >>> s.ask("What is my name?").text  # doctest: +SKIP
    """

    def __init__(self, settings: Settings | None = None, *, local: bool = False, **overrides: Any) -> None:
        base = settings or Settings.from_env()
        self.settings = base.replace(**overrides) if overrides else base
        # Only what came from the environment follows it; explicit settings stay as given.
        self._environment = EnvironmentWatch(() if settings is not None else set(ENVIRONMENT) - set(overrides))
        self.session_id = uuid.uuid4().hex[:12]
        self.threads = ThreadStore(store=self.settings.store)
        self.loop = LoopThread(name=f"nbopenai-{self.session_id}")
        self.local_server = None
        self._clients_lock = threading.Lock()
        self._clients: _Clients | None = None  # the clients new work gets
        self._retired_held: set[_Clients] = set()  # replaced while work held them: closed when it lets go
        self._breaker: CircuitBreaker | None = None
        self._pacer: Pacer | None = None
        self.jobs: list[Job] = []
        self._job_numbers = itertools.count(1)  # job-1, job-2, ... in this session
        if local:
            self.use_local(model=overrides.get("model"))
        _current.made(self)

    # ---- configuration -------------------------------------------------------------------

    def configure(self, **changes: Any) -> Settings:
        """Change settings; clients are rebuilt only when a network setting changed.

        A setting changed here no longer follows its environment variable.
        """
        self._environment.forget(changes)
        return self._apply(changes)

    def follow_environment(self) -> bool:
        """Take up environment variables changed since the settings were read; ``True`` if any were.

        Called before each request, so a key fixed in a running kernel is used without a restart.
        """
        changes = self._environment.changes()
        if changes:
            self._apply(changes)
        return bool(changes)

    def _apply(self, changes: dict[str, Any]) -> Settings:
        new = self.settings.replace(**changes)
        network_changed = any(getattr(new, f) != getattr(self.settings, f) for f in _NETWORK_FIELDS)
        if new.ledger_path != self.settings.ledger_path:
            for name in _BESIDE_THE_LEDGER:
                if (stale := self.__dict__.pop(name, None)) is not None:
                    stale.close()
        if (new.prices_path, new.deployments, new.base_url) != (
            self.settings.prices_path,
            self.settings.deployments,
            self.settings.base_url,
        ):
            self.__dict__.pop("prices", None)  # the demo server's base URL makes every model free
        if (new.rpm, new.tpm) != (self.settings.rpm, self.settings.tpm):
            self._pacer = None
        self.__dict__.pop("accounts", None)  # its budget follows the settings
        self.threads.default_store = new.store
        self.settings = new
        if network_changed:  # after the new settings are in place: clients built from here on use them
            self._drop_clients()
        return new

    def use_local(self, *, model: str | None = None, **server_config: Any) -> str:
        """Start the offline demo server (once) and point the session at it; returns its base URL.

        Its calls cost nothing, so they are kept out of the usage ledger on disk (where they would
        mix with real spending in totals, budgets and ``usage --all``): unless a ledger path was set
        explicitly, the session's ledger (and extraction cache) move to memory, for this session only.
        """
        from .local import start  # noqa: PLC0415 - the local server loads when used

        if self.local_server is None:
            self.local_server = start(**server_config)
        changes: dict[str, Any] = {
            "base_url": self.local_server.base_url,
            "api_key": None,
            "model": model or LOCAL_MODEL,
            "azure_endpoint": None,
            "token_provider": None,
        }
        if self.settings.ledger_path is None:
            changes["ledger_path"] = ":memory:"
        self.configure(**changes)
        return self.local_server.base_url

    def warm_up(self, modules: Iterable[str] = (), steps: Iterable[Callable[[], object]] = ()) -> WarmUp:
        """A thread, not started, that loads what the first ask needs: the SDK, its client and what it
        builds lazily on a first request, pydantic (tools), the ledger (its module and its file), the
        price and window tables, ``modules`` (e.g. the live view), ``steps`` (the front-end's own), and,
        when a budget is set, the tokenizer's vocabulary.

        The first ask otherwise pays for it (about a second, several on a busy machine) before any
        text appears. Start it only while no other code imports: importing one package from two
        threads at once can hand one of them a half-initialised module (packages with circular
        imports), so the IPython extension runs it between cells and the next cell waits for its
        ``imported`` event. The vocabulary is built after that, beside the user's code: it imports
        nothing. Nothing here is required: what fails is left for the first ask to do, and report.
        """

        def first_request() -> None:
            from ._core._client import prepare_sdk  # noqa: PLC0415 - the SDK stays out of `import nbopenai`

            body = request_params(self.settings, {"store": self.settings.store})
            prepare_sdk({**body, "input": [{"role": "user", "content": "?"}], "previous_response_id": "resp"})

        imports: list[Callable[[], object]] = [
            lambda: self.client.responses,  # the SDK, its client, its lazily imported Responses resource
            first_request,
            *(functools.partial(importlib.import_module, name) for name in _WARM_MODULES + tuple(modules)),
            vocabulary_package,
            self._open_existing_ledger,
            lambda: (self.accounts, self.prices, self.context_windows),  # read files a first answer reads
            *steps,
        ]
        # An ask counts tokens before its first text only to check a budget; otherwise the vocabulary
        # is built by what needs it (an extraction, --dry-run, a missing usage): ~0.4 s of CPU, mostly
        # in Rust holding the GIL, that would stall a first ask arriving meanwhile.
        budgeted = self.settings.budget_usd is not None or self.settings.budget_tokens is not None
        return WarmUp(imports, [lambda: encoding_for_model(self.settings.model)] if budgeted else [])

    def _open_existing_ledger(self) -> None:
        """Open the ledger now if its file exists (a returning user); only a first answer creates one."""
        path = self.settings.resolved_ledger_path
        if path == ":memory:" or os.path.exists(path):
            self.ledger  # noqa: B018 - opened (and migrated) now, not under the first answer

    @property
    def retry(self) -> RetryPolicy:
        return retry_policy(self.settings)

    # ---- clients: built once, reused (one connection pool each) ---------------------------

    def _current_clients(self, *, hold: bool = False) -> _Clients:
        """The clients new work gets (built on first use); ``hold``: counted as held (see ``holding_clients``)."""
        with self._clients_lock:
            if self._clients is None:
                self._clients = _Clients(self.settings)
            self._clients.holders += hold
            return self._clients

    @property
    def client(self) -> openai.OpenAI:
        return self._current_clients().client()

    @property
    def async_client(self) -> openai.AsyncOpenAI:
        """The async client; use it only on ``self.loop``."""
        return self._current_clients().async_client()

    def holding_clients(self) -> _Holding:
        """The clients new work gets now, kept open until the block ends whatever the settings do meanwhile:
        ``with session.holding_clients() as clients:`` (``async with`` on the session's loop).

        For work of several requests (an extraction's rows, a batch's polls, an ask's stream and its
        retries): a network setting changed from another thread (``configure(api_key=...)``) gives new
        work new clients, while this work finishes on the key and endpoint it started with (an
        extraction's rows, cache scope and provenance are theirs), and nothing it sent is cut off or
        sent again. Replaced clients are closed by the last block holding them, as it ends (or with
        the session).
        """
        return _Holding(self)

    def _let_go(self, held: _Clients) -> bool:
        """One holder of ``held`` is done; True when it was the last of retired clients (the caller closes them)."""
        with self._clients_lock:
            held.holders -= 1
            last = held.holders == 0 and held in self._retired_held
            if last:
                self._retired_held.discard(held)
            return last

    @property
    def breaker(self) -> CircuitBreaker:
        """The circuit breaker of this session's endpoint (a new one when the endpoint or key changes)."""
        with self._clients_lock:
            if self._breaker is None:
                self._breaker = CircuitBreaker()
            return self._breaker

    @property
    def pacer(self) -> Pacer:
        """Extraction's pace for this endpoint: ``Settings.rpm``/``tpm``, else the limits its answers announce."""
        with self._clients_lock:
            if self._pacer is None:
                self._pacer = Pacer(self.settings.rpm, self.settings.tpm)
            return self._pacer

    def _drop_clients(self, *, held_too: bool = False) -> None:
        """Retire the clients (new work gets new ones); those work still holds close when it lets go,
        unless ``held_too`` (the session closes)."""
        with self._clients_lock:
            self._breaker = self._pacer = None
            retired, self._clients = self._clients, None
            if retired is not None and retired.holders:
                self._retired_held.add(retired)
                retired = None
            closing = [retired] if retired is not None else []
            if held_too:
                closing += self._retired_held
                self._retired_held.clear()
        for clients in closing:
            clients.close(self.loop)

    # ---- ledger, prices, budget -----------------------------------------------------------

    @cached_property
    def ledger(self) -> Ledger:
        from ._ledger._usage import Ledger  # noqa: PLC0415 - sqlite3 stays out of `import nbopenai`

        return Ledger(self.settings.resolved_ledger_path)

    @cached_property
    def extract_store(self) -> ExtractStore:
        """Extraction's answer cache and batch records, next to the ledger (in memory with it)."""
        from ._extract._cache import ExtractStore, store_path  # noqa: PLC0415 - extraction (pydantic, SQLite, the SDK) loads when used

        return ExtractStore(store_path(self.settings))

    @cached_property
    def tool_ledger(self) -> ToolLedger:
        """The side-effecting tool calls run so far, by call id (next to the ledger; see ``_turns/_tool_ledger``)."""
        from ._turns._tool_ledger import ToolLedger, tool_ledger_path  # noqa: PLC0415 - sqlite3 stays out of `import nbopenai`

        return ToolLedger(tool_ledger_path(self.settings.resolved_ledger_path))

    @cached_property
    def replay_store(self) -> ReplayStore:
        """The answers ``--replay`` reuses (``_turns/_replay``), next to the ledger (in memory with it)."""
        from ._turns._replay_store import ReplayStore, replay_path  # noqa: PLC0415 - sqlite3 stays out of `import nbopenai`

        return ReplayStore(replay_path(self.settings))

    @cached_property
    def prices(self) -> PriceTable:
        """The price table for this session's calls: free while it talks to its own demo server, whatever the model."""
        table = PriceTable.load(self.settings.prices_path).with_deployments(self.settings.deployments)
        on_demo_server = self.local_server is not None and self.settings.base_url == self.local_server.base_url
        return table.free() if on_demo_server else table

    @cached_property
    def context_windows(self) -> ContextWindows:
        """Context window sizes by model (for the near-limit warning); replace it to add models."""
        return ContextWindows.load()

    # ---- what turns get of the session ----------------------------------------------------

    @cached_property
    def accounts(self) -> LedgerWriter:
        """This session's ledger writer: rows through ``UsageRecord.build``, and the budget (made again when the
        settings change)."""
        s = self.settings
        budget = None if s.budget_usd is None and s.budget_tokens is None else Budget(s.budget_usd, s.budget_tokens)
        return LedgerWriter(self.session_id, lambda: self.ledger, lambda: self.prices, budget)

    def services(self) -> TurnServices:
        """What a turn may use of this session, with the settings as they are now.

        Environment variables changed since the settings were read are taken up first
        (``follow_environment``), so every request a turn makes uses them.
        """
        self.follow_environment()
        return TurnServices(
            settings=self.settings,
            threads=self.threads,
            ledger=self.accounts,
            retry=self.retry,
            loop=self.loop,
            client=lambda: self.client,
            async_client=lambda: self.async_client,
            breaker=lambda: self.breaker,
            context_windows=lambda: self.context_windows,
            holding_clients=self.holding_clients,
        )

    def usage_record(self, **fields: Any) -> UsageRecord:
        """The ledger row of one API call, not yet written (``UsageRecord.build``'s arguments)."""
        from ._ledger._usage import UsageRecord  # noqa: PLC0415 - sqlite3 stays out of `import nbopenai`

        return UsageRecord.build(prices=self.prices, session_id=self.session_id, **fields)

    def check_budget(self, model: str, estimated_input_tokens: int) -> None:
        """Refuse (``BudgetExceeded``) a call that would pass the session's cap."""
        self.accounts.check_budget(model, estimated_input_tokens)

    def usage(self, *, all_sessions: bool = False, **filters: Any):
        """This session's ledger rows as a DataFrame (``all_sessions=True`` for every kernel's)."""
        if not all_sessions:
            filters.setdefault("session_id", self.session_id)
        return self.ledger.to_dataframe(**filters)

    # ---- asking ---------------------------------------------------------------------------

    def prepare(
        self, prompt: str, *, images: Iterable[Any] = (), tools: Iterable[Any] = (), **options: Any
    ) -> _ask.PreparedAsk:
        """The exact request ``ask`` would send (for ``--dry-run``); sends nothing.

        ``images`` and ``tools`` are as for ``ask``; the other options are ``AskOptions`` fields.
        """
        return self._prepare(self.services(), prompt, images=images, tools=tools, **options)

    def _prepare(
        self,
        services: TurnServices,
        prompt: str,
        *,
        images: Iterable[Any] = (),
        tools: Iterable[Any] = (),
        **options: Any,
    ) -> _ask.PreparedAsk:
        if images:
            options["content"] = (*options.get("content", ()), *image_parts(images))
        if tools:
            from ._turns._tools import Toolbox  # noqa: PLC0415 - pydantic loads when tools are used

            options["tools"] = (*options.get("tools", ()), *Toolbox(tools).specs)
        return _ask.prepare(services, prompt, _ask.AskOptions(**options))

    def ask(
        self,
        prompt: str,
        *,
        sink: AskSink | None = None,
        images: Iterable[Any] = (),
        tools: Iterable[Any] = (),
        confirm: Any = None,
        max_tool_rounds: int | None = None,
        **options: Any,
    ) -> Answer:
        """Ask in a thread and return the ``Answer`` (see ``AskOptions`` for the other options).

        Turns on one thread run one at a time: asks from several Python threads on the same
        conversation thread each build on the one before (see ``_ask.holding``).

        Parameters
        ----------
        prompt
            The question.
        sink
            Receives the streamed answer (a widget, ``StdoutSink``); with none, text streams to
            stdout when ``echo=True`` (default off).
        images
            Image paths, http(s) URLs, matplotlib figures or PIL images, sent after the prompt.
        tools
            Python functions the model may call (run here, in this process, until it answers), or
            tool dicts passed as they are (e.g. ``{"type": "web_search"}``).
        confirm
            ``confirm(call) -> bool`` asked before each function call (``ask_before_running``
            asks on stdin); a declined call tells the model so.
        max_tool_rounds
            How many times one turn runs the model's calls (default 5); past that the model must
            answer without tools and the answer is marked ``incomplete``.
        """
        echo = options.pop("echo", False)
        services = self.services()
        toolbox = None
        if tools:
            from ._turns._tools import Toolbox  # noqa: PLC0415 - pydantic loads when tools are used

            toolbox = Toolbox(tools, ledger=lambda: self.tool_ledger)
        prepared = self._prepare(services, prompt, images=images, tools=toolbox.specs if toolbox else (), **options)
        if sink is None and echo:
            sink = StdoutSink()
        if toolbox is not None and toolbox.functions:
            from ._turns._tools import DEFAULT_MAX_TOOL_ROUNDS, run_with_tools  # noqa: PLC0415 - pydantic loads when tools are used

            rounds = DEFAULT_MAX_TOOL_ROUNDS if max_tool_rounds is None else max_tool_rounds
            return run_with_tools(services, prepared, toolbox, sink, max_tool_rounds=rounds, confirm=confirm)
        return _ask.run(services, prepared, sink)

    def compact(self, thread: str = "default", *, model: str | None = None) -> Compaction:
        """Shrink a long thread on the server (``responses.compact``); it continues from there.

        Where the server has no compact endpoint, the thread switches to ``truncation="auto"``.
        See ``nbopenai._turns._compact.compact``.
        """

        return compact(self.services(), thread, model=model)

    def submit(self, prompt: str, *, on_done=None, **options: Any) -> Job:
        """Ask in the background (``background=true``); returns a ``Job`` at once.

        The session's loop polls it; ``on_done(job)`` is called (from that loop's thread) when it
        ends. Its answer joins the thread only if the thread did not move meanwhile (see ``_jobs``).
        """

        tools = options.get("tools") or ()
        if callable(tools) or any(callable(tool) for tool in tools):
            raise UsageError(
                "Python function tools run in this kernel, between requests: drop --background to use them."
            )
        services = self.services()
        job = submit(services, self._prepare(services, prompt, **options), next(self._job_numbers), on_done)
        self.jobs.append(job)
        return job

    def history(self, thread: str = "default"):
        """The thread's turns as a DataFrame (turn, cell, prompt, answer, response id, tokens)."""
        import pandas as pd  # noqa: PLC0415 - pandas loads when a frame is made

        return pd.DataFrame(self.threads.history_rows(thread))

    def reset(self, thread: str | None = None) -> None:
        """Forget one thread (or all); the server keeps what it stored."""
        self.threads.reset(thread)

    # ---- life cycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Close the session: work still on its loop ends first (a job still running is recorded, see ``_jobs``)."""
        _current.closed(self)
        self.loop.drain()  # before its clients and stores close under it
        self._drop_clients(held_too=True)
        self.loop.close()
        if self.local_server is not None:
            self.local_server.stop()
            self.local_server = None
        for name in _BESIDE_THE_LEDGER:
            if (opened := self.__dict__.pop(name, None)) is not None:
                opened.close()

    def __enter__(self) -> Session:
        """``with session:``: the block's current session (for ``nbopenai.ask``); closed when it ends."""
        _current.enter(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _current.leave(self)
        self.close()

    def __repr__(self) -> str:
        s = self.settings
        key = s.api_key.masked if s.api_key else "none"
        return f"<nbopenai.Session {self.session_id} model={s.model!r} base_url={shown_url(s.base_url)!r} key={key}>"


class _Clients:
    """The client pair built for one set of network settings (each client on first use), and the work holding it.

    ``Session.holding_clients`` counts the holders; a network setting's change retires the pair, which
    is closed at once if nobody holds it, else when the last holder lets go.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.holders = 0
        self._lock = threading.Lock()
        self._sync: openai.OpenAI | None = None
        self._async: openai.AsyncOpenAI | None = None

    def client(self) -> openai.OpenAI:
        with self._lock:
            if self._sync is None:
                from ._core._client import build_sync_client  # noqa: PLC0415 - the SDK stays out of `import nbopenai`

                self._sync = _built(build_sync_client, self.settings)
            return self._sync

    def async_client(self) -> openai.AsyncOpenAI:
        """The async client; use it only on the session's loop."""
        with self._lock:
            if self._async is None:
                from ._core._client import build_async_client  # noqa: PLC0415 - the SDK stays out of `import nbopenai`

                self._async = _built(build_async_client, self.settings)
            return self._async

    def _taken(self) -> openai.AsyncOpenAI | None:
        """Forget both clients and close the sync one; the async one is returned, to be closed on the loop."""
        with self._lock:
            sync, asynchronous, self._sync, self._async = self._sync, self._async, None, None
        if sync is not None:
            sync.close()
        return asynchronous

    async def aclose(self) -> None:
        """Close both, on the session's loop."""
        if (asynchronous := self._taken()) is not None:
            await asynchronous.close()

    def close(self, loop: LoopThread) -> None:
        """Close both, from any thread."""
        asynchronous = self._taken()
        if asynchronous is not None and loop.running:
            # The async client's pool lives on our loop: close it there, and wait (unless called on that loop)
            # so that nothing is left un-awaited when the loop itself stops.
            closing = loop.submit(asynchronous.close())
            if not loop.in_loop_thread():
                closing.result(timeout=5)


class _Holding:
    """``Session.holding_clients()``: a context manager for ``with`` and for ``async with`` (on the session's loop)."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._held: _Clients | None = None

    def __enter__(self) -> _Clients:
        self._held = self._session._current_clients(hold=True)
        return self._held

    def __exit__(self, *exc: object) -> None:
        if self._held is not None and self._session._let_go(self._held):
            self._held.close(self._session.loop)

    async def __aenter__(self) -> _Clients:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        await self.let_go()

    async def let_go(self) -> None:
        """End the hold on the session's loop (work that took it over from the thread that entered it)."""
        if self._held is not None and self._session._let_go(self._held):
            await self._held.aclose()


def _built(build: Any, settings: Settings) -> Any:
    """A client, or the translated reason it could not be built (a malformed base URL, say): every
    path that builds one (an ask, extraction, a job) fails with one of our errors, not the SDK's."""
    try:
        return build(settings)
    except Exception as exc:
        raise translate(exc) from None


class _Current:
    """Which session ``nbopenai.ask`` (``extract``, ``usage``...) uses when given none. In order:

    1. the session of the innermost ``with session:`` block (in this thread or task);
    2. the one set with ``use_session`` (the IPython extension sets its own: ``%%ask`` and
       ``nbopenai.ask`` then share threads and settings);
    3. the newest ``Session`` made and not closed (held weakly: being current keeps none alive);
    4. else one made from the environment on first use.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()  # RLock: the session made in `get` registers itself via `made`
        self._blocks: contextvars.ContextVar[tuple[Session, ...]] = contextvars.ContextVar(
            "nbopenai_blocks", default=()
        )
        self._chosen: Session | None = None
        self._made: list[weakref.ref[Session]] = []  # oldest first; closed ones are removed
        self._default: Session | None = None  # made by `get`: kept alive here, as nobody else holds it

    def get(self) -> Session:
        if blocks := self._blocks.get():
            return blocks[-1]
        with self._lock:
            if self._chosen is not None:
                return self._chosen
            newest = self._newest()
            if newest is None:
                newest = self._default = Session()  # `made` makes it the newest, until another is made
            return newest

    def set(self, session: Session | None) -> None:
        with self._lock:
            self._chosen = session

    def _newest(self) -> Session | None:
        while self._made:
            if (session := self._made[-1]()) is not None:
                return session
            self._made.pop()
        return None

    def made(self, session: Session) -> None:
        with self._lock:
            self._made = [ref for ref in self._made if ref() is not None]  # bounded by the live sessions
            self._made.append(weakref.ref(session))

    def closed(self, session: Session) -> None:
        with self._lock:
            if self._chosen is session:
                self._chosen = None
            self._made = [ref for ref in self._made if ref() not in (session, None)]
            if self._default is session:
                self._default = None

    def enter(self, session: Session) -> None:
        self._blocks.set((*self._blocks.get(), session))

    def leave(self, session: Session) -> None:
        blocks = list(self._blocks.get())
        if session in blocks:  # the innermost entry of this session
            del blocks[len(blocks) - 1 - blocks[::-1].index(session)]
        self._blocks.set(tuple(blocks))


# The one piece of module state: a pointer to the current session, like matplotlib's current
# figure, so `nbopenai.ask(...)` works without passing a session around.
_current = _Current()


def current_session() -> Session:
    """The session ``nbopenai.ask``/``extract``/``usage`` use: see ``_Current`` for the order."""
    return _current.get()


def use_session(session: Session | None) -> None:
    """Make ``session`` current until changed (the IPython extension does this on load); ``None`` undoes it."""
    _current.set(session)
