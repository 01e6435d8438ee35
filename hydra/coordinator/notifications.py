"""LISTEN/NOTIFY: one dedicated connection per coordinator, fanned out in memory.

Channels: ``hydra_dispatch`` (work may be available), ``hydra_triggers`` (a
trigger changed), ``hydra_run_changed`` (payload: comma-separated run ids), ``hydra_output``
(payload: run id), ``hydra_agent_command`` (payload: an ``AgentCommand`` as JSON,
see hydra/coordinator/agents/commands.py), ``hydra_credentials`` (payload: the
name of a revoked credential, which every coordinator drops from its cache),
``hydra_outbox`` (a notification was recorded: the deliveries look).
Notifications are hints: every loop also wakes on a timer, so a notification
lost while the connection was down delays work but never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable

import psycopg

from hydra.coordinator.store.connections import with_defaults

log = logging.getLogger("hydra.coordinator.notifications")

CHANNELS = (
    "hydra_dispatch",
    "hydra_triggers",
    "hydra_run_changed",
    "hydra_output",
    "hydra_agent_command",
    "hydra_credentials",
    "hydra_outbox",
)

Callback = Callable[[str], None]


class Listener:
    """Keeps one LISTEN connection and calls subscribers for every notification."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = with_defaults(conninfo)
        self._subscribers: dict[str, list[Callback]] = defaultdict(list)
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def subscribe(self, channel: str, callback: Callback) -> Callable[[], None]:
        """Call `callback(payload)` for each notification; returns an unsubscribe function."""
        self._subscribers[channel].append(callback)
        return lambda: self._subscribers[channel].remove(callback)

    def start(self) -> None:
        """Start listening in the background."""
        self._task = asyncio.create_task(self._run(), name="hydra-listener")

    async def stop(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
            except (psycopg.OperationalError, OSError) as error:
                self.connected.clear()
                log.warning("notification connection lost (%s); reconnecting", error)
                self._wake_everyone()
                await asyncio.sleep(0.5)

    async def _listen(self) -> None:
        conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        async with conn:
            for channel in CHANNELS:
                await conn.execute(f"LISTEN {channel}")
            self.connected.set()
            self._wake_everyone()  # anything may have happened while we were away
            async for notify in conn.notifies():
                self._deliver(notify.channel, notify.payload)

    def _deliver(self, channel: str, payload: str) -> None:
        for callback in list(self._subscribers.get(channel, ())):
            try:
                callback(payload)
            except Exception:  # a subscriber's bug must not stop notifications
                log.exception("notification subscriber failed")

    def _wake_everyone(self) -> None:
        # An empty hydra_credentials payload: forget every cached credential.
        for channel in ("hydra_dispatch", "hydra_triggers", "hydra_credentials"):
            self._deliver(channel, "")
