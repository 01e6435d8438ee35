"""The audit log (``hydra_audit``). Every function works in the caller's transaction:
an entry recorded with :func:`record` commits or rolls back with the change it
records."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from hydra.coordinator.store.rows import audit_entry_from_row
from hydra.coordinator.store.transaction import Transaction
from hydra.domain import AuditEntry

#: The columns an entry is recorded with (``at`` and ``id`` are the database's).
_COLUMNS = ("who", "role", "action", "task", "run_id", "peer", "outcome", "detail")


async def record(tx: Transaction, entry: AuditEntry) -> None:
    """Record one entry in this transaction."""
    await tx.execute("insert_audit_entry", **{c: getattr(entry, c) for c in _COLUMNS})


async def record_batch(tx: Transaction, entries: Sequence[AuditEntry]) -> None:
    """Record many entries in this transaction, in one statement."""
    if entries:
        columns = {c: [getattr(e, c) for e in entries] for c in _COLUMNS}
        await tx.execute("insert_audit_entries", **columns)


async def list_entries(
    tx: Transaction,
    *,
    since: datetime | None,
    who: str,
    task: str,
    after: tuple[datetime, int] | None,
    limit: int,
) -> list[AuditEntry]:
    """A page of entries, newest first: at or after `since`, of `who`, on `task`
    ('' for any), older than the entry `after` (its time and id)."""
    rows = await tx.all(
        "list_audit_entries",
        since=since,
        who=who,
        task=task,
        after_at=after[0] if after else None,
        after_id=after[1] if after else None,
        limit=limit,
    )
    return [audit_entry_from_row(row) for row in rows]
