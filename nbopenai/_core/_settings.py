"""Frozen settings: what a session needs to know, as plain values.

The IPython layer builds these from traitlets; scripts build them directly or from the environment.
The core never reaches back into IPython for configuration.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

__all__ = [
    "ENVIRONMENT", "EnvironmentWatch", "Secret", "Timeouts", "Settings", "default_data_dir", "environment_values",
    "shown_url", "url_credentials",
]

LOCAL_MODEL = "nbopenai-local"

# The environment variable each setting is read from (``Settings.from_env``).
ENVIRONMENT = {
    "api_key": "OPENAI_API_KEY",
    "base_url": "OPENAI_BASE_URL",
    "organization": "OPENAI_ORG_ID",
    "project": "OPENAI_PROJECT_ID",
    "model": "NBOPENAI_MODEL",
}
DEFAULT_MODEL = "gpt-4.1-mini"


class Secret:
    """An API key that never shows itself: ``repr``/``str`` give ``sk-...abcd`` at most."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    @property
    def masked(self) -> str:
        v = self._value
        if len(v) < 12:
            return "***"
        prefix = "sk-" if v.startswith("sk-") else ""
        return f"{prefix}...{v[-4:]}"

    def __repr__(self) -> str:
        return f"Secret({self.masked!r})"

    __str__ = masked.fget  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self):  # never pickled into a saved object with its value
        raise TypeError("Secret cannot be pickled")


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
    return tuple(dict.fromkeys(value for value in (userinfo, unquote(userinfo), password, unquote(password), basic) if value))


@dataclass(frozen=True)
class Timeouts:
    """Seconds allowed for each phase of a request (``None`` means no limit)."""

    connect: float | None = 5.0
    read: float | None = 120.0
    write: float | None = 30.0
    pool: float | None = 10.0


def default_data_dir() -> Path:
    """Per-user data folder: ``$NBOPENAI_HOME``, else the platform's user data directory."""
    if env := os.environ.get("NBOPENAI_HOME"):
        return Path(env).expanduser()
    if os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif os.uname().sysname == "Darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "nbopenai"


