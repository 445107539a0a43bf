"""Azure OpenAI: Microsoft Entra ID tokens from a token provider, and the client that sends them.

A token provider is any zero-argument callable that returns a bearer token (``azure-identity``'s
``get_bearer_token_provider(DefaultAzureCredential(), "https://cognitiveservices.azure.com/.default")``
is one; ``azure-identity`` is an optional extra). The SDK's ``AzureOpenAI`` calls its
``azure_ad_token_provider`` on every request and never retries a 401, so the provider is wrapped in a
``TokenCache``: a token is fetched when first needed, reused until shortly before it expires (the
``exp`` of an Entra ID token, a JWT), and fetched again once after the server answers 401 (``refresh_on_401``:
the token expired early, was revoked, or the clocks disagree). A 401 is not billed, so re-sending it is safe.

The endpoint shape follows the SDK: with an API version, ``AzureOpenAI`` (``{endpoint}/openai/responses
?api-version=...``, deployment names as models); without one, the v1 API (``{endpoint}/openai/v1/``) through
the plain ``OpenAI`` client, which takes the provider as its ``api_key`` callable, as Azure documents.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Generator, Iterable
from typing import Any

from ._errors import AuthenticationError, ConfigurationError, Scrubber, redact

__all__ = [
    "TokenCache",
    "TokenProviderError",
    "TokenScrubber",
    "azure_client_arguments",
    "refresh_on_401",
    "v1_base_url",
]

# Refresh this long before a token expires (or after half its life, for a short-lived one), as azure-identity does.
REFRESH_MARGIN = 300.0
# A token whose expiry cannot be read (not a JWT) is asked for again after this long.
UNKNOWN_LIFETIME = 300.0
# Tokens kept for the scrubber after they were replaced (a late answer may still quote one).
_KEPT_TOKENS = 4


class TokenProviderError(AuthenticationError):
    hint = (
        "The token provider given as Session(token_provider=...) failed, so nothing was sent. Check the credential "
        "it uses (`az login`, the managed identity, the service principal's secret) and try again."
    )


def token_expiry(token: str) -> tuple[float | None, float | None]:
    """``(issued_at, expires_at)`` in epoch seconds from a JWT's ``iat`` and ``exp`` claims, ``None`` where unknown.

    The signature is not checked: the token is ours to send, not to trust.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None, None
    try:
        payload = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, TypeError):
        return None, None
    if not isinstance(claims, dict):
        return None, None

    def number(name: str) -> float | None:
        value = claims.get(name)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    return number("iat"), number("exp")


class TokenCache:
    """A token provider's token, fetched when needed and reused until shortly before it expires.

    Thread-safe: one fetch at a time, however many requests need a token at once. Callable, so the SDK
    takes it as its ``azure_ad_token_provider`` (or ``api_key`` provider); its repr shows no token.
    """

    def __init__(self, provider: Callable[[], Any], *, clock: Callable[[], float] = time.time) -> None:
        if not callable(provider):
            raise TypeError("token_provider must be a zero-argument callable that returns a token")
        self.provider = provider
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0
        self._known: tuple[str, ...] = ()
        self.fetches = 0

    @property
    def name(self) -> str:
        """The provider's name, as displays show it (``get_token``)."""
        return getattr(self.provider, "__name__", None) or type(self.provider).__name__

    def __repr__(self) -> str:
        return f"<TokenCache of {self.name}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TokenCache) and other.provider is self.provider

    def __hash__(self) -> int:
        return id(self.provider)

    def __reduce__(self):
        raise TypeError("TokenCache cannot be pickled")

    def __call__(self) -> str:
        return self.token()

    def token(self) -> str:
        """The current token, fetched from the provider if there is none or it is about to expire."""
        with self._lock:
            if self._token is None or self._clock() >= self._refresh_at:
                self._fetch()
            return self._token  # type: ignore[return-value]

    def invalidate(self, token: str) -> None:
        """Forget ``token`` (the server refused it); a token fetched meanwhile by another request is kept."""
        with self._lock:
            if self._token == token:
                self._token = None

    @property
    def known(self) -> tuple[str, ...]:
        """The tokens handed out lately (the scrubber replaces them in everything a server sends)."""
        return self._known

    def _fetch(self) -> None:
        self.fetches += 1
        try:
            token = self.provider()
        except Exception as exc:  # noqa: BLE001 - a provider may raise anything; one clear error for all
            raise TokenProviderError(
                f"The token provider failed ({type(exc).__name__}: {redact(str(exc), *self._known)})"
            ) from None
        token = getattr(token, "token", token)  # an azure-identity AccessToken works too
        if not isinstance(token, str) or not token.strip():
            raise TokenProviderError(
                f"The token provider returned {type(token).__name__}, not a token (a non-empty string)."
            )
        token = token.strip()
        now = self._clock()
        issued, expires = token_expiry(token)
        if expires is None:
            self._refresh_at = now + UNKNOWN_LIFETIME
        else:
            life = expires - (issued if issued is not None else now)
            self._refresh_at = expires - min(REFRESH_MARGIN, max(life, 0.0) / 2)
        self._token = token
        self._known = (token, *(known for known in self._known if known != token))[:_KEPT_TOKENS]


