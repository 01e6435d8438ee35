"""Whether this coordinator can reach its database, probed every second.

The probe is a ``SELECT 1`` on a connection of its own (so that neither the
API's load nor the control loops' can make it wait), with a short deadline. While
it fails, the API refuses calls at once with UNAVAILABLE, and the calls in
flight are failed too, instead of each waiting out its deadline on a hung
server; gRPC health says NOT_SERVING; and the reaper counts the time as an
outage, since no agent could renew its leases. The first answer turns it all
back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from hydra.coordinator.store import Database
from hydra.coordinator.store.probe import Probe
from hydra.errors import Unavailable

log = logging.getLogger("hydra.coordinator")

#: Seconds between probes.
PROBE_SECONDS = 1.0
#: Seconds the probe waits for its connection and for the answer.
PROBE_DEADLINE = 2.0

Callback = Callable[[bool], Awaitable[None]]


class Reachability:
    """Probes the database; tells the API's database and the health service."""

    def __init__(self, *, conninfo: str, api: Database, control: Database) -> None:
        self._probe = Probe(conninfo, PROBE_DEADLINE)
        self._api = api
        self._control = control
        self._callbacks: list[Callback] = []
        #: The last probe's verdict.
        self.reachable = True

    async def close(self) -> None:
        """Disconnect the probe."""
        await self._probe.close()

    def on_change(self, callback: Callback) -> None:
        """Await `callback(reachable)` whenever the verdict changes."""
        self._callbacks.append(callback)

    async def step(self) -> None:
        """Probe once, act on the verdict, then wait a beat."""
        try:
            await self._probe.ping()
        except Unavailable as error:
            await self._lost(error.message)
        else:
            await self._found()
        await asyncio.sleep(PROBE_SECONDS)

    async def _lost(self, reason: str) -> None:
        self._api.refuse(reason.removeprefix("database unavailable: "))
        self._control.last_outage = time.monotonic()
        if self.reachable:
            log.warning("database unreachable (%s): health NOT_SERVING", reason)
            await self._changed(False)

    async def _found(self) -> None:
        self._api.accept()
        if not self.reachable:
            log.info("database reachable again: health SERVING")
            await self._changed(True)

    async def _changed(self, reachable: bool) -> None:
        self.reachable = reachable
        for callback in self._callbacks:
            await callback(reachable)
