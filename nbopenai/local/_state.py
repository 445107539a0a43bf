"""What the local server remembers: its settings, stored responses, conversations, recorded requests.

One ``State`` per server; every field is guarded by ``State.lock`` because the HTTP server answers
each connection on its own thread and background responses finish on worker threads.

Everything it keeps is bounded, so a server that runs for days stays flat in memory: the newest
``max_responses`` responses, ``max_conversations`` conversations and ``max_requests`` recorded requests
(oldest dropped first). An id that was dropped gets the API's 404, which then says why.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._turns._window import ContextWindows
from ._azure import TokenIssuer
from ._faults import FaultQueue, check_kind
from ._limits import RateLimits
from ._prompt_cache import PromptCache

__all__ = ["Config", "RecordedRequest", "State", "StoredResponse", "new_id"]

DEMO_MODEL = "nbopenai-local"


@dataclass
class Config:
    """Behaviour of the server that tests and benchmarks change live with ``configure``."""

    latency: float = 0.0  # seconds before the first byte of every model route
    chunk_delay: float = 0.0  # seconds between streamed deltas
    chunk_size: int | None = None  # characters per text delta; None streams word by word
    seed: int = 0
    fault_rate: float = 0.0  # probability that a model request draws a random fault
    fault_kinds: tuple[str, ...] = ("rate_limit", "server_error")
    answer_tokens: int | None = None  # every answer becomes this many words long (benchmarks)
    require_api_key: str | None = None
    # Entra ID tokens (see _azure): every request needs a token issued by ``issue_token()``, valid this many seconds.
    token_lifetime: float | None = None
    expire_tokens_after: int | None = None  # every token issued so far expires once, after this many requests
    # The demo model's call ids follow from the request (the same request, the same call id), as a re-run cell meets
    # a call it already ran (tests of tools with side effects, _turns/_tool_ledger).
    stable_call_ids: bool = False
    context_window: int = 128_000
    max_body_bytes: int = 32 * 1024 * 1024
    background_delay: float = 0.0  # seconds a background response stays queued
    # Prompt caching as the API does it (see _prompt_cache): hits from this many tokens, in blocks.
    cache_min_tokens: int = 1024
    cache_block_tokens: int = 128
    # Rate limits as the API enforces them (see _limits): None is no limit.
    rpm: int | None = None
    tpm: int | None = None
    rate_limit_window: float = 1.0  # seconds over which a minute's allowance is spread
    # Model names answered besides the demo model and OpenAI's (those in nbopenai/data); others get a 404.
    models: tuple[str, ...] = ()
    # What the server keeps (oldest dropped first), so memory stays flat however long it runs.
    max_responses: int = 5_000
    max_conversations: int = 1_000
    max_requests: int = 10_000  # the log tests read as ``server.requests``

    def update(self, **changes: Any) -> None:
        known = {f.name for f in dataclasses.fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown setting(s) {sorted(unknown)}; known: {sorted(known)}")
        for name, value in changes.items():
            if name.startswith("max_") and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ValueError(f"{name} must be a positive whole number; got {value!r}")
            if name == "models":
                value = tuple(value or ())
            if name == "fault_kinds" and value is not None:
                value = tuple(value)
                for kind in value:
                    check_kind(kind)
            whole = isinstance(value, int) and not isinstance(value, bool)
            if name in ("rpm", "tpm") and value is not None and not (whole and value >= 1):
                raise ValueError(f"{name} must be a positive whole number (a limit per minute) or None; got {value!r}")
            if name == "rate_limit_window" and not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"rate_limit_window must be a positive number of seconds; got {value!r}")
            setattr(self, name, value)

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["fault_kinds"] = list(self.fault_kinds)
        data["models"] = list(self.models)
        return data


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it, for tests that check what a client sent."""

    method: str
    path: str
    headers: dict[str, str]  # lowercase names
    body: Any  # parsed JSON, or None when the body was empty or not JSON
    raw_size: int
    received_at: float  # time.monotonic() in the server's process
    fault: str | None = None
    sent_path: str = ""  # the path as sent, where it differs (Azure's /openai/... shapes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class StoredResponse:
    """A response plus what the demo model saw, so later turns can chain onto it."""

    response: dict[str, Any]
    input_items: list[dict[str, Any]]  # the items this request added (for input_items listing)
    context_items: list[dict[str, Any]]  # history + new items, without instructions
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def chain_items(self) -> list[dict[str, Any]]:
        """What a follow-up turn inherits: everything seen plus everything produced."""
        return self.context_items + list(self.response.get("output") or [])


