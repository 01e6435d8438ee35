"""Refused calls, recorded in the audit log in batches.

The credential interceptor refuses a call (UNAUTHENTICATED, PERMISSION_DENIED)
before its handler runs, and hands it to :meth:`RefusalLog.on_refused`, which
only appends to a bounded queue: a refusal never waits for the database, and a
flood of them cannot cost a transaction each. The coordinator's loop
(:meth:`RefusalLog.step`) waits ``GATHER_SECONDS`` after the first refusal, then
records up to ``BATCH`` waiting ones in one transaction of one statement.

When the queue is full, refusals are counted instead of kept; the next batch
ends with one entry saying how many were not recorded. So are the refusals of a
batch whose transaction failed (the database is down).
"""

from __future__ import annotations

import asyncio
import collections
import logging

from hydra.coordinator.api.audit import MAX_DETAIL, MAX_NAME, clipped
from hydra.coordinator.api.caller import RefusedCall
from hydra.coordinator.store import Database, audit
from hydra.domain import AuditEntry

log = logging.getLogger("hydra.coordinator.audit")

#: Refusals kept waiting at most; more are counted, not kept.
CAPACITY = 10_000
#: Refusals recorded in one transaction at most.
BATCH = 1_000
#: How long a round waits for more refusals after the first.
GATHER_SECONDS = 0.05
#: The action of the entry that counts refusals not recorded.
NOT_RECORDED_ACTION = "AuditLog/NotRecorded"


def refusal_entry(refused: RefusedCall) -> AuditEntry:
    """The audit entry of a refused call ("/hydra.v1.TaskService/Apply" is
    recorded as "TaskService/Apply"; other services keep their package)."""
    who = refused.caller
    return AuditEntry(
        who=who.name if who is not None else "",
        role=who.role.value if who is not None else "",
        action=clipped(refused.method.removeprefix("/").removeprefix("hydra.v1."), MAX_NAME),
        peer=clipped(refused.peer, MAX_NAME),
        outcome=refused.code,
        detail=clipped(refused.message, MAX_DETAIL),
    )


def not_recorded_entry(count: int) -> AuditEntry:
    """The entry that says `count` refused calls are missing from the log."""
    return AuditEntry(
        who="",
        role="",
        action=NOT_RECORDED_ACTION,
        outcome="RESOURCE_EXHAUSTED",
        detail=f"{count} refused calls not recorded",
    )


class RefusalLog:
    """The sink of refused calls: a bounded queue, written in batches by `step`."""

    def __init__(
        self,
        database: Database,
        *,
        capacity: int = CAPACITY,
        batch: int = BATCH,
        gather: float = GATHER_SECONDS,
    ) -> None:
        self._db = database
        self._capacity = capacity
        self._batch = batch
        self._gather = gather
        self._waiting: collections.deque[AuditEntry] = collections.deque()
        self._arrived = asyncio.Event()
        #: Refusals not kept (the queue was full, or their batch failed), not yet reported.
        self.dropped = 0

    @property
    def waiting(self) -> int:
        """Refusals queued, not yet recorded."""
        return len(self._waiting)

    def on_refused(self, refused: RefusedCall) -> None:
        """Queue a refused call for the log; never blocks (call it on the event loop)."""
        if len(self._waiting) >= self._capacity:
            self.dropped += 1
        else:
            self._waiting.append(refusal_entry(refused))
        self._arrived.set()

    async def step(self) -> None:
        """Wait for refusals, gather more for a moment, record one batch."""
        await self._arrived.wait()
        if self._gather > 0:
            await asyncio.sleep(self._gather)
        await self.record_batch()
        if not self._waiting and not self.dropped:
            self._arrived.clear()

    async def record_batch(self) -> None:
        """Record up to a batch of waiting refusals (and the count of dropped ones)
        in one transaction. If it fails, they are counted as dropped."""
        entries = [self._waiting.popleft() for _ in range(min(self._batch, len(self._waiting)))]
        dropped, self.dropped = self.dropped, 0
        if dropped:
            entries.append(not_recorded_entry(dropped))
        if not entries:
            return
        try:
            await self._db.run(audit.record_batch, entries)
        except BaseException:
            self.dropped += dropped + len(entries) - (1 if dropped else 0)
            raise

    async def flush(self) -> None:
        """Record everything waiting (when the coordinator stops)."""
        while self._waiting or self.dropped:
            await self.record_batch()
