"""Model prices, shipped as data, so a cost is an estimate you can check and correct.

``nbopenai/data/prices.json`` holds, per model, one or more dated entries in USD per 1M tokens::

    {"as_of": "2025-11-20", "source": "https://platform.openai.com/docs/pricing",
     "models": {"o3": [{"effective": "2025-04-16", "input": 10.0, "cached_input": 2.5, "output": 40.0},
                       {"effective": "2025-06-10", "input": 2.0, "cached_input": 0.5, "output": 8.0}]}}

A user file of the same shape (``Settings(prices_path=...)``) adds models or replaces them.
A model with no entry has no cost: we never guess one.
"""

from __future__ import annotations

import datetime as dt
import importlib.resources
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .._core._errors import ConfigurationError

__all__ = ["Price", "PriceTable", "missing_price_note"]

_PER_TOKENS = 1_000_000

# Dated snapshots ("gpt-4.1-mini-2025-04-14", "gpt-3.5-turbo-0125") cost what their base model costs.
_SNAPSHOT_SUFFIX = re.compile(r"^(?P<base>.+?)-(?:\d{4}-\d{2}-\d{2}|\d{4})$")


def missing_price_note(model: str) -> str:
    """The text to show instead of a cost when ``model`` has no known price."""
    return (
        f"no price known for model {model}; cost not estimated — "
        "add it with Settings(prices_path=...)"
    )


@dataclass(frozen=True)
class Price:
    """One model's rates, in USD per 1M tokens, from ``effective`` on (``None``: at every date)."""

    model: str
    input: float
    cached_input: float
    output: float
    effective: dt.date | None = None
    as_of: dt.date | None = None
    source: str | None = None

    def cost(self, input_tokens: int, cached_tokens: int = 0, output_tokens: int = 0) -> float:
        """USD for one call; see :meth:`PriceTable.cost` for what each count includes."""
        cached = min(max(cached_tokens, 0), max(input_tokens, 0))
        uncached = max(input_tokens, 0) - cached
        dollars = uncached * self.input + cached * self.cached_input + max(output_tokens, 0) * self.output
        return dollars / _PER_TOKENS


class _TableOrClassMethod:
    """Lets ``with_prices`` extend a loaded table, or the shipped one when called on the class.

    ``PriceTable.with_prices({...})`` reads naturally in a notebook; ``table.with_prices({...})``
    must extend *that* table (its override file included), not silently reload the shipped one.
    """

    def __init__(self, method):
        self._method = method
        self.__doc__ = method.__doc__

    def __get__(self, instance, owner):
        def bound(prices: Mapping):
            table = instance if instance is not None else owner.load()
            return self._method(table, prices)

        bound.__doc__ = self.__doc__
        return bound


