"""The one request builder: a call's parameters from the session's settings and the call's overrides.

``%%ask`` and ``%%extract`` both start from ``request_params``; each then adds what only it sends
(the conversation input, tools; the JSON schema). Which setting goes where in the request is said
once, by the ``request`` path of its ``Settings`` field (``reasoning_effort`` -> ``reasoning.effort``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._settings import Settings, check_fields, per_call

__all__ = ["RequestOptions", "request_params"]


@dataclass(frozen=True)
class RequestOptions:
    """Per-call overrides of the session's request settings (``None``: the session's), checked by their rules.

    ``AskOptions`` and ``ExtractOptions`` extend it, so both accept every request setting and a new
    one (a field here and its ``Settings`` field) reaches ``%%ask``, ``%%extract`` and their flags.
    """

    model: str | None = None
    instructions: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    reasoning: str | None = per_call("reasoning_effort")
    verbosity: str | None = None

    def __post_init__(self) -> None:
        check_fields(self)

    def overrides(self) -> dict[str, Any]:
        """These options keyed by the setting each overrides (``reasoning`` -> ``reasoning_effort``)."""
        return {f.metadata.get("setting", f.name): getattr(self, f.name) for f in request_option_fields()}


def request_option_fields() -> tuple[dataclasses.Field, ...]:
    """The fields of ``RequestOptions`` (not those a subclass adds)."""
    return dataclasses.fields(RequestOptions)


# Each setting that goes into a request, and where (``reasoning_effort`` -> ``reasoning.effort``).
_REQUEST_PATHS = tuple(
    (f.name, f.metadata["request"]) for f in dataclasses.fields(Settings) if f.metadata.get("request")
)


def request_params(settings: Settings, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The request parameters every call shares: each setting with a request path, the override (not ``None``) winning.

    ``overrides`` is keyed by setting name (``RequestOptions.overrides()``; ``store`` too). Unset
    settings are left out, so the server's defaults apply.
    """
    overrides = overrides or {}
    params: dict[str, Any] = {}
    for name, path in _REQUEST_PATHS:
        value = overrides.get(name)
        if value is None:
            value = getattr(settings, name)
        if value is None:
            continue
        *parents, leaf = path
        target = params
        for key in parents:
            target = target.setdefault(key, {})
        target[leaf] = value
    return params
