"""The one place where nbopenai's errors become what a notebook user sees.

Every failure is shown as one short message: a title per failure class, what happened, what to do.
No SDK traceback, no API key. The cell still counts as failed, so *Run All* stops there.

How: the core's exception is re-raised as is, with a ``_render_traceback_`` attached to the
instance. IPython calls that hook instead of formatting a traceback (it exists for exceptions that
know how to present themselves, e.g. ipyparallel's remote errors), in the terminal and in a kernel
alike; a kernel sends our lines as the ``error`` output with the real class name as ``ename``
(``RateLimitError``), so nbclient and front-ends still see a genuine, typed failure. We do not use
IPython's ``UsageError`` (its "UsageError:" prefix would misname an outage as a typo, and IPython
only special-cases that exact class), nor ``set_custom_exc`` (it would catch the user's own code).
The same hook shortens ``KeyboardInterrupt``: the stop button keeps the partial answer on screen,
and the user needs one line saying so, not a traceback through the HTTP stack.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from .._core import _errors as e

__all__ = ["TITLES", "interrupted", "reported", "render_lines"]

# Most specific first: the first class the error is an instance of names it.
TITLES: tuple[tuple[type[e.NbOpenAIError], str], ...] = (
    (e.ConfigurationError, "nbopenai is not configured"),
    (e.AuthenticationError, "Authentication failed"),
    (e.RateLimitError, "Rate limit exceeded"),
    (e.ContextLengthExceeded, "Context length exceeded"),
    (e.BadRequestError, "Bad request"),
    (e.APIUnavailable, "API unavailable"),
    (e.ServerError, "Server error"),
    (e.TimeoutError, "Timed out"),
    (e.ConnectionError, "Connection failed"),
    (e.UnexpectedResponse, "Not the API"),
    (e.UnreadableAnswer, "Unreadable answer"),
    (e.StreamError, "The answer failed mid-stream"),
    (e.BudgetExceeded, "Budget exceeded"),
    (e.SchemaError, "Schema not usable"),
    (e.UsageError, "Usage error"),
    (e.APIError, "API error"),
    (e.NbOpenAIError, "nbopenai error"),
)

_RED, _RESET = "\x1b[0;31m", "\x1b[0m"


def title_of(error: e.NbOpenAIError) -> str:
    return next(title for cls, title in TITLES if isinstance(error, cls))


def render_lines(error: e.NbOpenAIError, *secrets: str | None) -> list[str]:
    """The lines shown for ``error``: the title and message, then the hint (key-shaped text masked)."""
    lines = [f"{_RED}{title_of(error)}{_RESET}: {e.redact(error.message, *secrets)}"]
    if error.hint:
        lines.append(e.redact(error.hint, *secrets))
    return lines


def _interrupted_lines() -> list[str]:
    return [
        f"{_RED}KeyboardInterrupt{_RESET}: stopped. The text that arrived is kept above, marked partial; "
        "the thread stays at its last good answer."
    ]


def interrupted(note: str) -> KeyboardInterrupt:
    """A ``KeyboardInterrupt`` to raise after a stopped cell kept its partial result: shown as ``note``, one line."""
    interrupt = KeyboardInterrupt(note)
    interrupt._render_traceback_ = lambda: [f"{_RED}KeyboardInterrupt{_RESET}: {note}"]  # type: ignore[attr-defined]
    return interrupt


def _escaped_translation(exc: BaseException) -> bool:
    """An SDK or HTTP error that a core path let out untranslated: it is translated here, not shown
    with its request (whose headers hold the key) and its frames (``%xmode Verbose`` prints them)."""
    openai, httpx2 = sys.modules.get("openai"), sys.modules.get("httpx2")
    return (openai is not None and isinstance(exc, openai.OpenAIError)) or (
        httpx2 is not None and isinstance(exc, (httpx2.HTTPError, httpx2.InvalidURL, httpx2.StreamError))
    )


@contextmanager
def reported(*secrets: str | None) -> Iterator[None]:
    """Let nbopenai errors and ``KeyboardInterrupt`` out of the block as one short message each.

    ``secrets`` (the session's key and base-URL credentials) are masked on top of the key-shaped
    patterns the core masks. An SDK error that escaped the core is translated first.
    """
    try:
        yield
    except Exception as caught:
        if not isinstance(caught, e.NbOpenAIError) and not _escaped_translation(caught):
            raise
        error = e.translate(caught)
        # The kernel also sends str(error) as the error's `evalue`: mask it too.
        error.message = e.redact(error.message, *secrets)
        error.args = (error.message,)
        lines = render_lines(error, *secrets)
        error._render_traceback_ = lambda: lines  # type: ignore[attr-defined]
        raise error from None
    except KeyboardInterrupt as interrupt:
        interrupt._render_traceback_ = _interrupted_lines  # type: ignore[attr-defined]
        raise interrupt from None