class PriceTable:
    """Dated prices per model. Build with :meth:`load` or :meth:`with_prices`.

    Parameters
    ----------
    entries
        Model name (lower case) to its :class:`Price` entries, in any order.
    """

    def __init__(self, entries: Mapping[str, list[Price]]) -> None:
        self._entries = {
            name.lower(): sorted(prices, key=lambda p: p.effective or dt.date.min)
            for name, prices in entries.items()
            if prices
        }

    @classmethod
    def load(cls, override_path: str | Path | None = None) -> PriceTable:
        """The shipped price table, extended or corrected by the JSON file at ``override_path``.

        A model listed in the override file replaces all of the shipped model's entries, so an
        override always wins whatever its ``effective`` date.
        """
        shipped = importlib.resources.files("nbopenai") / "data" / "prices.json"
        table = _parse(json.loads(shipped.read_text(encoding="utf-8")), origin="the shipped price table")
        if override_path is None:
            return cls(table)
        path = Path(override_path).expanduser()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigurationError(
                f"could not read the price file {path}: {exc}",
                hint="Point Settings(prices_path=...) at a JSON file shaped like nbopenai/data/prices.json.",
            ) from exc
        return cls({**table, **_parse(data, origin=str(path))})

    @_TableOrClassMethod
    def with_prices(self, prices: Mapping) -> PriceTable:
        """This table plus ``prices``, which win over existing entries of the same model.

        ``prices`` maps a model to one entry or a list of entries (``{"input": .., "cached_input": ..,
        "output": .., "effective": "YYYY-MM-DD"}``, USD per 1M tokens), or is a whole price file.
        Called on the class, it extends the shipped table.

        Examples
        --------
        >>> table = PriceTable.with_prices({"my-model": {"input": 1.0, "output": 4.0}})
        >>> table.cost("my-model", input_tokens=1_000_000, output_tokens=0)
        1.0
        """
        data = prices if "models" in prices else {"models": prices}
        return PriceTable({**self._entries, **_parse(data, origin="with_prices()")})

    def with_deployments(self, deployments: Mapping[str, str]) -> PriceTable:
        """This table where each Azure deployment name costs what the model it runs costs
        (``{"my-gpt": "gpt-4.1-mini"}``).

        A deployment whose model has no price stays unpriced, as an unknown model does.
        """
        if not deployments:
            return self
        aliases = {
            name: self._entries[found]
            for name, model in deployments.items()
            if (found := self._lookup_name(model)) is not None
        }
        return PriceTable({**self._entries, **aliases})

    def free(self) -> PriceTable:
        """This table's models at no cost (the offline demo server answers OpenAI's model names too, for free)."""
        source = "nbopenai's offline demo server: free"
        return PriceTable({name: [Price(name, 0.0, 0.0, 0.0, source=source)] for name in self._entries})

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self._lookup_name(model) is not None

    @property
    def models(self) -> list[str]:
        """Every model with a price, sorted."""
        return sorted(self._entries)

    def price_for(self, model: str, at: dt.date | dt.datetime | float | None = None) -> Price | None:
        """The entry in force for ``model`` on ``at`` (default today), or ``None`` for an unknown model.

        Picks the latest entry effective on or before ``at``. A date before the model's first entry
        gets that first entry: it means a skewed clock or an approximate ``effective`` date, and
        the launch price is what applied.
        """
        name = self._lookup_name(model)
        if name is None:
            return None
        day = _as_date(at)
        entries = self._entries[name]
        in_force = [p for p in entries if p.effective is None or p.effective <= day]
        return in_force[-1] if in_force else entries[0]

    def cost(
        self,
        model: str,
        input_tokens: int,
        cached_tokens: int = 0,
        output_tokens: int = 0,
        at: dt.date | dt.datetime | float | None = None,
    ) -> float | None:
        """Estimated USD for one call, or ``None`` when the model has no price.

        Parameters
        ----------
        model
            The model name as sent or as reported; dated snapshots use the base model's price.
        input_tokens
            All input tokens, *including* the cached ones (the API reports them this way).
        cached_tokens
            The part of ``input_tokens`` served from the prompt cache, billed at the cached rate.
        output_tokens
            All output tokens. Reasoning tokens are already inside this count (the API reports
            ``output_tokens_details.reasoning_tokens`` as a part of it) so they are not added again.
        at
            When the call was made (date, datetime or epoch seconds); default today.
        """
        price = self.price_for(model, at)
        return None if price is None else price.cost(input_tokens, cached_tokens, output_tokens)

    def _lookup_name(self, model: str) -> str | None:
        name = (model or "").strip().lower()
        if name in self._entries:
            return name
        match = _SNAPSHOT_SUFFIX.match(name)
        if match and match["base"] in self._entries:
            return match["base"]
        return None

    def __repr__(self) -> str:
        return f"PriceTable({len(self._entries)} models)"


def _as_date(at: dt.date | dt.datetime | float | None) -> dt.date:
    if at is None:
        return dt.datetime.now(dt.timezone.utc).date()
    if isinstance(at, dt.datetime):
        return (at.astimezone(dt.timezone.utc) if at.tzinfo else at).date()
    if isinstance(at, dt.date):
        return at
    return dt.datetime.fromtimestamp(float(at), dt.timezone.utc).date()


def _parse(data: Mapping, *, origin: str) -> dict[str, list[Price]]:
    """``{model: [Price, ...]}`` from the JSON shape, with a clear error naming ``origin``."""
    if not isinstance(data, Mapping) or not isinstance(data.get("models"), Mapping):
        raise ConfigurationError(
            f"{origin}: expected an object with a 'models' mapping",
            hint='Shape: {"models": {"my-model": {"input": 1.0, "cached_input": 0.1, "output": 4.0}}} '
            "(USD per 1M tokens).",
        )
    defaults = {"as_of": data.get("as_of"), "source": data.get("source")}
    table: dict[str, list[Price]] = {}
    for model, entries in data["models"].items():
        entries = [entries] if isinstance(entries, Mapping) else entries
        table[model.lower()] = [_parse_entry(model, entry, defaults, origin) for entry in entries]
    return table


def _parse_entry(model: str, entry: Mapping, defaults: Mapping, origin: str) -> Price:
    def fail(problem: str) -> ConfigurationError:
        return ConfigurationError(
            f"{origin}: price of {model!r} {problem}",
            hint="Each entry needs 'input' and 'output' (USD per 1M tokens); "
            "'cached_input' and 'effective' (YYYY-MM-DD) are optional.",
        )

    if not isinstance(entry, Mapping):
        raise fail("is not an object")
    rates = {}
    for key in ("input", "cached_input", "output"):
        value = entry.get(key)
        if value is None and key == "cached_input":
            # No cache discount for this model: cached tokens bill at the input rate.
            value = rates["input"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise fail(f"needs a non-negative number for {key!r}, got {value!r}")
        rates[key] = float(value)
    try:
        effective = _optional_date(entry.get("effective"))
        as_of = _optional_date(entry.get("as_of", defaults.get("as_of")))
    except ValueError as exc:
        raise fail(f"has a bad date: {exc}") from exc
    return Price(
        model=model.lower(),
        effective=effective,
        as_of=as_of,
        source=entry.get("source", defaults.get("source")),
        **rates,
    )


def _optional_date(value: str | None) -> dt.date | None:
    return None if value is None else dt.date.fromisoformat(value)
