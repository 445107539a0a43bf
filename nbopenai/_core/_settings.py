"""Frozen settings: what a session needs to know, as plain values, each checked by its rule.

The IPython layer builds these from traitlets; scripts build them directly or from the environment.
The core never reaches back into IPython for configuration.

Every field says, once, what values it accepts (``Rule``), what it means (``help``, shown by
``%config AskMagics``) and where it goes in a request (``request``). ``Settings`` checks itself with
those rules, per-call options check themselves with the same rules (``check_fields``), the
traitlets of ``AskMagics`` are generated from these fields, and ``_core/_request`` builds the
request from them: a new request setting is one field here.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import platformdirs

from ._azure import TokenCache
from ._errors import UsageError, describe, shown_url, url_credentials

__all__ = [
    "ENVIRONMENT",
    "ENVIRONMENT_FALLBACKS",
    "EnvironmentWatch",
    "REASONING_EFFORTS",
    "VERBOSITIES",
    "Rule",
    "Secret",
    "Timeouts",
    "Settings",
    "check_fields",
    "check_setting",
    "default_data_dir",
    "environment_values",
    "setting_fields",
    "shown_url",
    "url_credentials",
]

LOCAL_MODEL = "nbopenai-local"

# The environment variable each setting is read from (``Settings.from_env``).
ENVIRONMENT = {
    "api_key": "OPENAI_API_KEY",
    "base_url": "OPENAI_BASE_URL",
    "organization": "OPENAI_ORG_ID",
    "project": "OPENAI_PROJECT_ID",
    "model": "NBOPENAI_MODEL",
    "azure_endpoint": "AZURE_OPENAI_ENDPOINT",
    "api_version": "OPENAI_API_VERSION",
}
# Variables read when a setting's own is empty: Azure's names for the key and the API version.
# With AZURE_OPENAI_ENDPOINT set, AZURE_OPENAI_API_KEY comes first (an OpenAI key is not sent to Azure).
ENVIRONMENT_FALLBACKS = {"api_key": "AZURE_OPENAI_API_KEY", "api_version": "AZURE_OPENAI_API_VERSION"}
DEFAULT_MODEL = "gpt-4.1-mini"
# The API's lists (OpenAI's OpenAPI description: ReasoningEffort, Verbosity); the one copy in the package.
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
VERBOSITIES = ("low", "medium", "high")


@dataclass(frozen=True)
class Rule:
    """The values one setting accepts, said once; ``None`` always means "not set" and passes."""

    accepts: Callable[[Any], bool]
    requirement: str  # completes "<name> must be ..."
    choices: tuple[str, ...] = ()
    show: Callable[[Any], str] = describe  # the refused value as the message may show it

    def check(self, name: str, value: Any) -> None:
        if value is not None and not self.accepts(value):
            raise UsageError(f"{name} must be {self.requirement}, not {self.show(value)}")


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value  # NaN is not


def _is_whole(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def between(low: float, high: float) -> Rule:
    return Rule(lambda v: _is_number(v) and low <= v <= high, f"a number from {low} to {high}")


def at_least(least: float, *, whole: bool = False, why: str = "") -> Rule:
    kind = _is_whole if whole else _is_number
    bound = "0 or more" if least == 0 else f"at least {least}"
    requirement = f"{'a whole number' if whole else 'a number'} of {bound}{f' ({why})' if why else ''}"
    return Rule(lambda v: kind(v) and v >= least, requirement)


def one_of(choices: tuple[str, ...]) -> Rule:
    return Rule(lambda v: isinstance(v, str) and v in choices, f"one of {', '.join(choices)}", choices)


def _is_model_name(value: Any) -> bool:
    if not isinstance(value, str) or not 0 < len(value) <= 256:
        return False
    return value.isprintable() and not any(c.isspace() for c in value)


PER_MINUTE = at_least(1, whole=True, why="a limit per minute; None learns it from the API's headers")
POSITIVE = Rule(lambda v: _is_number(v) and v > 0, "a positive number")
TEXT = Rule(lambda v: isinstance(v, str), "text (a str)")
FLAG = Rule(lambda v: isinstance(v, bool), "True or False")
MODEL = Rule(_is_model_name, "a model name such as 'gpt-4.1-mini' (no spaces)")
CALLABLE = Rule(callable, "a zero-argument callable that returns a token", show=lambda v: type(v).__name__)
DEPLOYMENTS = Rule(
    lambda v: isinstance(v, Mapping) and all(isinstance(k, str) and _is_model_name(m) for k, m in v.items()),
    "a dict of deployment name to model name, such as {'my-gpt': 'gpt-4.1-mini'}",
)
URL = Rule(
    lambda v: isinstance(v, str) and v.startswith(("http://", "https://")),
    "an http(s) URL such as 'https://api.openai.com/v1'",
    show=lambda v: describe(shown_url(v) if isinstance(v, str) else v),  # never the credentials it carries
)


def setting(
    default: Any = None, help: str = "", rule: Rule | None = None, *, request: tuple[str, ...] = (),
    shown: Callable[[Any], Any] | None = None,
) -> Any:
    """A settings field: its default, its ``help`` (``%config``), its ``rule``, its path in a request, and
    ``shown``, what a display of it may show (a URL without its credentials)."""
    return field(default=default, metadata={"help": help, "rule": rule, "request": request, "shown": shown})


def check_fields(values: Any) -> None:
    """Check every field of a dataclass by its rule (its own, or the setting it overrides; see ``per_call``)."""
    for name, rule in _rules_of(type(values)):
        rule.check(name, getattr(values, name))


@functools.cache
def _rules_of(kind: type) -> tuple[tuple[str, Rule], ...]:
    """The (field, rule) pairs of a dataclass, found once per class (every ask builds its options)."""
    fields = dataclasses.fields(kind)
    pairs = ((f.name, f.metadata.get("rule") or RULES.get(f.metadata.get("setting", f.name))) for f in fields)
    return tuple((name, rule) for name, rule in pairs if rule is not None)


def per_call(setting_name: str, default: Any = None, **more: Any) -> Any:
    """A per-call option that overrides the session setting ``setting_name`` and obeys its rule."""
    return field(default=default, metadata={"setting": setting_name}, **more)


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


@dataclass(frozen=True)
class Timeouts:
    """Seconds allowed for each phase of a request (``None`` means no limit).

    As settings they are flat: ``Settings.replace(read_timeout=30)``, ``%config AskMagics.read_timeout``.
    """

    connect: float | None = setting(5.0, "Seconds to connect (None: no limit).", POSITIVE)
    read: float | None = setting(120.0, "Seconds to wait for each chunk of the answer (None: no limit).", POSITIVE)
    write: float | None = setting(30.0, "Seconds to send the request (None: no limit).", POSITIVE)
    pool: float | None = setting(10.0, "Seconds to wait for a free connection (None: no limit).", POSITIVE)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            f.metadata["rule"].check(f"{f.name}_timeout", getattr(self, f.name))


def default_data_dir() -> Path:
    """Per-user data folder: ``$NBOPENAI_HOME``, else the platform's user data directory (``platformdirs``:
    ``~/.local/share/nbopenai`` or ``$XDG_DATA_HOME/nbopenai`` on Linux)."""
    if env := os.environ.get("NBOPENAI_HOME"):
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("nbopenai", appauthor=False))


@dataclass(frozen=True)
class Settings:
    """Everything configurable about a session. Build with ``Settings.from_env(**overrides)``.

    Each value is checked when the settings are built (``UsageError`` naming the setting and what it
    accepts), whichever way they were set: ``Session(...)``, ``configure``, ``%config AskMagics``.

    Parameters
    ----------
    api_key, base_url
        Credentials and endpoint; default from ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``.
    model, instructions, temperature, top_p, max_output_tokens, reasoning_effort, verbosity
        Request defaults; every call can override them.
    store
        ``True`` chains turns on the server with ``previous_response_id``; ``False`` keeps the
        conversation items client-side and re-sends them (for organisations that cannot store).
    timeouts, max_attempts, backoff_base, backoff_max
        Network policy: granular timeouts (also settable one by one: ``read_timeout=30``),
        attempts per request (1 = no retry), full-jitter backoff.
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
    azure_endpoint, api_version, token_provider, deployments
        Azure OpenAI: the resource endpoint (``AZURE_OPENAI_ENDPOINT``); the API version where the endpoint
        needs one (``OPENAI_API_VERSION`` or ``AZURE_OPENAI_API_VERSION``; without one the v1 API is used);
        a zero-argument callable returning a Microsoft Entra ID token (instead of ``AZURE_OPENAI_API_KEY``);
        and which model each deployment runs, for prices (``{"my-gpt": "gpt-4.1-mini"}``). Models are
        deployment names.
    """

    api_key: Secret | None = None
    base_url: str | None = setting(None, "API base URL (an OpenAI-compatible server).", URL, shown=shown_url)
    organization: str | None = setting(None, "OpenAI organization id (default: OPENAI_ORG_ID).", TEXT)
    project: str | None = setting(None, "OpenAI project id (default: OPENAI_PROJECT_ID).", TEXT)
    model: str = setting(DEFAULT_MODEL, "Model used when %%ask gets no -m.", MODEL, request=("model",))
    instructions: str | None = setting(
        None, "Instructions sent on every turn (-s overrides).", TEXT, request=("instructions",)
    )
    temperature: float | None = setting(
        None, "Sampling temperature, 0 to 2 (None: the model's).", between(0, 2), request=("temperature",)
    )
    top_p: float | None = setting(
        None, "Nucleus sampling: the probability mass to sample from, 0 to 1 (None: the model's).", between(0, 1),
        request=("top_p",),
    )
    max_output_tokens: int | None = setting(
        None, "Cap on output tokens per answer, at least 16 (None: no cap).",
        at_least(16, whole=True, why="the API's minimum"), request=("max_output_tokens",),
    )
    reasoning_effort: str | None = setting(
        None, "Reasoning effort (reasoning models only).", one_of(REASONING_EFFORTS), request=("reasoning", "effort")
    )
    verbosity: str | None = setting(
        None, "How long the answers are: low, medium or high (models that support it).", one_of(VERBOSITIES),
        request=("text", "verbosity"),
    )
    store: bool = setting(
        True, "True chains turns on the server (previous_response_id); False re-sends them.", FLAG, request=("store",)
    )
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_attempts: int = setting(4, "Attempts per request, retries included (1: no retry).", at_least(1, whole=True))
    backoff_base: float = setting(0.5, "Seconds of the first retry's backoff (full jitter).", at_least(0))
    backoff_max: float = setting(20.0, "Longest backoff between retries, in seconds.", at_least(0))
    ledger_path: str | None = setting(None, "SQLite file of the usage ledger (':memory:' for none).", TEXT)
    prices_path: str | None = setting(None, "A JSON price table that overrides or extends the shipped one.", TEXT)
    budget_usd: float | None = setting(None, "Refuse asks once this session spent this many US dollars.", at_least(0))
    budget_tokens: int | None = setting(
        None, "Refuse asks once this session used this many tokens.", at_least(0, whole=True)
    )
    max_retry_wait: float = setting(
        120.0, "The longest retry-after (seconds) a request waits out; longer ends it.", at_least(0)
    )
    outage_timeout: float = setting(
        10.0, "Seconds an outage may last before an extraction stops (its finished rows kept).", POSITIVE
    )
    rpm: int | None = setting(
        None, "Requests per minute your account allows (None: learned from the API's headers).", PER_MINUTE
    )
    tpm: int | None = setting(
        None, "Tokens per minute your account allows (None: learned from the API's headers).", PER_MINUTE
    )
    concurrency: int = setting(16, "Requests in flight at most when extracting.", at_least(1, whole=True))
    update_rate: float = setting(20.0, "Live view refreshes per second at most.", POSITIVE)
    thread_store: str = setting(
        "response", "Where a new thread is kept: 'response' chains previous_response_id; 'conversation' keeps it in a "
        "conversation object (%%ask --store overrides).", one_of(("response", "conversation")),
    )
    azure_endpoint: str | None = setting(
        None, "Azure OpenAI resource endpoint, e.g. https://NAME.openai.azure.com (default: AZURE_OPENAI_ENDPOINT).",
        URL, shown=shown_url,
    )
    api_version: str | None = setting(
        None, "Azure OpenAI API version, where the endpoint needs one (None: the v1 API).", TEXT
    )
    token_provider: Any = setting(None, "A zero-argument callable returning a Microsoft Entra ID token.", CALLABLE)
    deployments: dict[str, str] = field(
        default_factory=dict,
        metadata={"help": "Azure deployments and the model each runs, for prices: {'my-gpt': 'gpt-4.1-mini'}.",
                  "rule": DEPLOYMENTS, "request": (), "shown": None},
    )

    def __post_init__(self) -> None:
        if isinstance(self.api_key, str):
            object.__setattr__(self, "api_key", Secret(self.api_key))
        if not isinstance(self.timeouts, Timeouts):
            raise UsageError(f"timeouts must be a Timeouts, not {describe(self.timeouts)}")
        check_fields(self)
        if self.token_provider is not None:

            if not isinstance(self.token_provider, TokenCache):  # one cache, shared by every client of these settings
                object.__setattr__(self, "token_provider", TokenCache(self.token_provider))
        object.__setattr__(self, "deployments", dict(self.deployments or {}))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> Settings:
        """Settings from ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, ``OPENAI_ORG_ID``, ``OPENAI_PROJECT_ID`` and
        ``NBOPENAI_MODEL``; ``overrides`` win."""
        values = environment_values(env)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls().replace(**values)

    def __repr__(self) -> str:  # the dataclass's own, with the base URL's credentials masked
        fields = ", ".join(
            f"{f.name}={shown_url(self.base_url) if f.name == 'base_url' else getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
        )
        return f"Settings({fields})"

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every credential this session sends: the API key and the base URL's user info (see ``Scrubber``)."""
        tokens = self.token_provider.known if self.token_provider is not None else ()
        return ((self.api_key.reveal(),) if self.api_key else ()) + url_credentials(self.base_url) + tokens

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes``; a timeout can be given alone (``read_timeout=30``)."""
        unknown = sorted(set(changes) - _SETTABLE)
        if unknown:
            raise UsageError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(setting_fields())}")
        phases = {name.removesuffix("_timeout"): changes.pop(name) for name in list(changes) if name in _TIMEOUT_NAMES}
        if phases:
            changes["timeouts"] = dataclasses.replace(changes.get("timeouts", self.timeouts), **phases)
        return dataclasses.replace(self, **changes)

    def get(self, name: str) -> Any:
        """The value of the setting ``name`` (``read_timeout`` reads ``timeouts.read``)."""
        if name in _TIMEOUT_NAMES:
            return getattr(self.timeouts, name.removesuffix("_timeout"))
        return getattr(self, name)

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
        if value := _variable(env, name):
            values[name] = Secret(value) if name == "api_key" else value
    return values


def _variable(env: Mapping[str, str], name: str) -> str | None:
    """The value of setting ``name``'s variable or its Azure fallback (first, for the key, with an Azure endpoint)."""
    names = [ENVIRONMENT[name]]
    if fallback := ENVIRONMENT_FALLBACKS.get(name):
        names.insert(0 if name == "api_key" and env.get(ENVIRONMENT["azure_endpoint"]) else 1, fallback)
    return next((env[variable] for variable in names if env.get(variable)), None)


