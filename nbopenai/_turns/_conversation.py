"""Threads of turns, keyed to the notebook cells that asked them.

With ``store=True`` a thread is a chain of server-side responses: each turn sends only its new
input plus ``previous_response_id`` of the thread's head. With ``store=False`` nothing is kept on
the server, so the thread keeps every item and re-sends them.

A compaction (``Session.compact``) is a turn of its own with ``status="compacted"``: it holds the
compacted items and no response id. It stands for every turn before it, so later turns build on it
(replaying its items, then chaining as usual) and never on what it replaced.

If the server no longer has the response a thread chains to (stored responses expire, and can be
deleted), ``plan(cell_id, gone=id)`` plans the turn without the chain: the thread's turns since its
last compaction are sent as input, as ``store=False`` sends them, and the answer's new response
carries the chain on (``_ask.chained`` decides when; the notice says it happened).

Re-running a cell is an edit, not an append: the thread rewinds to the turn before that cell's
last turn and the new answer replaces it (later turns are dropped, as editing a message does in a
chat app). So *Run All* twice gives the same conversation, not a doubled one. Without a cell id
(a terminal, a script) turns simply append.

One turn at a time per thread: a turn holds ``ThreadStore.turn(name)`` from planning to commit, so
asks from several Python threads on one conversation thread run one after the other, each
building on the last. A background answer joins its thread only if the thread did not move since
it was submitted (see ``ThreadStore.commit``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Turn", "Thread", "ThreadStore", "Plan", "COMPACTED"]


@dataclass(frozen=True)
class Turn:
    prompt: str
    answer: str
    response_id: str | None
    model: str
    status: str
    cell_id: str | None = None
    input_items: tuple[dict, ...] = ()
    output_items: tuple[dict, ...] = ()
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    time: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Plan:
    """Where a new turn goes: after ``base`` turns, replacing ``replaced`` (1-based) if a re-run."""

    base: int
    replaced: int | None
    dropped: int
    total_before: int
    previous_response_id: str | None
    replay: tuple[dict, ...]
    gone: str | None = None  # the response the chain lost: its turns (``resent`` of them) are in ``replay``
    resent: int = 0

    def notice(self, thread: str) -> str | None:
        said = []
        if self.replaced is not None:
            later = f", {self.dropped} later turn{'s' if self.dropped != 1 else ''} dropped" if self.dropped else ""
            said.append(f"re-ran turn {self.replaced} of {self.total_before}{later}")
        if self.gone is not None:
            turns = f"{self.resent} earlier turn{'s' if self.resent != 1 else ''}"
            said.append(f"{self.gone} is no longer on the server (expired or deleted): {turns} sent again as input")
        return f"thread {thread}: {'; '.join(said)}" if said else None


COMPACTED = "compacted"


def _items(turns: list[Turn]) -> tuple[dict, ...]:
    return tuple(item for turn in turns for item in (*turn.input_items, *turn.output_items))


@dataclass
class Thread:
    name: str
    store: bool = True
    turns: list[Turn] = field(default_factory=list)
    # Set to "auto" when compaction is unavailable: the API then drops the oldest items itself.
    truncation: str | None = None
    # The near-context-window warning is shown once, until the thread shrinks again.
    warned_near_limit: bool = False
    # Kept in a conversation object instead of a response chain (see _conversations), and its id once created.
    conversation: bool = False
    conversation_id: str | None = None

    @property
    def kind(self) -> str:
        """Where the thread is kept: ``conversation``, ``response chain`` (store=True) or ``items re-sent``."""
        return "conversation" if self.conversation else ("response chain" if self.store else "items re-sent")

    @property
    def head(self) -> str | None:
        """Response id the next turn chains to (``store=True``)."""
        return self.turns[-1].response_id if self.turns else None

    def plan(self, cell_id: str | None, *, gone: str | None = None) -> Plan:
        """Where a turn asked from ``cell_id`` belongs; does not change the thread.

        ``gone``: the server no longer has that response (the one the plan chained to), so the turns
        since the last compaction are sent again as input instead of chaining.
        """
        base, replaced = len(self.turns), None
        if cell_id is not None:
            for index in range(len(self.turns) - 1, -1, -1):
                if self.turns[index].cell_id == cell_id:
                    base, replaced = index, index + 1
                    break
        kept = self.turns[:base]
        since = max((i for i, turn in enumerate(kept) if turn.status == COMPACTED), default=0)
        window = kept[since:]
        previous = None
        if self.conversation:  # the conversation holds every item: nothing to chain to, nothing to replay
            window = []
        elif self.store and gone is None:
            # Chain to the last stored response; replay only what came after it (a compaction).
            chained = [i for i, turn in enumerate(window) if turn.response_id]
            if chained:
                previous = window[chained[-1]].response_id
                window = window[chained[-1] + 1 :]
        return Plan(
            base=base,
            replaced=replaced,
            dropped=len(self.turns) - base - (1 if replaced else 0),
            total_before=len(self.turns),
            previous_response_id=previous,
            replay=_items(window),
            gone=gone,
            resent=len(window) if gone is not None else 0,
        )

    def commit(self, plan: Plan, turn: Turn) -> int:
        """Apply ``plan`` with its finished ``turn``; returns the turn's 1-based number."""
        self.turns[plan.base :] = [turn]
        return len(self.turns)

    def clear(self) -> None:
        self.turns.clear()


