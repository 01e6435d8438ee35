"""The deadline loop: finds occurrences past their task's ``deadline`` without a
success and records their ``late`` event, once per occurrence.

An occurrence is late when occurrence + deadline has passed and its run is queued
(a precondition may hold it), leased or running, or was never created (its
trigger's next fire time is that far behind). Every coordinator runs the loop;
``hydra_late_occurrences`` makes the event once per occurrence however many do.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from hydra.coordinator.loops.timing import utcnow
from hydra.coordinator.store import Database, outbox

#: Occurrences handled per transaction.
BATCH = 500


class DeadlineLoop:
    """Records late events every `interval`."""

    def __init__(self, database: Database, interval: timedelta) -> None:
        self._db = database
        self._interval = interval

    async def step(self) -> None:
        """Record every late occurrence, then sleep for the interval."""
        while await self._db.run(outbox.record_late, utcnow(), BATCH) == BATCH:
            pass
        await asyncio.sleep(self._interval.total_seconds())