class EnvironmentWatch:
    """The environment variables some settings were read from, to pick up their later changes.

    A key fixed in a running kernel (``os.environ["OPENAI_API_KEY"] = getpass()``) should reach the
    next request without a restart; a setting given explicitly is no longer watched (``forget``).
    """

    def __init__(self, fields: Iterable[str]) -> None:
        self._fields = tuple(name for name in fields if name in ENVIRONMENT)
        self._seen = self._read()

    def _read(self) -> tuple[str | None, ...]:
        return tuple(_variable(os.environ, name) for name in self._fields)

    @property
    def fields(self) -> tuple[str, ...]:
        return self._fields

    def changes(self) -> dict[str, Any]:
        """The watched settings whose variable changed since the last call (``None`` where it was unset)."""
        now = self._read()  # a few dict lookups: cheap enough for every request
        if now == self._seen:
            return {}
        changed = [name for name, old, new in zip(self._fields, self._seen, now, strict=False) if old != new]
        self._seen = now
        values = environment_values(fields=changed)
        return {name: values.get(name) for name in changed}

    def forget(self, fields: Iterable[str]) -> None:
        """Stop watching ``fields`` (the user set them explicitly)."""
        dropped = set(fields)
        kept = [(name, seen) for name, seen in zip(self._fields, self._seen, strict=False) if name not in dropped]
        self._fields = tuple(name for name, _ in kept)
        self._seen = tuple(seen for _, seen in kept)


