"""The one network seam: a session's ``OpenAI`` / ``AsyncOpenAI`` pair, built once.

Both clients share the session's settings: granular timeouts (connect, read, write, pool),
connection pools sized for extraction's concurrency, and ``max_retries=0`` because retries are
ours (see ``_retry``). Two response hooks on their HTTP clients are where every server's bytes
enter the package: the first scrubs the session's secrets from every header and body (a proxy
may quote the request's ``Authorization`` header anywhere: an error event, a failed response, a
file), the second turns anything that is not the API's answer (a web page, plain text, bytes, a
501) into one clear ``UnexpectedResponse``. While a client lives, the HTTP stack's own log records
(raw response headers at DEBUG, each request's URL) pass the same scrubber. The key is handed to
the SDK, wrapped, and nowhere else.
"""

from __future__ import annotations

import json
import logging
import uuid
import weakref
from collections.abc import AsyncIterator, Iterator
from functools import partial
from typing import Any

import httpx2
import openai
from openai._models import construct_type
from openai._utils import maybe_transform
from openai.types.responses import Response, ResponseOutputMessage, ResponseStreamEvent
from openai.types.responses.response_create_params import ResponseCreateParamsStreaming

from ._azure import TokenScrubber, azure_client_arguments, refresh_on_401
from ._errors import ConfigurationError, Scrubber, UnexpectedResponse, translate
from ._retry import ANSWERED
from ._settings import Secret, Settings

__all__ = [
    "build_sync_client",
    "build_async_client",
    "create_response_dict",
    "idempotency_headers",
    "with_idempotency",
    "sdk_timeout",
    "whole_response",
    "LOCAL_API_KEY",
]

# Compatible servers without auth (the local demo, many self-hosted ones) still need a non-empty key.
LOCAL_API_KEY = "nbopenai-local-no-key"


def idempotency_headers() -> dict[str, str]:
    """An ``Idempotency-Key`` for one logical create: made once, sent with each of its attempts.

    OpenAI's API description declares the header on none of the endpoints nbopenai creates with
    (responses, conversations, files, batches), so there it changes nothing; a gateway that honours it
    answers a repeated key with the first answer. nbopenai's own rule does not rely on it: a create that
    may have been billed (a read timeout, an unreadable 2xx) is never re-sent (see ``_retry``).
    """
    return {"Idempotency-Key": f"nbopenai-{uuid.uuid4().hex}"}


