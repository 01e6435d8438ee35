"""TailLogs followers: one subscription to ``hydra_output`` wakes the followers
of the run that has new output, and followers of one run that ask the database
the same question at once share a single read."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import Any, TypeVar

from hydra.coordinator.notifications import Listener
from hydra.coordinator.store import Database, runs
from hydra.coordinator.store.records import OutputRecord
from hydra.errors import NotFound

T = TypeVar("T")


class LogFollowers:
    """Every log follower of this coordinator."""

    def __init__(self, database: Database, listener: Listener) -> None:
        self._db = database
        self._listener = listener
        self._waiting: dict[str, set[asyncio.Event]] = {}
        self._reads: dict[Hashable, asyncio.Future[Any]] = {}
        self._unsubscribe: Callable[[], None] = lambda: None

    def start(self) -> None:
        """Subscribe to new output."""
        self._unsubscribe = self._listener.subscribe("hydra_output", self._notified)

    def stop(self) -> None:
        """Unsubscribe."""
        self._unsubscribe()

    @contextlib.asynccontextmanager
    async def follow(self, run_id: str) -> AsyncIterator[asyncio.Event]:
        """An event set whenever the run has new output, for the duration of the block."""
        new_output = asyncio.Event()
        self._waiting.setdefault(run_id, set()).add(new_output)
        try:
            yield new_output
        finally:
            waiting = self._waiting.get(run_id, set())
            waiting.discard(new_output)
            if not waiting:
                self._waiting.pop(run_id, None)

    async def read(self, run_id: str, *, after_seq: int, attempt: int) -> list[OutputRecord]:
        """The run's output after `after_seq` (one read for every follower asking now)."""
        return await self._shared(
            ("output", run_id, after_seq, attempt),
            lambda: self._db.run(runs.read_output, run_id, after_seq=after_seq, attempt=attempt),
        )

    async def finished(self, run_id: str) -> bool:
        """Whether the run is terminal (one read for every follower asking now).

        Raises:
            NotFound: there is no such run.
        """
        found = await self._shared(("run", run_id), lambda: self._db.run(runs.get_runs, [run_id]))
        if not found:
            raise NotFound(f"run {run_id!r} not found")
        return found[0].state.terminal

    def _notified(self, run_id: str) -> None:
        for new_output in self._waiting.get(run_id, ()):
            new_output.set()

    async def _shared(self, key: Hashable, read: Callable[[], Awaitable[T]]) -> T:
        future = self._reads.get(key)
        if future is None:
            future = asyncio.ensure_future(read())
            self._reads[key] = future
            future.add_done_callback(lambda done: self._forget(key, done))
        result: T = await asyncio.shield(future)
        return result

    def _forget(self, key: Hashable, done: asyncio.Future[Any]) -> None:
        if self._reads.get(key) is done:
            del self._reads[key]
        if not done.cancelled():
            done.exception()  # retrieved here, so that no waiter left means no warning