class _AsyncToken:
    """``cache`` as the async ``OpenAI`` client asks for its key (awaited)."""

    __slots__ = ("_cache",)

    def __init__(self, cache: TokenCache) -> None:
        self._cache = cache

    async def __call__(self) -> str:
        return self._cache.token()

    def __repr__(self) -> str:
        return repr(self._cache)


def _bearer(request: Any) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def refresh_on_401(tokens: TokenCache) -> Any:
    """An ``httpx2.Auth`` that answers a 401 once: the token is dropped, a fresh one fetched, the request re-sent."""
    import httpx2  # noqa: PLC0415 - httpx2 stays out of `import nbopenai` (Settings loads this module)

    class RefreshOn401(httpx2.Auth):
        requires_request_body = True  # the body is sent again after a 401

        def auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response, None]:
            response = yield request
            used = _bearer(request)
            if response.status_code != 401 or used is None:
                return
            tokens.invalidate(used)
            request.headers["Authorization"] = f"Bearer {tokens.token()}"
            yield request

    return RefreshOn401()


def v1_base_url(endpoint: str) -> str:
    """The v1 API's base URL of an Azure resource endpoint (``https://NAME.openai.azure.com`` -> ``.../openai/v1/``)."""
    endpoint = endpoint.rstrip("/")
    if endpoint.endswith("/openai/v1"):
        return endpoint + "/"
    endpoint = endpoint.removesuffix("/openai")
    return endpoint + "/openai/v1/"


def azure_client_arguments(
    settings: Any, key: Callable[[], Any] | None, *, asynchronous: bool
) -> tuple[bool, dict[str, Any]]:
    """Whether to build the SDK's ``AzureOpenAI`` (an API version is set) rather than the v1 ``OpenAI``, and the
    arguments for it: the endpoint and either the token cache or ``key`` (the session's key, wrapped for the SDK)."""

    tokens: TokenCache | None = settings.token_provider
    if tokens is None and key is None:
        raise ConfigurationError(
            "An Azure endpoint is set, but neither a token provider nor an API key.",
            hint="Pass Session(token_provider=...) for Entra ID, or set AZURE_OPENAI_API_KEY (or pass api_key=...).",
        )
    if settings.api_version:
        credential = {"azure_ad_token_provider": tokens} if tokens is not None else {"api_key": key}
        return True, {"azure_endpoint": settings.azure_endpoint, "api_version": settings.api_version, **credential}
    if tokens is not None:
        key = _AsyncToken(tokens) if asynchronous else tokens
    return False, {"base_url": v1_base_url(settings.azure_endpoint), "api_key": key}


class TokenScrubber(Scrubber):
    """A scrubber that also knows the token cache's current tokens (they change as tokens are refreshed)."""

    __slots__ = ("_fixed", "_seen", "_tokens")

    def __init__(self, secrets: Iterable[str], tokens: TokenCache) -> None:
        self._fixed = tuple(secrets)
        self._tokens = tokens
        self._seen: tuple[str, ...] = ()
        super().__init__(self._fixed)

    def _follow(self) -> None:
        known = self._tokens.known
        if known != self._seen:
            self._seen = known
            super().__init__(self._fixed + known)

    def __bool__(self) -> bool:
        return True

    def text(self, text: str) -> str:
        self._follow()
        return super().text(text)

    def data(self, data: bytes) -> bytes:
        self._follow()
        return super().data(data)

    def split(self, data: bytes) -> tuple[bytes, bytes]:
        self._follow()
        return super().split(data)
