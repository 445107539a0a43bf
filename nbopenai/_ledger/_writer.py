"""A session's ledger as the code that makes calls sees it: write a row, check the budget.

Rows are made by ``UsageRecord.build`` (the one factory, with the one cost rule) and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._budget import Budget

if TYPE_CHECKING:
    from ._prices import PriceTable
    from ._usage import Ledger, UsageRecord

__all__ = ["LedgerWriter"]


@dataclass(frozen=True)
class LedgerWriter:
    """Writes one session's ledger rows and keeps its budget.

    ``ledger`` and ``prices`` are read on use (a session reopens them when their paths change).
    """

    session_id: str
    ledger: Callable[[], Ledger]
    prices: Callable[[], PriceTable]
    budget: Budget | None = None

    def row(self, **fields: Any) -> UsageRecord:
        """The row of one call, not yet written; takes the arguments of ``UsageRecord.build``."""
        # Lazy on purpose: the ledger module (sqlite3) stays out of `import nbopenai`.
        from ._usage import UsageRecord  # noqa: PLC0415 - lazy on purpose (see above)

        return UsageRecord.build(prices=self.prices(), session_id=self.session_id, **fields)

    def record(self, **fields: Any) -> UsageRecord:
        """Write the row of one call (``row``'s arguments); the ledger never raises into an answer."""
        row = self.row(**fields)
        self.ledger().record(row)
        return row

    def check_budget(self, model: str, estimated_input_tokens: int | Callable[[], int]) -> None:
        """Refuse (``BudgetExceeded``) a call that would pass the session's cap.

        The estimate may be a function: counting tokens is then left to sessions with a budget.
        """
        if self.budget is None:
            return
        estimate = estimated_input_tokens() if callable(estimated_input_tokens) else estimated_input_tokens
        self.budget.check(
            self.ledger().totals(session_id=self.session_id),
            model=model,
            estimated_input_tokens=estimate,
            prices=self.prices(),
        )