@dataclass
class Conversation:
    id: str
    created_at: int
    metadata: dict[str, str]
    items: list[dict[str, Any]] = field(default_factory=list)

    def resource(self) -> dict[str, Any]:
        return {"id": self.id, "object": "conversation", "created_at": self.created_at, "metadata": self.metadata}


class Newest(OrderedDict):
    """A table that keeps its ``limit()`` newest entries: adding one more drops the oldest."""

    def __init__(self, limit: Callable[[], int]) -> None:
        super().__init__()
        self._limit = limit
        self.dropped = 0  # entries forgotten so far, for the 404 that explains why

    def __setitem__(self, key: Any, value: Any) -> None:
        fresh = key not in self
        super().__setitem__(key, value)
        if fresh:
            limit = self._limit()
            while len(self) > limit:
                self.popitem(last=False)
                self.dropped += 1

    def clear(self) -> None:
        super().clear()
        self.dropped = 0

    def forgotten(self, what: str) -> str:
        """The sentence a 404 adds once entries were dropped ('' before)."""
        return f" The offline server keeps only its {self._limit():,} newest {what}." if self.dropped else ""


class State:
    """Everything a server holds; ``reset`` returns it to a fresh start."""

    def __init__(self, config: Config | None = None) -> None:
        self.lock = threading.RLock()
        self.config = config or Config()
        self._initial_config = dataclasses.replace(self.config)
        self.responses: Newest = Newest(lambda: self.config.max_responses)
        self.conversations: Newest = Newest(lambda: self.config.max_conversations)
        self.requests: deque[RecordedRequest] = deque(maxlen=self.config.max_requests)
        self.faults = FaultQueue(seed=self.config.seed)
        self.prompt_cache = PromptCache()
        self.limits = RateLimits()
        self.tokens = TokenIssuer()
        self._known_models = ContextWindows.load()  # OpenAI's models and the demo model, dated snapshots too
        # Other route modules (files, batches) keep their own tables here, keyed by module name.
        self.extensions: dict[str, Any] = {}

    def knows_model(self, model: str) -> bool:
        """Whether this server answers for ``model``: the demo model, a known OpenAI model, or a configured one."""
        return model == DEMO_MODEL or model in self.config.models or self._known_models.window(model) is not None

    def record(self, request: RecordedRequest) -> None:
        with self.lock:
            self.requests.append(request)

    def clear_requests(self) -> None:
        with self.lock:
            self.requests.clear()

    def configure(self, **changes: Any) -> None:
        with self.lock:
            self.config.update(**changes)
            if self.requests.maxlen != self.config.max_requests:
                self.requests = deque(self.requests, maxlen=self.config.max_requests)
            if "seed" in changes:
                self.faults.reseed(self.config.seed)

    def reset(self) -> None:
        with self.lock:
            for stored in self.responses.values():
                stored.cancel.set()
            self.config = dataclasses.replace(self._initial_config)
            self.responses.clear()
            self.conversations.clear()
            self.requests = deque(maxlen=self.config.max_requests)
            self.extensions.clear()
            self.faults = FaultQueue(seed=self.config.seed)
            self.prompt_cache.clear()
            self.limits = RateLimits()
            self.tokens = TokenIssuer()

    def new_conversation(self, metadata: dict[str, str] | None, items: list[dict[str, Any]]) -> Conversation:
        conversation = Conversation(new_id("conv"), int(time.time()), dict(metadata or {}), list(items))
        with self.lock:
            self.conversations[conversation.id] = conversation
        return conversation


def new_id(prefix: str) -> str:
    """An id shaped like the API's (``resp_`` + 48 hex digits)."""
    return f"{prefix}_{secrets.token_hex(24)}"
