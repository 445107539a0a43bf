"""Per-session spending caps, checked before a call is sent."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._core._errors import BudgetExceeded

if TYPE_CHECKING:
    from ._prices import PriceTable
    from ._usage import Totals

__all__ = ["Budget"]


@dataclass(frozen=True)
class Budget:
    """A cap on what one session may spend, in USD and/or tokens (``None``: no cap).

    Parameters
    ----------
    usd
        Most US dollars the session's calls may cost, by the price table.
    tokens
        Most tokens (input plus output, as ``total_tokens`` counts them) the session may use.
    """

    usd: float | None = None
    tokens: int | None = None

    def __post_init__(self) -> None:
        for name in ("usd", "tokens"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"budget {name} must be zero or more, got {value!r}")

    def check(
        self,
        spent: Totals,
        *,
        model: str,
        estimated_input_tokens: int,
        prices: PriceTable,
        at: dt.date | dt.datetime | float | None = None,
    ) -> None:
        """Raise ``BudgetExceeded`` if this call would take the session past a cap.

        The estimate for this call is its input tokens only, at the model's input rate: its output
        is unknown until the answer arrives, so it is not counted. A call can therefore end a little
        past the cap; the next one is refused.

        With a USD cap and a model that has no price, the call is refused: the cap could not be
        kept, and the user asked for one. Earlier unpriced calls (``spent.cost_complete`` false)
        do not block: nothing can price them now, and refusing would lock the session for good;
        the known part of the spending is checked.

        Parameters
        ----------
        spent
            What the session has used so far (``Ledger.totals(session_id=...)``).
        model
            The model this call will use.
        estimated_input_tokens
            Tokens this call will send (instructions, history and prompt).
        prices
            The price table.
        at
            When the call is made, for dated prices; default today.
        """
        if self.tokens is not None and spent.total_tokens + estimated_input_tokens > self.tokens:
            raise BudgetExceeded(
                f"This call would pass the session's token budget: {spent.total_tokens:,} tokens used "
                f"of {self.tokens:,}, and this call sends about {estimated_input_tokens:,} input tokens "
                "(its output, unknown yet, is not counted).",
                hint="Raise the token budget (`%config AskMagics.budget_tokens = ...` or `Session(budget_tokens=...)`) "
                "or start a new session.",
            )
        if self.usd is None:
            return
        price = prices.price_for(model, at)
        if price is None:
            raise BudgetExceeded(
                f"Cannot keep the session's ${self.usd:.4f} budget: no price is known for model {model}, "
                "so the cost of this call cannot be estimated.",
                hint="Add the model's price with Settings(prices_path=...) or "
                "PriceTable.with_prices({...}), pick a priced model, or remove the USD budget.",
            )
        estimate = price.cost(estimated_input_tokens)
        if spent.cost_usd + estimate > self.usd:
            unpriced = "" if spent.cost_complete else " (not counting earlier calls with no known price)"
            raise BudgetExceeded(
                f"This call would pass the session's budget: ${spent.cost_usd:.4f} spent{unpriced} "
                f"of ${self.usd:.4f}, and this call's {estimated_input_tokens:,} input tokens cost about "
                f"${estimate:.4f} with {model} (its output, unknown yet, is not counted)."
            )
