"""The one network seam: a session's ``OpenAI`` / ``AsyncOpenAI`` pair, built once.

Both clients share the session's settings: granular timeouts (connect, read, write, pool),
connection pools sized for extraction's concurrency, and ``max_retries=0`` because retries are
ours (see ``_retry``). A response hook on their HTTP clients turns a web page where the API's
answer belongs into one clear ``UnexpectedResponse``. The key is handed to the SDK and nowhere else.
"""

from __future__ import annotations

import json
from typing import Any

import httpx2
import openai

from ._errors import ConfigurationError, UnexpectedResponse
from ._retry import ANSWERED
from ._settings import Settings

__all__ = ["build_sync_client", "build_async_client", "create_response_dict", "sdk_timeout", "LOCAL_API_KEY"]

# Compatible servers without auth (the local demo, many self-hosted ones) still need a non-empty key.
LOCAL_API_KEY = "nbopenai-local-no-key"


def sdk_timeout(settings: Settings) -> openai.Timeout:
    t = settings.timeouts
    return openai.Timeout(connect=t.connect, read=t.read, write=t.write, pool=t.pool)


def _limits(settings: Settings) -> httpx2.Limits:
    # Extraction's concurrency is chosen per call (`--concurrency 200`), so the pool must never be
    # the bottleneck: a ceiling as high as the SDK's own, and idle sockets kept for the usual case.
    return httpx2.Limits(max_connections=1000, max_keepalive_connections=max(100, settings.concurrency * 2))


def _credentials(settings: Settings) -> dict:
    if settings.api_key is None and not settings.base_url:
        raise ConfigurationError("No OpenAI API key and no base URL are set.")
    return {
        "api_key": settings.api_key.reveal() if settings.api_key else LOCAL_API_KEY,
        "base_url": settings.base_url or None,
        "organization": settings.organization,
        "project": settings.project,
        "timeout": sdk_timeout(settings),
        "max_retries": 0,
    }


# Enough to tell a page from a JSON answer; a longer body that is labelled HTML is not read here.
_PEEK_LIMIT = 1 << 20


def _labelled_html(response: httpx2.Response) -> bool:
    if not response.headers.get("content-type", "").lower().startswith("text/html"):
        return False
    # A gateway's 5xx page is a bad minute, retried like any 5xx; a 2xx/404/405 page is the wrong place.
    return response.is_success or response.status_code in (404, 405)


def _json_body(response: httpx2.Response) -> bool:
    return response.content.lstrip(b"\xef\xbb\xbf \t\r\n").startswith((b"{", b"["))


def _web_page_error(response: httpx2.Response) -> UnexpectedResponse:
    original = response.history[0].request if response.history else response.request
    url = original.url
    where = f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port else "")
    redirected = f" after a redirect to {response.request.url.path}" if response.history else ""
    kind = response.headers.get("content-type", "").split(";")[0]
    return UnexpectedResponse(
        f"{where} answered {original.method} {url.path} with a web page (HTTP {response.status_code}{redirected}, "
        f"{kind}), not the API's JSON.",
        status=response.status_code,
        request_id=response.headers.get("x-request-id"),
    )


def _known_length(response: httpx2.Response) -> bool:
    length = response.headers.get("content-length", "")
    return length.isdigit() and int(length) <= _PEEK_LIMIT


def _note_status(response: httpx2.Response) -> None:
    """Keep the status on the request, so a body that fails to arrive is known to follow a 2xx (billed: not re-sent).

    Not for an event stream: its events are read as they come, and a cut is a stream that stopped short.
    """
    if not response.headers.get("content-type", "").lower().startswith("text/event-stream"):
        response.request.extensions[ANSWERED] = response.status_code


def _refuse_web_pages(response: httpx2.Response) -> None:
    """A response hook: an HTML page where the API's answer belongs raises ``UnexpectedResponse``.

    A base URL without ``/v1``, a sign-in portal or a proxy answers with a web page. Left to the
    SDK, a 200 page becomes a ``str`` where a ``Response`` was expected (or a stream with no
    events), and a 404 page a "bad request" quoting HTML. The SDK accepts JSON under a wrong
    content-type (some servers label everything ``text/html``), so a body of known length is read
    and refused only if it is not JSON; a streamed (chunked) answer labelled HTML is refused
    unread, since reading it would end the streaming.
    """
    _note_status(response)
    if not _labelled_html(response):
        return
    if _known_length(response):
        response.read()
        if _json_body(response):
            return
    raise _web_page_error(response)


async def _refuse_web_pages_async(response: httpx2.Response) -> None:
    _note_status(response)
    if not _labelled_html(response):
        return
    if _known_length(response):
        await response.aread()
        if _json_body(response):
            return
    raise _web_page_error(response)


def build_sync_client(settings: Settings, *, strict: bool = False) -> openai.OpenAI:
    """The session's blocking client (asks, streaming)."""
    http_client = openai.DefaultHttpxClient(
        timeout=sdk_timeout(settings), limits=_limits(settings), event_hooks={"response": [_refuse_web_pages]}
    )
    return openai.OpenAI(**_credentials(settings), http_client=http_client, _strict_response_validation=strict)


def build_async_client(settings: Settings, *, strict: bool = False) -> openai.AsyncOpenAI:
    """The session's async client; use it only on the session's own loop (``_loop.LoopThread``)."""
    http_client = openai.DefaultAsyncHttpxClient(
        timeout=sdk_timeout(settings), limits=_limits(settings), event_hooks={"response": [_refuse_web_pages_async]}
    )
    return openai.AsyncOpenAI(**_credentials(settings), http_client=http_client, _strict_response_validation=strict)


async def create_response_dict(client: openai.AsyncOpenAI, body: dict[str, Any]) -> dict[str, Any]:
    """``await client.responses.create(**body)``, returning the response as a plain dict.

    Extraction's hot path. It is the SDK's documented low-level ``post`` ("making custom requests"):
    the same auth, headers, timeouts and typed ``APIStatusError``s, but without the per-call
    parameter transform and ``Response`` model construction, which cost about a third of the
    client CPU of every row (``benchmarks/extraction.py``). So ``body`` must already be plain JSON
    (no ``omit``, files or Pydantic objects), and readers of the result take dicts
    (``_extract._rows.classify`` and ``Usage.from_api`` do).
    """
    raw = await client.post("/responses", body=body, cast_to=httpx2.Response)
    try:
        response = json.loads(raw.content)
    except ValueError:
        response = None
    if not isinstance(response, dict):
        raise openai.APIResponseValidationError(raw, raw.text, message="The server's answer was not a JSON object.")
    return response