@functools.cache
def _setting_fields() -> MappingProxyType:
    """``setting_fields``, computed once (from the class definitions: it never changes)."""
    flat = {f.name: f for f in dataclasses.fields(Settings) if f.name not in ("api_key", "timeouts", "token_provider")}
    flat.update({f"{f.name}_timeout": f for f in dataclasses.fields(Timeouts)})
    return MappingProxyType(flat)


def setting_fields() -> dict[str, dataclasses.Field]:
    """Every setting a user may set by name (the timeouts one by one), without the API key."""
    return dict(_setting_fields())


_TIMEOUT_NAMES = frozenset(f"{f.name}_timeout" for f in dataclasses.fields(Timeouts))
_SETTABLE = frozenset({*_setting_fields(), "api_key", "timeouts", "token_provider"})
# The rule of every setting by name, and of the per-call options that are no setting of the session.
RULES = MappingProxyType(
    {
        **{name: f.metadata["rule"] for name, f in setting_fields().items() if f.metadata.get("rule")},
        "validation_retries": at_least(0, whole=True),
    }
)


def check_setting(name: str, value: Any) -> None:
    """Raise ``UsageError`` if ``value`` is not one the setting (or option) ``name`` accepts."""
    if rule := RULES.get(name):
        rule.check(name, value)
