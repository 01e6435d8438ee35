"""Heartbeats of all of a coordinator's agent streams, recorded together.

Every agent heartbeats every few seconds; a transaction per heartbeat would
be hundreds of commits a second with many agents, for nothing but moving
expiry times. Heartbeats wait in one list: the first to arrive starts a round,
which waits ``GATHER_SECONDS`` for the heartbeats of other streams, then records
every heartbeat waiting in one transaction of two statements (the agents heard
from, the leases renewed) and calls each one's answer. Heartbeats that arrive
while it commits wait for the next round. So heartbeats cost at most one commit
per ``GATHER_SECONDS``, however many agents there are; a lease is renewed that
much later, which is nothing against its TTL (the agent counts its renewal
from when it sent the heartbeat).

A round renews the leases of many agents while their reports are being
recorded, in whatever order those lock their runs; so that the two never
deadlock (and stall for the server's deadlock_timeout), a round waits only
briefly for a lock, gives way, and is tried again.

A stream that ends withdraws its heartbeats (:meth:`HeartbeatRecorder.withdraw`)
before the agent is recorded as disconnected: a heartbeat written after the
disconnect would make the agent look connected again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from hydra.coordinator.store import CONFLICTS, Database, leases
from hydra.coordinator.store.records import Heartbeat
from hydra.domain import LeaseKey
from hydra.errors import Unavailable

log = logging.getLogger("hydra.coordinator.agents")

#: How long a round waits for other streams' heartbeats before it records them.
GATHER_SECONDS = 0.05
#: How many times a round is tried when it keeps meeting rows locked by others:
#: its statements wait at most the store's leases.HEARTBEAT_LOCK_TIMEOUT for a lock.
CONFLICT_TRIES = 20


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingHeartbeat:
    """A heartbeat waiting to be recorded, with what to do once it is (or is not)."""

    heartbeat: Heartbeat
    #: Called once committed, with the listed leases that were renewed.
    renewed: Callable[[set[LeaseKey]], None]
    #: Called when it could not be recorded (the database is unavailable).
    failed: Callable[[], None]
    #: Whose heartbeat it is (the stream's session): see `HeartbeatRecorder.withdraw`.
    owner: object = None


class HeartbeatRecorder:
    """Records the heartbeats of every stream of one coordinator, a round at a time."""

    def __init__(
        self,
        database: Database,
        *,
        ttl: timedelta,
        coordinator_id: str,
        gather: float = GATHER_SECONDS,
    ) -> None:
        self._db = database
        self._gather = gather
        self._ttl = ttl
        self._coordinator_id = coordinator_id
        self._waiting: list[PendingHeartbeat] = []
        #: The heartbeats of the round being recorded, and that round's end.
        self._recording: list[PendingHeartbeat] = []
        self._recorded: asyncio.Event | None = None
        self._rounds: asyncio.Task[None] | None = None

    def submit(self, pending: PendingHeartbeat) -> None:
        """Queues a heartbeat for the next round; its callbacks say how it went."""
        self._waiting.append(pending)
        if self._rounds is None or self._rounds.done():
            self._rounds = asyncio.create_task(self._record_rounds(), name="heartbeats")

    async def withdraw(self, owner: object) -> None:
        """Drops the owner's waiting heartbeats and waits for a round that is recording
        one of them: afterwards, no heartbeat of the owner's is written any more."""
        self._waiting = [p for p in self._waiting if p.owner is not owner]
        while (recorded := self._recorded) is not None and any(
            p.owner is owner for p in self._recording
        ):
            await recorded.wait()

    async def close(self) -> None:
        """Stops recording; heartbeats still waiting are dropped (their streams are ending)."""
        if self._rounds is not None:
            self._rounds.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rounds
        self._waiting.clear()

    async def _record_rounds(self) -> None:
        while self._waiting:
            if self._gather > 0:
                await asyncio.sleep(self._gather)
            pending, self._waiting = self._waiting, []
            recorded = asyncio.Event()
            self._recording, self._recorded = pending, recorded
            try:
                await self._record(pending)
            finally:
                self._recording, self._recorded = [], None
                recorded.set()

    async def _record(self, pending: list[PendingHeartbeat], tries: int = CONFLICT_TRIES) -> None:
        """One transaction for the round; if it fails for one heartbeat's sake, each alone."""
        try:
            renewed = await self._db.run(
                leases.record_heartbeats,
                [p.heartbeat for p in pending],
                self._ttl,
                coordinator_id=self._coordinator_id,
            )
        except Unavailable as error:
            if tries > 1 and isinstance(error.__cause__, CONFLICTS):
                # A report batch is finishing one of these runs: it commits soon.
                log.debug("%d heartbeat(s) met locked rows; again", len(pending))
                await self._record(pending, tries - 1)
                return
            self._fail(pending, error)
            return
        except Exception as error:
            if len(pending) == 1:
                self._fail(pending, error)
                return
            for one in pending:
                await self._record([one])
            return
        for one in pending:
            renewed_here = renewed.get(one.heartbeat.agent_id, set())
            one.renewed({key for key in one.heartbeat.leases if key in renewed_here})

    @staticmethod
    def _fail(pending: list[PendingHeartbeat], error: Exception) -> None:
        agents = sorted({p.heartbeat.agent_id for p in pending})
        log.warning("recording heartbeats of %s failed: %s", ", ".join(agents), error)
        for one in pending:
            one.failed()