def with_idempotency(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` for ``responses.create`` carrying a new ``idempotency_headers()`` (besides their own extra
    headers)."""
    return {**params, "extra_headers": {**idempotency_headers(), **(params.get("extra_headers") or {})}}


def sdk_timeout(settings: Settings) -> openai.Timeout:
    t = settings.timeouts
    return openai.Timeout(connect=t.connect, read=t.read, write=t.write, pool=t.pool)


def _limits(settings: Settings) -> httpx2.Limits:
    # Extraction's concurrency is chosen per call (`--concurrency 200`), so the pool must never be
    # the bottleneck: a ceiling as high as the SDK's own, and idle sockets kept for the usual case.
    return httpx2.Limits(max_connections=1000, max_keepalive_connections=max(100, settings.concurrency * 2))


def _client_arguments(settings: Settings, key: type[_Key], *, asynchronous: bool) -> tuple[type, dict]:
    """The SDK client class to build (``OpenAI``, or Azure's: see ``_azure``) and its arguments."""
    if settings.azure_endpoint:
        versioned, arguments = azure_client_arguments(
            settings, key(settings.api_key) if settings.api_key else None, asynchronous=asynchronous
        )
        common = {k: v for k, v in _credentials(settings, key).items() if k not in ("api_key", "base_url")}
        if versioned:
            return (openai.AsyncAzureOpenAI if asynchronous else openai.AzureOpenAI), {**common, **arguments}
        return (openai.AsyncOpenAI if asynchronous else openai.OpenAI), {**common, **arguments}
    return (openai.AsyncOpenAI if asynchronous else openai.OpenAI), _credentials(settings, key)


def _credentials(settings: Settings, key: type[_Key]) -> dict:
    if settings.api_key is None and not settings.base_url and not settings.azure_endpoint:
        raise ConfigurationError("No OpenAI API key and no base URL are set.")
    if settings.base_url:
        try:
            httpx2.URL(settings.base_url)
        except httpx2.InvalidURL as exc:  # here, not deep in the SDK: one clear error, nothing of the key
            raise translate(exc) from None
    return {
        "api_key": key(settings.api_key) if settings.api_key else LOCAL_API_KEY,
        "base_url": settings.base_url or None,
        "organization": settings.organization,
        "project": settings.project,
        "timeout": sdk_timeout(settings),
        "max_retries": 0,
    }


# ---- secrets: scrubbed where every response enters ------------------------------------------


class _Key:
    """The API key as the SDK asks for it (once per request): a frame or repr shows only the mask.

    Handed to the SDK instead of the string, so a verbose traceback through ``OpenAI.__init__``
    (``%xmode Verbose`` prints every frame's arguments) shows ``Secret('sk-...abcd')``.
    """

    __slots__ = ("_secret",)

    def __init__(self, secret: Secret) -> None:
        self._secret = secret

    def __call__(self) -> str:
        return self._secret.reveal()

    def __repr__(self) -> str:
        return repr(self._secret)


class _AsyncKey(_Key):
    __slots__ = ()

    async def __call__(self) -> str:  # type: ignore[override]  # the async client awaits its key provider
        return self._secret.reveal()


def _decoding(response: httpx2.Response) -> Any:
    """``response``'s raw stream, or (when it is compressed) a response over it that decodes it.

    The scrubber must see the bytes as sent, not gzip or br; ``response`` itself then carries them
    decoded, so its content-encoding (and the length that described the encoded body) goes.
    """
    encoding = ", ".join(response.headers.get_list("content-encoding"))
    if not encoding:
        return response.stream
    del response.headers["content-encoding"]
    response.headers.pop("content-length", None)
    return httpx2.Response(
        response.status_code, headers={"content-encoding": encoding}, stream=response.stream, request=response.request
    )


class _ScrubbedStream(httpx2.SyncByteStream):
    """A response body with the session's secrets replaced, chunk by chunk (a stream stays live)."""

    def __init__(self, source: Any, scrubber: Scrubber) -> None:
        self._source, self._scrubber = source, scrubber

    def __iter__(self) -> Iterator[bytes]:
        held = b""
        chunks = self._source.iter_bytes() if isinstance(self._source, httpx2.Response) else self._source
        for chunk in chunks:
            ready, held = self._scrubber.split(held + chunk)
            if ready:
                yield ready
        if held:
            yield self._scrubber.data(held)

    def close(self) -> None:
        self._source.close()


class _ScrubbedAsyncStream(httpx2.AsyncByteStream):
    """The async twin of ``_ScrubbedStream``."""

    def __init__(self, source: Any, scrubber: Scrubber) -> None:
        self._source, self._scrubber = source, scrubber

    async def __aiter__(self) -> AsyncIterator[bytes]:
        held = b""
        chunks = self._source.aiter_bytes() if isinstance(self._source, httpx2.Response) else self._source
        async for chunk in chunks:
            ready, held = self._scrubber.split(held + chunk)
            if ready:
                yield ready
        if held:
            yield self._scrubber.data(held)

    async def aclose(self) -> None:
        await self._source.aclose()


def _scrub_headers(response: httpx2.Response, scrubber: Scrubber) -> None:
    for name, value in list(response.headers.items()):
        if (clean := scrubber.text(value)) != value:
            response.headers[name] = clean


def _scrub(scrubber: Scrubber, response: httpx2.Response) -> None:
    """A response hook (the first): every header and body byte a server sends passes ``scrubber``."""
    _scrub_headers(response, scrubber)
    response.stream = _ScrubbedStream(_decoding(response), scrubber)


async def _scrub_async(scrubber: Scrubber, response: httpx2.Response) -> None:
    _scrub_headers(response, scrubber)
    response.stream = _ScrubbedAsyncStream(_decoding(response), scrubber)


# The HTTP stack's loggers that write below the response hook (httpcore2's DEBUG trace of the raw
# response headers) or the request URL (with any credentials in it: httpx2's "HTTP Request" line).
_NETWORK_LOGGERS = (
    "httpx2",
    "httpcore2.connection",
    "httpcore2.http11",
    "httpcore2.http2",
    "httpcore2.proxy",
    "httpcore2.socks",
)


class _ScrubbedLogs(logging.Filter):
    """Scrubs the network loggers' records (a notebook with DEBUG logging shows them) while a client lives."""

    def __init__(self, scrubber: Scrubber) -> None:
        super().__init__()
        self._scrubber = scrubber

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if (clean := self._scrubber.text(message)) != message:
            record.msg, record.args = clean, None
        return True


def _scrub_logs(client: Any, scrubber: Scrubber) -> None:
    """Filter the network loggers with ``scrubber`` until ``client`` is gone."""
    loggers = [logging.getLogger(name) for name in _NETWORK_LOGGERS]
    log_filter = _ScrubbedLogs(scrubber)
    for logger in loggers:
        logger.addFilter(log_filter)
    weakref.finalize(client, lambda: [logger.removeFilter(log_filter) for logger in loggers])


# ---- answers that are not the API's ----------------------------------------------------------

# Enough to tell a page from a JSON answer; a longer body that is not labelled JSON is not read here.
_PEEK_LIMIT = 1 << 20
# Statuses that say the URL or the method is wrong rather than the request: nothing to retry.
_WRONG_PLACE = frozenset({404, 405, 501})


def _content_type(response: httpx2.Response) -> str:
    return response.headers.get("content-type", "").split(";")[0].strip().lower()


def _asked_for_events(request: httpx2.Request) -> bool:
    """The request said ``"stream":true`` (the SDK writes compact JSON; inside a string the quotes are escaped)."""
    try:
        return b'"stream":true' in request.content
    except httpx2.RequestNotRead:  # an upload streamed from a file: not a stream request
        return False


def _suspect(response: httpx2.Response) -> bool:
    """Where JSON was asked for, a body labelled neither JSON nor (asked-for) events, with a status an
    answer or a wrong URL has.

    A gateway's 5xx page is a bad minute, retried like any 5xx; a file's content is asked for as
    ``application/binary`` and may be anything.
    """
    accept = response.request.headers.get("accept", "*/*")
    if "json" not in accept and "*/*" not in accept:
        return False
    kind = _content_type(response)
    if kind.endswith("json"):
        return False
    if kind == "text/event-stream":
        return not _asked_for_events(response.request)
    return response.is_success or response.status_code in _WRONG_PLACE


def _readable(response: httpx2.Response) -> bool:
    """Small enough to read and check; a long body labelled as a page is refused unread."""
    length = response.headers.get("content-length", "")
    if length.isdigit():
        return int(length) <= _PEEK_LIMIT
    return _content_type(response) != "text/html"


def _api_body(response: httpx2.Response) -> bool:
    """JSON (some servers label everything ``text/html``), or asked-for events under a wrong label."""
    start = response.content.lstrip(b"\xef\xbb\xbf \t\r\n")
    if start.startswith((b"{", b"[")):
        return True
    events = response.is_success and start.startswith((b"event:", b"data:", b":"))
    return events and _asked_for_events(response.request)


def is_response(data: Any) -> bool:
    """The API's ``response`` object; a 200 of ``{}`` or a gateway's ``{"error": ...}`` is not (one rule, all paths)."""
    return isinstance(data, dict) and data.get("object", "response") == "response" and "status" in data


def _creates_a_response(response: httpx2.Response) -> bool:
    """A 2xx JSON answer to ``POST .../responses`` (not events): its body must be a response object."""
    request = response.request
    return (response.is_success and request.method == "POST" and request.url.path.endswith("/responses")
            and _content_type(response).endswith("json") and not _asked_for_events(request))


def _not_the_api(response: httpx2.Response) -> UnexpectedResponse:
    original = response.history[0].request if response.history else response.request
    url = original.url
    where = f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port else "")
    redirected = f" after a redirect to {response.request.url.path}" if response.history else ""
    kind = _content_type(response) or "no content type"
    what = {"text/html": "a web page", "text/event-stream": "an event stream"}.get(kind, "something that is not JSON")
    if kind.endswith("json") and response.is_success and response.is_stream_consumed:
        what = "JSON that is not a response" if isinstance(_parsed(response), dict) else what
    return UnexpectedResponse(
        f"{where} answered {original.method} {url.path} with {what} (HTTP {response.status_code}{redirected}, "
        f"{kind}), not the API's JSON.",
        status=response.status_code,
        request_id=response.headers.get("x-request-id"),
    )


def _note_status(response: httpx2.Response) -> None:
    """Keep the status on the request, so a body that fails to arrive is known to follow a 2xx (billed: not re-sent).

    Not for an event stream: its events are read as they come, and a cut is a stream that stopped short.
    """
    if not response.headers.get("content-type", "").lower().startswith("text/event-stream"):
        response.request.extensions[ANSWERED] = response.status_code


def _refuse_non_api(response: httpx2.Response) -> None:
    """A response hook: an answer that is not the API's raises ``UnexpectedResponse`` (never retried).

    A base URL without ``/v1``, a sign-in portal, a proxy or a plain web server answers with a page,
    plain text or bytes. Left to the SDK, a 200 of that becomes a ``str`` where a ``Response`` was
    expected (or a stream with no events), a 404 a "bad request" quoting HTML, and a 501 (``python
    -m http.server`` refusing POST) a server error retried four times. The SDK accepts JSON under
    a wrong content-type, so a body of readable size is read and refused only if it is not JSON.
    """
    _note_status(response)
    if _creates_a_response(response) and _readable(response):  # the SDK would build a Response of anything
        response.read()
        if not is_response(_parsed(response)):
            raise _not_the_api(response)
    if not _suspect(response):
        return
    if _readable(response):
        response.read()
        if _api_body(response):
            return
    raise _not_the_api(response)


def _parsed(response: httpx2.Response) -> Any:
    """The body read as JSON (``None`` if it is not)."""
    try:
        return json.loads(response.content)
    except ValueError:
        return None


async def _refuse_non_api_async(response: httpx2.Response) -> None:
    _note_status(response)
    if not _suspect(response):
        return
    if _readable(response):
        await response.aread()
        if _api_body(response):
            return
    raise _not_the_api(response)


def whole_response(stream: Any) -> Any | None:
    """The complete response a server sent as JSON where events were asked for, else ``None``.

    Some servers and proxies ignore ``stream=true``; their answer is as good (and as billed), so
    it is used rather than read as a stream with no events. JSON that is not a response is not the API.
    """
    http = stream.response
    if _content_type(http) == "text/event-stream":
        return None
    if not http.read().lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
        return None  # events under another label: read as a stream
    try:
        data = json.loads(http.content)
    except ValueError:
        data = None
    if not is_response(data):
        raise _not_the_api(http)

    return Response.construct(**data)


# ---- the clients -------------------------------------------------------------------------------


def _http_client(settings: Settings, *, asynchronous: bool) -> Any:
    """The SDK's HTTP client with our hooks: the scrubber first (when there are secrets), then the API check."""
    tokens = settings.token_provider
    extra: dict[str, Any] = {}
    if tokens is not None:  # Entra ID tokens: scrubbed as they change, and a 401 refreshes one once (see _azure)
        scrubber: Scrubber = TokenScrubber(settings.secrets, tokens)
        extra["auth"] = refresh_on_401(tokens)
    else:
        scrubber = Scrubber(settings.secrets)
    scrub = partial(_scrub_async if asynchronous else _scrub, scrubber)
    refuse = _refuse_non_api_async if asynchronous else _refuse_non_api
    build = openai.DefaultAsyncHttpxClient if asynchronous else openai.DefaultHttpxClient
    client = build(
        timeout=sdk_timeout(settings),
        limits=_limits(settings),
        event_hooks={"response": [scrub, refuse] if scrubber else [refuse]},
        **extra,
    )
    if scrubber:
        _scrub_logs(client, scrubber)
    return client


def build_sync_client(settings: Settings, *, strict: bool = False) -> openai.OpenAI:
    """The session's blocking client (asks, streaming)."""
    client_class, arguments = _client_arguments(settings, _Key, asynchronous=False)
    http_client = _http_client(settings, asynchronous=False)
    return client_class(**arguments, http_client=http_client, _strict_response_validation=strict)


def prepare_sdk(body: dict[str, Any]) -> None:
    """Build now, in a warm-up, what the SDK builds lazily on a kernel's first streamed ask.

    Each costs the first ask of a fresh kernel before its first text shows, and nothing after:
    the validator of Responses stream events (about 0.7 s generating pydantic schemas for the union
    of every event type), the type hints behind its transform of ``body`` (about 15 ms), and the
    serializer of an output message (the ledger's copy of the answer). The SDK caches each; building
    them the way it does (``construct_type`` and ``maybe_transform``, not public API: an SDK without
    them is simply not warmed) leaves them ready. ``body`` is a request as an ask would send it.
    """
    construct_type(type_=ResponseStreamEvent, value={"type": "response.output_text.delta", "delta": ""})
    maybe_transform({**body, "stream": True}, ResponseCreateParamsStreaming)
    message = {"type": "message", "id": "msg", "role": "assistant", "status": "completed", "content": []}
    construct_type(type_=ResponseOutputMessage, value=message).model_dump(exclude_none=True)


def build_async_client(settings: Settings, *, strict: bool = False) -> openai.AsyncOpenAI:
    """The session's async client; use it only on the session's own loop (``_loop.LoopThread``)."""
    client_class, arguments = _client_arguments(settings, _AsyncKey, asynchronous=True)
    http_client = _http_client(settings, asynchronous=True)
    return client_class(**arguments, http_client=http_client, _strict_response_validation=strict)


async def create_response_dict(
    client: openai.AsyncOpenAI, body: dict[str, Any], *, headers: dict[str, str] | None = None
) -> tuple[dict[str, Any], httpx2.Headers]:
    """``await client.responses.create(**body)``, returning the response as a plain dict, and the answer's headers
    (``x-ratelimit-*``: extraction paces itself by them).

    Extraction's hot path. It is the SDK's documented low-level ``post`` ("making custom requests"):
    the same auth, headers, timeouts and typed ``APIStatusError``s, but without the per-call
    parameter transform and ``Response`` model construction, which cost about a third of the
    client CPU of every row (``benchmarks/extraction.py``). So ``body`` must already be plain JSON
    (no ``omit``, files or Pydantic objects), and readers of the result take dicts
    (``_extract._rows.classify`` and ``Usage.from_api`` do).
    """
    raw = await client.post("/responses", body=body, cast_to=httpx2.Response, options={"headers": headers or {}})
    try:
        response = json.loads(raw.content)
    except ValueError:
        response = None
    if not isinstance(response, dict):
        raise openai.APIResponseValidationError(raw, raw.text, message="The server's answer was not a JSON object.")
    if not is_response(response):
        raise _not_the_api(raw)
    return response, raw.headers
