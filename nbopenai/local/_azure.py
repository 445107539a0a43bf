"""Azure OpenAI's shape, offline: its URLs and rotating Microsoft Entra ID tokens.

URLs, as the SDK sends them: the v1 API under ``/openai/v1/...``; the versioned API under
``/openai/...?api-version=...`` (``AzureOpenAI`` with an ``api_version``), where the chat,
embeddings, images and audio routes go through ``/openai/deployments/{deployment}/...``. Each is
answered by the route of the same name under ``/v1``. A versioned path without ``api-version`` gets
Azure's 404.

Tokens: with ``token_lifetime`` set (seconds), every request must carry ``Authorization: Bearer``
with a token this server issued (``server.issue_token()``, what a test's token provider returns):
JWT-shaped, signed by the server, valid ``token_lifetime`` seconds. ``server.expire_tokens()`` ends
every token issued so far (as a clock jump or a revocation would), and ``expire_tokens_after=N``
does so once, on its own, after N requests were let in (a token that expires mid-extraction).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from typing import Any

from ._errors import ApiError

__all__ = ["TokenIssuer", "azure_path"]

_DEPLOYMENT_PREFIX = "/openai/deployments/"


def azure_path(path: str, query: dict[str, str]) -> str:
    """The ``/v1`` route that answers Azure's ``path`` (any other path is returned as it is)."""
    if path == "/openai/v1" or path.startswith("/openai/v1/"):
        return path[len("/openai"):]
    if not path.startswith("/openai/"):
        return path
    if not query.get("api-version"):
        raise ApiError(404, "Resource not found: the versioned Azure OpenAI API needs an api-version query parameter.",
                       code="404")
    rest = path[len("/openai"):]
    if path.startswith(_DEPLOYMENT_PREFIX):
        _, _, rest = path[len(_DEPLOYMENT_PREFIX):].partition("/")
        rest = "/" + rest
    return "/v1" + rest


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenIssuer:
    """The tokens a server issued: signed, dated, and ended all at once by ``expire_all``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key = secrets.token_bytes(32)
        self._generation = 0  # tokens of an older generation are expired
        self.issued = 0
        self.admitted = 0  # requests let in with a valid token
        self._expired_on_schedule = False

    def issue(self, lifetime: float) -> str:
        """A new token valid for ``lifetime`` seconds (``iat``/``exp`` claims, as Entra ID's)."""
        now = time.time()
        with self._lock:
            self.issued += 1
            claims = {"iat": now, "exp": now + lifetime, "gen": self._generation, "jti": secrets.token_hex(8),
                      "aud": "https://cognitiveservices.azure.com"}
        head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = _b64(json.dumps(claims).encode())
        signature = _b64(hmac.new(self._key, f"{head}.{body}".encode(), hashlib.sha256).digest())
        return f"{head}.{body}.{signature}"

    def expire_all(self) -> None:
        with self._lock:
            self._generation += 1

    def admit(self, headers: dict[str, str], expire_after: int | None) -> None:
        """Let a request in, or raise the 401 Azure sends for a missing, forged or expired token."""
        scheme, _, token = headers.get("authorization", "").partition(" ")
        claims = self._claims(token.strip()) if scheme.lower() == "bearer" else None
        if claims is None:
            raise _unauthorized("Access denied due to invalid subscription key or wrong API endpoint, or a missing "
                                "or invalid bearer token.")
        with self._lock:
            if claims.get("gen") != self._generation or time.time() >= claims.get("exp", 0):
                raise _unauthorized("Lifetime validation failed, the token is expired.")
            self.admitted += 1
            if expire_after is not None and self.admitted >= expire_after and not self._expired_on_schedule:
                self._expired_on_schedule = True
                self._generation += 1  # this request is in; the next one with this token is not

    def _claims(self, token: str) -> dict[str, Any] | None:
        parts = token.split(".")
        if len(parts) != 3:
            return None
        expected = hmac.new(self._key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        try:
            if not hmac.compare_digest(_unb64(parts[2]), expected):
                return None
            claims = json.loads(_unb64(parts[1]))
        except ValueError:
            return None
        return claims if isinstance(claims, dict) else None


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, message, type="invalid_request_error", code="401")
