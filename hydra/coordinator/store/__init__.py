"""The store: the only code that executes SQL.

One :class:`Database` (a pool and its transactions) and plain per-area modules
whose functions take the caller's :class:`Transaction`: ``tasks``,
``triggers``, ``runs`` (dependents and overlap included), ``leases``, ``attempts``,
``preconditions``, ``agents``, ``cluster``, ``audit``. Every query is a named block of
``queries.sql``; rows become domain types in ``rows``.
"""

from __future__ import annotations

from hydra.coordinator.store.transaction import (
    CONFLICTS,
    Cursor,
    Database,
    Row,
    Transaction,
    open_pool,
)

__all__ = ["CONFLICTS", "Cursor", "Database", "Row", "Transaction", "open_pool"]
