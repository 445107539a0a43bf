"""Usage: the ledger, prices and budgets."""
