"""Threads kept in a conversation object (``%%ask -t NAME --store conversation``).

Such a thread's history lives on the server, in a conversation (``conversations.create``): each
turn sends ``conversation=<id>`` and only its new input (no ``previous_response_id``, nothing
replayed); the server adds the turn's input and output items to the conversation, and the model
sees its items. Tool rounds send only the calls' results (the conversation holds the calls).

The conversation is created when the thread's first turn is sent (a ``--dry-run`` shows
``NEW_CONVERSATION`` in its place), with the thread's name in its metadata.

A re-run cell rewinds the conversation by deleting the items its turn and the later turns added
(``conversations.items.delete``), found as the items after the last output item of the turn it
builds on. Deleting rather than starting a new conversation from the kept items, because the
conversation stays one record with one id (what an organisation that keeps conversations as
records wants), nothing is sent again, and a new conversation takes its initial items 20 at a time
at most. The local thread drops those turns at once, so it never shows what the server no longer has.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._core._errors import UsageError, translate

if TYPE_CHECKING:
    from ._conversation import Plan, Thread
    from ._recorder import TurnServices

__all__ = ["CONVERSATION", "NEW_CONVERSATION", "THREAD_STORES", "choose_kind", "ready"]

CONVERSATION = "conversation"
# Where a thread is kept: a previous_response_id chain of stored responses, or a conversation object.
THREAD_STORES = ("response", CONVERSATION)
# What a dry run shows for a conversation not created yet.
NEW_CONVERSATION = "(a new conversation, created when the turn is sent)"


def choose_kind(thread: Thread, asked: str | None, default: str, *, store: bool) -> None:
    """Where ``thread`` is kept: as ``asked`` (``--store``) or the ``default`` (the ``thread_store`` setting, when
    ``store`` allows it) while it has no turns; after that it stays, and asking for the other kind is refused."""
    if not thread.turns:
        thread.conversation = asked == CONVERSATION or (asked is None and store and default == CONVERSATION)
    elif asked is not None and (asked == CONVERSATION) != thread.conversation:
        raise UsageError(f"thread {thread.name!r} is kept in a {thread.kind}; use --new or another -t to switch")
    if thread.conversation and not store:
        raise UsageError("a conversation thread is kept on the server: it cannot go with store=False")


def request_fields(thread: Thread) -> dict[str, Any]:
    """What a conversation thread's request carries instead of a chain: ``conversation``."""
    return {"conversation": thread.conversation_id or NEW_CONVERSATION} if thread.conversation else {}


def ready(services: TurnServices, thread: Thread, plan: Plan, params: dict[str, Any]) -> None:
    """A request of ``thread`` (``params``, planned as ``plan``) about to be sent: its conversation rewound (a
    re-run) or created (a first turn), and named in ``params``. (Not the ``PreparedAsk``: ``_ask`` imports this.)"""
    if not thread.conversation:
        return
    try:
        if thread.conversation_id is None:
            created = services.retry.call(
                lambda: services.client().conversations.create(metadata={"nbopenai_thread": thread.name[:512]})
            )
            thread.conversation_id = created.id
        elif plan.replaced is not None:
            _rewind(services, thread, plan.base)
    except Exception as exc:  # noqa: BLE001 - every failure is translated once, here
        raise translate(exc) from None
    params["conversation"] = thread.conversation_id


def _rewind(services: TurnServices, thread: Thread, base: int) -> None:
    """Delete the conversation's items after turn ``base`` (1-based; 0: all of them) and drop those turns here."""
    client = services.client()
    anchor = _last_item(services, thread, base)
    doomed = []
    after = anchor
    while True:
        page = services.retry.call(
            lambda after=after: client.conversations.items.list(
                thread.conversation_id, order="asc", limit=100, **({"after": after} if after else {})
            ),
            idempotent=True,
        )
        doomed.extend(item.id for item in page.data)
        if not page.data or not page.has_more:
            break
        after = page.data[-1].id
    for item_id in doomed:
        services.retry.call(
            lambda item_id=item_id: client.conversations.items.delete(item_id, conversation_id=thread.conversation_id),
            idempotent=True,
        )
    del thread.turns[base:]


def _last_item(services: TurnServices, thread: Thread, base: int) -> str | None:
    """The id of the last item turn ``base`` added (its answer's last output item), or None before the first turn."""
    client = services.client()
    for turn in reversed(thread.turns[:base]):
        if turn.response_id is None:
            continue
        response = services.retry.call(lambda turn=turn: client.responses.retrieve(turn.response_id), idempotent=True)
        if response.output:
            return response.output[-1].id
    return None