class ThreadStore:
    """A session's named threads (``default`` exists from the start).

    Commits are serialised: ``commit`` and the other changes take one lock, and each name has a
    *turn lock* (``turn``) that a foreground turn holds from planning to commit. ``moves(name)``
    counts the changes of a name (commits, resets, ``new``); a plan made at an older count is stale.
    """

    def __init__(self, store: bool = True) -> None:
        self._store = store
        self._threads: dict[str, Thread] = {}
        self._lock = threading.RLock()
        self._turn_locks: dict[str, threading.RLock] = {}
        self._moves: dict[str, int] = {}

    def get(self, name: str = "default") -> Thread:
        with self._lock:
            if name not in self._threads:
                self._threads[name] = Thread(name=name, store=self._store)
            return self._threads[name]

    @property
    def default_store(self) -> bool:
        return self._store

    @default_store.setter
    def default_store(self, store: bool) -> None:
        self._store = store

    def new(self, name: str = "default", *, store: bool | None = None) -> Thread:
        with self._lock:
            self._threads[name] = Thread(name=name, store=self._store if store is None else store)
            self._moved(name)
            return self._threads[name]

    def fresh(self, name: str = "default", *, store: bool | None = None) -> Thread:
        """A new empty thread that replaces ``name`` only once committed (after a good turn)."""
        return Thread(name=name, store=self._store if store is None else store)

    def adopt(self, thread: Thread) -> None:
        """Make ``thread`` the one called ``thread.name`` (a ``--new`` turn succeeded)."""
        with self._lock:
            if self._threads.get(thread.name) is not thread:
                self._threads[thread.name] = thread
                self._moved(thread.name)

    def turn(self, name: str) -> threading.RLock:
        """The lock a turn of thread ``name`` holds from planning to commit: one turn at a time per thread."""
        with self._lock:
            return self._turn_locks.setdefault(name, threading.RLock())

    def moves(self, name: str) -> int:
        """How many times thread ``name`` changed (commits, resets, replacements) so far."""
        with self._lock:
            return self._moves.get(name, 0)

    def commit(self, thread: Thread, plan: Plan, turn: Turn, *, if_unmoved_since: int | None = None) -> int | None:
        """Put ``turn`` where ``plan`` says in ``thread``, the thread called ``thread.name`` from now on.

        Returns the turn's 1-based number. With ``if_unmoved_since`` (a ``moves`` count: a
        background answer's, taken at submission) the turn is added only if the thread has not
        changed since and no other turn is under way on it; otherwise nothing changes and the
        result is ``None``: an answer never rewrites a conversation that went on without it.
        """
        with self._lock:
            if if_unmoved_since is None:
                return self._commit(thread, plan, turn)
            lock = self.turn(thread.name)
            if not lock.acquire(blocking=False):  # a foreground turn is under way on it
                return None
            try:
                if self._moves.get(thread.name, 0) != if_unmoved_since:
                    return None
                return self._commit(thread, plan, turn)
            finally:
                lock.release()

    def _commit(self, thread: Thread, plan: Plan, turn: Turn) -> int:
        number = thread.commit(plan, turn)
        self._threads[thread.name] = thread
        self._moved(thread.name)
        return number

    def _moved(self, name: str) -> None:
        self._moves[name] = self._moves.get(name, 0) + 1

    def reset(self, name: str | None = None) -> None:
        with self._lock:
            for gone in list(self._threads) if name is None else [name]:
                self._threads.pop(gone, None)
                self._moved(gone)

    def names(self) -> list[str]:
        with self._lock:
            return list(self._threads)

    def __contains__(self, name: str) -> bool:
        return name in self._threads

    def summary_rows(self) -> list[dict[str, Any]]:
        return [
            {
                "thread": t.name,
                "kind": t.kind,
                "turns": len(t.turns),
                "store": t.store,
                "head": t.conversation_id if t.conversation else t.head,
                "input_tokens": sum(x.input_tokens for x in t.turns),
                "output_tokens": sum(x.output_tokens for x in t.turns),
            }
            for t in self._threads.values()
        ]

    def history_rows(self, name: str = "default") -> list[dict[str, Any]]:
        return [
            {
                "turn": number,
                "cell": turn.cell_id,
                "prompt": turn.prompt,
                "answer": turn.answer,
                "response_id": turn.response_id,
                "status": turn.status,
                "model": turn.model,
                "input_tokens": turn.input_tokens,
                "cached_tokens": turn.cached_tokens,
                "output_tokens": turn.output_tokens,
            }
            for number, turn in enumerate(self.get(name).turns, start=1)
        ]
