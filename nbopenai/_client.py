"""The one network seam: a session's ``OpenAI`` / ``AsyncOpenAI`` pair, built once.

Both clients share the session's settings: granular timeouts (connect, read, write, pool),
connection pools sized for extraction's concurrency, and ``max_retries=0`` because retries are
ours (see ``_retry``). The key is handed to the SDK and nowhere else.
"""

from __future__ import annotations

import json
from typing import Any

import httpx2
import openai

from ._errors import ConfigurationError
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


def build_sync_client(settings: Settings, *, strict: bool = False) -> openai.OpenAI:
    """The session's blocking client (asks, streaming)."""
    return openai.OpenAI(
        **_credentials(settings),
        http_client=openai.DefaultHttpxClient(timeout=sdk_timeout(settings), limits=_limits(settings)),
        _strict_response_validation=strict,
    )


def build_async_client(settings: Settings, *, strict: bool = False) -> openai.AsyncOpenAI:
    """The session's async client; use it only on the session's own loop (``_loop.LoopThread``)."""
    return openai.AsyncOpenAI(
        **_credentials(settings),
        http_client=openai.DefaultAsyncHttpxClient(timeout=sdk_timeout(settings), limits=_limits(settings)),
        _strict_response_validation=strict,
    )


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
