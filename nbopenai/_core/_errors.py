"""The exception tree of nbopenai.

Every failure the core can report is one of these; the IPython layer turns each into one short
message (what happened, what to do) without an SDK traceback. All carry ``message`` and ``hint``.

    NbOpenAIError
     ├── ConfigurationError        no API key and no base URL, a bad setting
     ├── UsageError                 bad arguments to a magic or an API function
     ├── BudgetExceeded             the session's cost or token cap would be passed
     ├── SchemaError                a Pydantic model unfit for strict structured output
     └── APIError                   the API (or the network) failed; has ``status`` and ``request_id``
          ├── AuthenticationError   401 / 403
          ├── RateLimitError        429, after every retry
          ├── BadRequestError       400 / 404 / 422
          │    └── ContextLengthExceeded
          ├── ServerError           5xx, after every retry
          │    └── APIUnavailable   the circuit breaker is open: the service keeps failing (outage)
          ├── TimeoutError          connect / read / write / pool timeout, after every retry
          ├── ConnectionError       could not reach the server, after every retry
          ├── UnreadableAnswer      a 2xx whose body was cut short or corrupt: billed, not re-sent
          ├── UnexpectedResponse    the server answered, but not as the API does (an HTML page from
          │                         a proxy, a sign-in portal, or a base URL that is a web app)
          └── StreamError           the response failed mid-stream (``error`` event, ``response.failed``)

A response that ends ``incomplete`` is not an error: the answer carries ``status="incomplete"``.
None of these subclass ``BaseException`` directly, so ``except Exception`` catches them all.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus, unquote

from ._waits import ANSWERED, describe_wait, retry_after, unreadable_answer

__all__ = [
    "NbOpenAIError",
    "ConfigurationError",
    "UsageError",
    "BudgetExceeded",
    "SchemaError",
    "APIError",
    "AuthenticationError",
    "RateLimitError",
    "BadRequestError",
    "ContextLengthExceeded",
    "PreviousResponseNotFound",
    "ServerError",
    "APIUnavailable",
    "TimeoutError",
    "ConnectionError",
    "StreamError",
    "UnexpectedResponse",
    "UnreadableAnswer",
    "describe",
    "redact",
    "shown_url",
    "url_credentials",
    "Scrubber",
    "translate",
]

# Anything shaped like an OpenAI key (sk-..., sk-proj-..., sess-...) or a bearer token.
_KEY_PATTERN = re.compile(r"(sk-[A-Za-z0-9_\-]{6,}|sess-[A-Za-z0-9_\-]{6,}|Bearer\s+[A-Za-z0-9_\-\.]{6,})")


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every known secret and anything shaped like an API key replaced by ``***``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return _KEY_PATTERN.sub("***", text)


# scheme://userinfo@ : the user info runs to the authority's last "@" (as urlsplit reads it).
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://)([^/?#]*)@")


def shown_url(url: str | None) -> str | None:
    """``url`` as it may be shown: credentials in it (``http://user:password@host``) become ``***``."""
    return _USERINFO.sub(r"\1***@", url) if url else url


def url_credentials(url: str | None) -> tuple[str, ...]:
    """The credentials a URL carries, in every form a server could echo them (raw, decoded, as Basic auth)."""
    found = _USERINFO.match(url or "")
    if not found:
        return ()
    userinfo = found.group(2)
    user, _, password = userinfo.partition(":")
    basic = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
    return tuple(
        dict.fromkeys(value for value in (userinfo, unquote(userinfo), password, unquote(password), basic) if value)
    )


def echo_forms(secret: str) -> set[str]:
    """``secret`` in every form a server may quote it in: as is, in a JSON string that escapes '/', percent-encoded,
    and inside base64 (standard or URL-safe) at each of its three alignments (the groups it fills whole)."""
    forms = {secret, json.dumps(secret)[1:-1].replace("/", "\\/"), quote(secret, safe=""), quote_plus(secret, safe="")}
    for offset in range(3):
        padded = b"\0" * offset + secret.encode()
        whole = base64.b64encode(padded)[4 if offset else 0 : len(padded) // 3 * 4].decode()
        forms |= {whole, whole.replace("+", "-").replace("/", "_")}
    return forms


class Scrubber:
    """A session's own secrets, and the one rule that keeps them out of what a server sends.

    Built from ``Settings.secrets`` (the key, the base URL's credentials, in each form a server
    could echo them). The client's response hook passes every header and body through it where
    they enter the package (``_core._client``), so a proxy that quotes the request's
    ``Authorization`` header in an error event, a failed response or a file cannot get the key
    into an answer, the ledger, a frame or a notebook. Only exact secrets are replaced in bodies
    (a pattern would rewrite answers that merely talk about keys), and only those of 8 characters
    or more (a shorter one would rewrite ordinary words).
    """

    MIN_LENGTH = 8

    __slots__ = ("_texts", "_bytes")

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first: a secret that contains another (user:password, password) goes whole.
        forms = {form for secret in secrets if secret for form in echo_forms(secret)}
        kept = sorted({form for form in forms if len(form) >= self.MIN_LENGTH}, key=len, reverse=True)
        self._texts = tuple(kept)
        self._bytes = tuple(secret.encode() for secret in kept)

    def __bool__(self) -> bool:
        return bool(self._texts)

    def __repr__(self) -> str:
        return f"<Scrubber of {len(self._texts)} secret(s)>"

    def __reduce__(self):
        raise TypeError("Scrubber cannot be pickled")

    def text(self, text: str) -> str:
        """``text`` with every secret (and anything shaped like a key) replaced by ``***``."""
        return redact(text, *self._texts)

    def data(self, data: bytes) -> bytes:
        """``data`` with every secret replaced by ``***``."""
        for secret in self._bytes:
            if secret in data:
                data = data.replace(secret, b"***")
        return data

    def split(self, data: bytes) -> tuple[bytes, bytes]:
        """``data`` scrubbed and cut in two: what can go on now, and a tail that may begin a secret.

        For a body that arrives in chunks: the tail is held back and put before the next chunk,
        so a secret split across two chunks is still caught whole.
        """
        data = self.data(data)
        cut = len(data)
        for secret in self._bytes:
            start = data.find(secret[:1], max(0, len(data) - len(secret) + 1))
            while start != -1 and start < cut:
                if secret.startswith(data[start:]):
                    cut = start
                    break
                start = data.find(secret[:1], start + 1)
        return data[:cut], data[cut:]


def describe(value: object) -> str:
    """``value`` for an error message: its repr if a short plain value, else only its type.

    A message must not dump what the user passed by mistake (a 500-row DataFrame, a class).
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        text = repr(value)
        if len(text) <= 60:
            return text
        return f"a str of {len(value):,} characters" if isinstance(value, str) else f"a {type(value).__name__}"
    kind = type(value)
    if isinstance(value, type):
        return f"the class {value.__qualname__}"
    return f"a {kind.__module__.split('.')[0] + '.' if kind.__module__ != 'builtins' else ''}{kind.__qualname__}"


class NbOpenAIError(Exception):
    """Base class. ``message`` says what happened, ``hint`` what to do about it."""

    hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = redact(message)
        if hint is not None:
            self.hint = hint
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.message}\n{self.hint}" if self.hint else self.message


class ConfigurationError(NbOpenAIError):
    hint = (
        "Set OPENAI_API_KEY (and OPENAI_BASE_URL for a compatible endpoint) before starting, or in the running "
        "kernel: `os.environ['OPENAI_API_KEY'] = getpass.getpass()`; the next ask uses it. For the offline demo "
        "server: `%nbopenai local`, or `session = nbopenai.Session(local=True)` then `session.ask(...)`."
    )


class UsageError(NbOpenAIError):
    pass


class BudgetExceeded(NbOpenAIError):
    hint = (
        "Raise the budget (`%config AskMagics.budget_usd = ...` or `Session(budget_usd=...)`) or start a new session."
    )


class SchemaError(NbOpenAIError):
    hint = "Change the Pydantic model as listed; nothing was sent."


class APIError(NbOpenAIError):
    hint = "Try again later; if it persists, check https://status.openai.com."

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        code: str | None = None,
        hint: str | None = None,
        partial_text: str = "",
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.request_id = request_id
        self.code = code
        # Text that had streamed before the failure (kept on screen, marked partial).
        self.partial_text = partial_text


class AuthenticationError(APIError):
    hint = (
        "The server did not accept the key. Set the right one in the running kernel, "
        "`os.environ['OPENAI_API_KEY'] = getpass.getpass()` (or OPENAI_BASE_URL for another endpoint): "
        "the next ask uses it, no restart needed. A key given as `Session(api_key=...)` changes with "
        "`session.configure(api_key=...)`."
    )


class RateLimitError(APIError):
    hint = "Rate limited even after retries: wait a minute, lower --concurrency, or raise the retry count."


class BadRequestError(APIError):
    hint = "The request was refused as invalid; check the model name and options (try --dry-run)."


class ContextLengthExceeded(BadRequestError):
    hint = "The thread is longer than the model's context window: run `%nbopenai compact` or start fresh with --new."
    # When the prompt itself is too long, neither compacting nor --new helps.
    SHORTEN = (
        "Shorten the prompt: a `{name}` inserts the whole value (pass a slice or a summary instead), "
        "or choose a model with a larger context window (-m)."
    )

    def name_thread(self, thread: str, *, fresh: bool = False) -> ContextLengthExceeded:
        """Point the hint at the thread that overflowed; ``fresh``: it held nothing before this prompt."""
        if fresh:
            self.hint = f"The prompt alone is too long (thread {thread!r} held nothing before it). {self.SHORTEN}"
            return self
        self.hint = (
            f"Thread {thread!r} is longer than the model's context window: run `%nbopenai compact -t {thread}` "
            f"(or `session.compact({thread!r})`), or start fresh with --new."
        )
        return self


class PreviousResponseNotFound(BadRequestError):
    """The response a thread chains to (``previous_response_id``) is no longer on the server: stored
    responses expire, and can be deleted. A refusal, so nothing was billed for it.

    ``resendable`` is set by the ask that got it when every attempt of its request was refused with an
    HTTP answer (none was cut after sending, which may have been billed): the turn may then be sent
    once more with the thread's turns as input instead (``_turns._ask.chained``).
    """

    hint = (
        "The thread's stored response is gone from the server (responses expire, or it was deleted). Re-run the "
        "cell: an ask sends the thread's turns again as input when the server no longer has them. Or start the "
        "thread over with --new."
    )
    resendable = False


class ServerError(APIError):
    hint = "The server failed even after retries; try again in a moment."


class APIUnavailable(ServerError):
    """Failures in a row (5xx, timeouts, dropped connections): nothing is sent until the service answers again."""

    hint = "The service looks down; wait a little and re-run (https://status.openai.com shows OpenAI's outages)."


class TimeoutError(APIError):  # noqa: A001 - deliberately mirrors the builtin's name inside our namespace
    hint = "The server took too long; raise the timeout (`%config AskMagics.read_timeout = 120`) or try again."


class ConnectionError(APIError):  # noqa: A001
    hint = "Could not reach the server; check OPENAI_BASE_URL and your network (or run `%nbopenai local`)."


class UnexpectedResponse(APIError):
    """The server answered, but not with the API's JSON or event stream: nothing to retry."""

    hint = (
        "Check the base URL (OPENAI_BASE_URL, or base_url=): it must be the API's root, ending in /v1 "
        "(https://api.openai.com/v1 for OpenAI); a proxy or sign-in page may also be in the way."
    )


class UnreadableAnswer(APIError):
    """The server answered 2xx, but its body could not be read: the answer is billed and was not sent again."""

    hint = (
        "Re-run to ask again (that is billed again). If it keeps happening, something between you and the API "
        "(a proxy, a VPN, the network) is cutting or corrupting answers."
    )


class StreamError(APIError):
    """The response failed after it started; ``partial_text`` is what arrived before."""

    hint = "The answer stopped part-way; the thread is unchanged, so re-run the cell to try again."


_BAD_BASE_URL = (
    "Fix OPENAI_BASE_URL (or base_url=): the API's root, e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1."
)


def translate(exc: BaseException, *, attempts: int = 1, partial_text: str = "") -> NbOpenAIError:
    """Turn an SDK/network exception into one of ours, with the key scrubbed from every word."""
    error = _translate(exc, attempts)
    # A server may echo the request's credentials in its error (a proxy quoting the headers); the
    # key-shaped pattern misses keys of other shapes, so scrub exactly what this request sent.
    if sent := _sent_credentials(exc):
        error.message = redact(error.message, *sent)
        error.args = (error.message,)
    if isinstance(error, APIError) and partial_text:
        error.partial_text = partial_text
        if isinstance(error, ConnectionError):  # it had connected: say what really happened
            error.message = (
                f"The connection dropped mid-stream ({type(exc.__cause__ or exc).__name__}); "
                "the text so far is kept and marked partial."
            )
            error.args = (error.message,)
    return error


def _sent_credentials(exc: BaseException) -> tuple[str, ...]:
    try:
        headers = exc.request.headers  # type: ignore[attr-defined]  # the SDK's errors keep their request
    except (AttributeError, RuntimeError):  # httpx raises RuntimeError for an unset request
        return ()
    found = []
    for name in ("authorization", "api-key"):
        value = headers.get(name) or ""
        found.append(value)
        scheme, _, token = value.partition(" ")
        if scheme.lower() in ("bearer", "basic"):
            found.append(token.strip())
    found.extend(url_credentials(str(exc.request.url)))  # type: ignore[attr-defined]
    return tuple(value for value in found if value)


def _waited(error: APIError, exc: BaseException) -> APIError:
    """``error`` with the wait the server asked for (``retry-after``, "try again in 2s") in its hint."""

    asked = retry_after(exc)
    if asked is not None and asked >= 1:
        error.hint = (
            f"The server asked to wait {describe_wait(asked)} before trying again: re-run the cell after that"
            f"{' (or lower --concurrency)' if isinstance(error, RateLimitError) else ''}."
        )
    return error


def _translate(exc: BaseException, attempts: int) -> NbOpenAIError:
    import httpx2  # noqa: PLC0415 - the SDK stays out of `import nbopenai`
    import openai  # noqa: PLC0415 - the SDK (a core dependency) stays out of `import nbopenai`

    if isinstance(exc, NbOpenAIError):
        return exc
    if isinstance(exc, httpx2.InvalidURL):  # the SDK parses the base URL when the client is built
        return ConfigurationError(f"The base URL is not a valid URL ({exc}).", hint=_BAD_BASE_URL)
    tries = f" after {attempts} attempt{'s' if attempts != 1 else ''}" if attempts > 1 else ""
    if unreadable_answer(exc):
        cause = exc.__cause__ or exc
        return UnreadableAnswer(
            f"The server answered, but its answer could not be read ({type(cause).__name__}: {cause}); it is billed, "
            "so it was not sent again (tokens estimated in the ledger).",
            status=exc.request.extensions.get(ANSWERED),
        )
    if isinstance(exc, openai.APITimeoutError):
        return TimeoutError(f"The request timed out{tries}.")
    if isinstance(exc, openai.APIConnectionError):
        return ConnectionError(f"Could not connect to the API{tries} ({type(exc.__cause__ or exc).__name__}).")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        body = exc.body if isinstance(exc.body, dict) else {}
        detail = body.get("error", body) if isinstance(body.get("error", body), dict) else {}
        code = detail.get("code") or getattr(exc, "code", None)
        server_says = detail.get("message") or exc.message
        fields = {"status": status, "request_id": exc.request_id, "code": code}
        text = f"{server_says} (HTTP {status}{tries})"
        if code == "context_length_exceeded":
            return ContextLengthExceeded(f"The input is longer than the model's context window: {text}", **fields)
        # The API says 400 with this code; a 404 naming the parameter is the same refusal (compatible servers).
        named = detail.get("param") == "previous_response_id"
        if (code == "previous_response_not_found" and status in (400, 404)) or (named and status == 404):
            return PreviousResponseNotFound(f"The API no longer has the thread's last response: {text}", **fields)
        if status in (401, 403):
            return AuthenticationError(f"The API refused the credentials: {text}", **fields)
        if status == 429:
            return _waited(RateLimitError(f"Rate limited: {text}", **fields), exc)
        if status >= 500:
            return _waited(ServerError(f"The API failed: {text}", **fields), exc)
        return BadRequestError(f"The API rejected the request: {text}", **fields)
    if isinstance(exc, openai.APIResponseValidationError):
        return UnexpectedResponse(
            f"The server's answer was not the API's JSON (HTTP {exc.status_code}): {exc.message}",
            status=exc.status_code,
        )
    if isinstance(exc, openai.APIError):  # raised mid-stream from the nested `error` event
        code = getattr(exc, "code", None)
        if code == "context_length_exceeded":
            return ContextLengthExceeded(
                f"The input is longer than the model's context window: {exc.message}", code=code
            )
        return StreamError(f"The response failed mid-stream: {exc.message}", code=code)
    return NbOpenAIError(f"{type(exc).__name__}: {exc}")
