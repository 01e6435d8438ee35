"""The lease reaper: finds leases that expired and moves their runs on.

An expired lease means the agent died or was cut off. A started attempt
becomes LOST and the run is retried at once (elsewhere) if attempts remain,
else FAILED; a lease with no attempt yet simply goes back to the queue. The
reaper sleeps until the earliest expiry, so a dead agent is noticed within the
lease TTL, not minutes later.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import TYPE_CHECKING

from hydra.coordinator.loops.timing import seconds_until
from hydra.coordinator.store import Database, leases

if TYPE_CHECKING:
    from hydra.coordinator.loops.dispatcher import Dispatcher

#: Upper bound of the reaper's sleep.
FALLBACK_POLL_SECONDS = 2.0
#: Expired leases handled per transaction.
BATCH = 100


class Reaper:
    """Expires leases whose agents stopped heartbeating."""

    def __init__(self, database: Database, dispatcher: Dispatcher, ttl: timedelta) -> None:
        self._db = database
        self._dispatcher = dispatcher
        self._ttl = ttl

    async def step(self) -> None:
        """Reap what expired, then sleep until the next expiry.

        After this coordinator lost the database, or after the database restarted,
        agents get one lease TTL to renew through their coordinators first: their
        leases ran out while nobody could renew them, not because they died."""
        outage_ago = time.monotonic() - self._db.last_outage
        if outage_ago >= self._ttl.total_seconds():
            while await self._reap() == BATCH:
                pass
        next_expiry = await self._db.run(leases.next_expiry)
        await asyncio.sleep(max(0.05, seconds_until(next_expiry, cap=FALLBACK_POLL_SECONDS)))

    async def _reap(self) -> int:
        """One batch of expired leases; the runs it queued again are leased at once."""
        async with self._db.transaction() as tx:
            reaped = await leases.reap_expired(tx, BATCH, restart_grace=self._ttl)
            await self._dispatcher.lease_available(tx)
        return reaped