def per_minute_problem(name: str, value: object) -> str | None:
    """What is wrong with ``value`` as a per-minute limit (``rpm``, ``tpm``), or None if nothing."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return None
    return f"{name} must be a whole number of at least 1 (a limit per minute), or None to learn it from the API's headers"


@dataclass(frozen=True)
class Settings:
    """Everything configurable about a session. Build with ``Settings.from_env(**overrides)``.

    Parameters
    ----------
    api_key, base_url
        Credentials and endpoint; default from ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``.
    model, instructions, temperature, max_output_tokens, reasoning_effort
        Request defaults; every call can override them.
    store
        ``True`` chains turns on the server with ``previous_response_id``; ``False`` keeps the
        conversation items client-side and re-sends them (for organisations that cannot store).
    timeouts, max_attempts, backoff_base, backoff_max
        Network policy: granular timeouts, attempts per request (1 = no retry), full-jitter backoff.
    ledger_path
        SQLite file of the usage ledger, or ``":memory:"``; default ``<data dir>/usage.sqlite3``.
    prices_path
        A JSON price table that overrides/extends the shipped one.
    budget_usd, budget_tokens
        Optional per-session caps; a call that would pass one is refused before sending.
    max_retry_wait
        The longest ``retry-after`` (seconds) a request waits out; a server asking for longer ends it,
        and the error says how long it asked for.
    outage_timeout
        Seconds an outage (5xx, timeouts, dropped connections in a row: the circuit breaker is open) may
        last before an extraction stops, keeping its finished rows; ``%%ask`` fails at once while open.
    rpm, tpm
        Requests and tokens per minute your account allows; extraction paces itself to them. Learned
        from the ``x-ratelimit-*`` headers when not given.
    concurrency
        Parallel requests for extraction.
    update_rate
        Live display refreshes per second at most.
    """

    api_key: Secret | None = None
    base_url: str | None = None
    organization: str | None = None
    project: str | None = None
    model: str = DEFAULT_MODEL
    instructions: str | None = None
    temperature: float | None = None
    max_output_tokens: int | None = None
    reasoning_effort: str | None = None
    store: bool = True
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_attempts: int = 4
    backoff_base: float = 0.5
    backoff_max: float = 20.0
    ledger_path: str | None = None
    prices_path: str | None = None
    budget_usd: float | None = None
    budget_tokens: int | None = None
    max_retry_wait: float = 120.0
    outage_timeout: float = 15.0
    rpm: int | None = None
    tpm: int | None = None
    concurrency: int = 16
    update_rate: float = 20.0

    def __post_init__(self) -> None:
        if isinstance(self.api_key, str):
            object.__setattr__(self, "api_key", Secret(self.api_key))
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.update_rate <= 0:
            raise ValueError("update_rate must be positive")
        if not self.max_retry_wait >= 0:
            raise ValueError("max_retry_wait must be 0 or more (seconds)")
        if not self.outage_timeout > 0:
            raise ValueError("outage_timeout must be positive (seconds)")
        for name in ("rpm", "tpm"):
            if problem := per_minute_problem(name, getattr(self, name)):
                raise ValueError(problem)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "Settings":
        """Settings from ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, ``OPENAI_ORG_ID``, ``OPENAI_PROJECT_ID`` and ``NBOPENAI_MODEL``; ``overrides`` win."""
        values = environment_values(env)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def __repr__(self) -> str:  # the dataclass's own, with the base URL's credentials masked
        fields = ", ".join(
            f"{f.name}={shown_url(self.base_url) if f.name == 'base_url' else getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
        )
        return f"Settings({fields})"

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every credential this session sends: the API key and the base URL's user info (see ``Scrubber``)."""
        return ((self.api_key.reveal(),) if self.api_key else ()) + url_credentials(self.base_url)

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)

    @property
    def resolved_ledger_path(self) -> str:
        if self.ledger_path:
            return self.ledger_path
        return str(default_data_dir() / "usage.sqlite3")


def environment_values(env: Mapping[str, str] | None = None, fields: Iterable[str] = ENVIRONMENT) -> dict[str, Any]:
    """The settings among ``fields`` that ``env`` (default ``os.environ``) sets; an empty variable sets nothing."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for name in fields:
        if value := env.get(ENVIRONMENT[name]):
            values[name] = Secret(value) if name == "api_key" else value
    return values


class EnvironmentWatch:
    """The environment variables some settings were read from, to pick up their later changes.

    A key fixed in a running kernel (``os.environ["OPENAI_API_KEY"] = getpass()``) should reach the
    next request without a restart; a setting given explicitly is no longer watched (``forget``).
    """

    def __init__(self, fields: Iterable[str]) -> None:
        self._fields = tuple(name for name in fields if name in ENVIRONMENT)
        self._seen = self._read()

    def _read(self) -> tuple[str | None, ...]:
        return tuple(os.environ.get(ENVIRONMENT[name]) or None for name in self._fields)

    @property
    def fields(self) -> tuple[str, ...]:
        return self._fields

    def changes(self) -> dict[str, Any]:
        """The watched settings whose variable changed since the last call (``None`` where it was unset)."""
        now = self._read()  # a few dict lookups: cheap enough for every request
        if now == self._seen:
            return {}
        changed = [name for name, old, new in zip(self._fields, self._seen, now) if old != new]
        self._seen = now
        values = environment_values(fields=changed)
        return {name: values.get(name) for name in changed}

    def forget(self, fields: Iterable[str]) -> None:
        """Stop watching ``fields`` (the user set them explicitly)."""
        dropped = set(fields)
        kept = [(name, seen) for name, seen in zip(self._fields, self._seen) if name not in dropped]
        self._fields = tuple(name for name, _ in kept)
        self._seen = tuple(seen for _, seen in kept)
