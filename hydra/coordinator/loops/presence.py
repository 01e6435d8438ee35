"""Presence: a coordinator records that it is alive, and forgets peers that are not
(their agents count as disconnected), so `cluster status` shows the live cluster."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from hydra.coordinator.store import Database, cluster

#: How often a coordinator records that it is alive.
PRESENCE_SECONDS = 2.0
#: A coordinator silent for this long is listed as gone and its agents as disconnected.
ALIVE_WINDOW = timedelta(seconds=10)


class Presence:
    """Keeps this coordinator's row alive."""

    def __init__(
        self,
        database: Database,
        coordinator_id: str,
        address: str,
        version: str,
        *,
        insecure: bool = False,
        tls: bool = False,
    ) -> None:
        self._db = database
        self._id = coordinator_id
        self._address = address
        self._version = version
        self._insecure = insecure
        self._tls = tls

    async def announce(self) -> None:
        """Record this coordinator as alive, and how it serves."""
        await self._db.run(
            cluster.register,
            self._id,
            self._address,
            self._version,
            insecure=self._insecure,
            tls=self._tls,
        )

    async def step(self) -> None:
        """Announce, forget the dead, then wait a beat."""
        await self.announce()
        await self._db.run(cluster.forget_dead, ALIVE_WINDOW)
        await asyncio.sleep(PRESENCE_SECONDS)

    async def withdraw(self) -> None:
        """This coordinator stops; its agents are disconnected from it."""
        await self._db.run(cluster.unregister, self._id)
