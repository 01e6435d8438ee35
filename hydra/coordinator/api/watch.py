"""Watch fan-out: each changed run is read once per coordinator and handed to
every watcher that wants it.

One subscription to ``hydra_run_changed`` feeds a :class:`RunWatchHub`; per
batch of notifications it reads the changed runs that some watcher asked for in
one pass (two queries per chunk of ids, on the API's database) and puts the
same event in each interested watcher's bounded buffer. A watcher whose buffer
is full and that takes no event for PATIENCE_SECONDS has fallen behind: it is
ended with RESOURCE_EXHAUSTED rather than buffered without bound, and the
others go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

import grpc

from hydra.coordinator.notifications import Listener
from hydra.coordinator.store import Database, runs
from hydra.domain import Run
from hydra.errors import HydraError, NotFound, ResourceExhausted, Unavailable
from hydra.v1 import run_service_pb2 as pb
from hydra.wire import run_to_proto

log = logging.getLogger("hydra.coordinator.watch")

Context = grpc.aio.ServicerContext[Any, Any]

#: Events a watcher may have waiting before it counts as fallen behind.
WATCH_BUFFER = 1000
#: How long a watcher whose buffer is full may go without taking an event.
PATIENCE_SECONDS = 1.0
#: How long a round waits, at most, for watchers taking in a burst.
CATCH_UP_SECONDS = 10.0
#: Run ids read per pair of queries.
READ_CHUNK = 500
#: How long a watcher ended by the hub has to drain what gRPC holds for it
#: before its call is cut (a client that never reads would hold it forever).
EVICT_GRACE_SECONDS = 2.0
FELL_BEHIND = "watch fell behind; resubscribe"


class RunWatcher:
    """One Watch stream: what it wants, and the events waiting for it."""

    def __init__(self, *, run_id: str, task: str, context: Context | None, scope: str = "") -> None:
        self.run_id = run_id
        self.task = task
        #: Only runs of tasks whose name starts with this (the caller's scope).
        self.scope = scope
        #: A run_id watcher's first event is the run's current state.
        self.needs_current = bool(run_id)
        self._context = context
        self._handler = asyncio.current_task()
        self._events: deque[pb.RunEvent] = deque()
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._error: HydraError | None = None
        self._closed = False

    def wants(self, run: Run) -> bool:
        """Whether a change of `run` is for this watcher."""
        return (
            (not self.run_id or run.id == self.run_id)
            and (not self.task or run.task == self.task)
            and run.task.startswith(self.scope)
        )

    def offer(self, event: pb.RunEvent) -> bool:
        """Queue an event (an ended or closed watcher drops it); False when the buffer
        is full."""
        if self._error is not None or self._closed:
            return True
        if len(self._events) >= WATCH_BUFFER:
            return False
        self._events.append(event)
        self._ready.set()
        return True

    def end(self, error: HydraError) -> None:
        """End the stream with `error` at its next event; what waits is dropped."""
        if self._error is None:
            self._error = error
            self._events.clear()
            self._ready.set()

    def close(self) -> None:
        """The stream is gone: drop what waits, and wake a round waiting for room."""
        self._closed = True
        self._events.clear()
        self._room.set()

    @property
    def ended(self) -> bool:
        return self._error is not None

    async def next(self) -> pb.RunEvent:
        """The next event; raises the error the watcher was ended with."""
        while True:
            if self._error is not None:
                raise self._error
            if self._events:
                self._room.set()
                return self._events.popleft()
            self._ready.clear()
            await self._ready.wait()

    async def absorb(self, events: Iterable[pb.RunEvent]) -> bool:
        """Queue events as the stream makes room for them; False once it has made
        none for PATIENCE_SECONDS."""
        for event in events:
            while not self.offer(event):
                self._room.clear()
                try:
                    await asyncio.wait_for(self._room.wait(), PATIENCE_SECONDS)
                except TimeoutError:
                    return False
        return True

    async def cut(self) -> None:
        """End a call whose handler is stuck writing to a client that does not read:
        queue the status behind what gRPC holds, then stop the handler."""
        await asyncio.sleep(EVICT_GRACE_SECONDS)
        if self._handler is None or self._handler.done():
            return
        if self._context is not None and not self._context.done():
            aborting = asyncio.ensure_future(
                self._context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, FELL_BEHIND)
            )
            aborting.add_done_callback(_ignore_outcome)
            await asyncio.sleep(0)  # the status is handed to gRPC
        self._handler.cancel()


class RunWatchHub:
    """Every Watch stream of this coordinator, fed from one subscription."""

    def __init__(self, database: Database, listener: Listener) -> None:
        self._db = database
        self._listener = listener
        self._watchers: set[RunWatcher] = set()
        self._changed: dict[str, None] = {}  # run ids in order of notification
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] = lambda: None
        self._cuts: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Subscribe and start fanning out."""
        self._unsubscribe = self._listener.subscribe("hydra_run_changed", self._notified)
        self._task = asyncio.create_task(self._loop(), name="hydra-watch-hub")

    async def stop(self) -> None:
        """Stop fanning out."""
        self._unsubscribe()
        for task in [self._task, *self._cuts]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    @contextlib.asynccontextmanager
    async def watch(
        self, *, run_id: str, task: str, scope: str = "", context: Context | None = None
    ) -> AsyncIterator[RunWatcher]:
        """A watcher for the duration of the block."""
        if run_id:
            run_id = runs.run_uuid(run_id)  # a malformed id is NOT_FOUND at once
        watcher = RunWatcher(run_id=run_id, task=task, context=context, scope=scope)
        self._watchers.add(watcher)
        self._wake.set()
        try:
            yield watcher
        finally:
            self._watchers.discard(watcher)
            watcher.close()

    def _notified(self, payload: str) -> None:
        if not self._watchers:
            return
        for run_id in payload.split(","):
            if run_id:
                self._changed[run_id] = None
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._fan_out()
            except Exception:  # a bug here must not stop every watch
                log.exception("watch fan-out failed")
                for watcher in list(self._watchers):
                    self._end(watcher, Unavailable("watch fan-out failed; resubscribe"))

    async def _fan_out(self) -> None:
        """One round: what changed since the last, and the current state of the runs
        new run_id watchers follow (registered before the read, so nothing is missed)."""
        changed, self._changed = list(self._changed), {}
        watchers = [w for w in self._watchers if not w.ended]
        fresh = [w for w in watchers if w.needs_current]
        for watcher in fresh:
            watcher.needs_current = False
        wanted = _wanted(changed, watchers, fresh)
        fan_out = _Round(watchers, fresh, changed, self._end)
        for start in range(0, len(wanted), READ_CHUNK):
            try:
                found = await self._db.run(
                    runs.get_runs_with_attempts, wanted[start : start + READ_CHUNK]
                )
            except HydraError as error:  # those events are lost: the watchers must resync
                for watcher in watchers:
                    self._end(watcher, error)
                return
            await fan_out.deliver(found)
        for watcher in fresh:
            if watcher.run_id not in fan_out.found:
                self._end(watcher, NotFound(f"run {watcher.run_id!r} not found"))

    def _end(self, watcher: RunWatcher, error: HydraError) -> None:
        """End a watcher; if its handler is stuck writing, cut its call after a grace."""
        if watcher.ended:
            return
        if isinstance(error, ResourceExhausted):
            log.info("a watcher fell %d events behind; ending its stream", WATCH_BUFFER)
        watcher.end(error)
        cut = asyncio.create_task(watcher.cut(), name="hydra-watch-cut")
        self._cuts.add(cut)
        cut.add_done_callback(self._cuts.discard)


class _Round:
    """One round of fan-out: who gets which run. When a chunk of runs is handed
    out, the watchers whose buffer is full are waited for, all at once, while they
    take events in (a burst); one that takes none for PATIENCE_SECONDS, or is
    still behind after CATCH_UP_SECONDS, is ended, so that no watcher holds the
    others up for longer."""

    def __init__(
        self,
        watchers: Sequence[RunWatcher],
        fresh: Sequence[RunWatcher],
        changed: Sequence[str],
        end: Callable[[RunWatcher, HydraError], None],
    ) -> None:
        self._by_run: dict[str, list[RunWatcher]] = {}
        self._by_task: dict[str, list[RunWatcher]] = {}
        self._everything: list[RunWatcher] = []
        for watcher in watchers:
            if watcher.run_id:
                self._by_run.setdefault(watcher.run_id, []).append(watcher)
            elif watcher.task:
                self._by_task.setdefault(watcher.task, []).append(watcher)
            else:
                self._everything.append(watcher)
        self._fresh = set(fresh)
        self._changed = set(changed)
        self._end = end
        #: Ids of the runs read this round.
        self.found: set[str] = set()

    async def deliver(self, found: Iterable[Run]) -> None:
        """Hand each run to the watchers that want it."""
        overflow: dict[RunWatcher, list[pb.RunEvent]] = {}
        for run in found:
            self.found.add(run.id)
            event = pb.RunEvent(run=run_to_proto(run))
            news = run.id in self._changed
            for watcher in self._interested(run):
                if not (news or watcher in self._fresh) or not watcher.wants(run):
                    continue
                if watcher in overflow:
                    overflow[watcher].append(event)
                elif not watcher.offer(event):
                    overflow[watcher] = [event]
        if overflow:
            await self._catch_up(overflow)

    def _interested(self, run: Run) -> list[RunWatcher]:
        return [
            *self._by_run.get(run.id, ()),
            *self._by_task.get(run.task, ()),
            *self._everything,
        ]

    async def _catch_up(self, overflow: dict[RunWatcher, list[pb.RunEvent]]) -> None:
        waits = {asyncio.ensure_future(w.absorb(events)): w for w, events in overflow.items()}
        _, behind = await asyncio.wait(waits, timeout=CATCH_UP_SECONDS)
        for wait in behind:
            wait.cancel()
        for wait in waits:
            if wait in behind or not wait.result():
                self._end(waits[wait], ResourceExhausted(FELL_BEHIND))
        await asyncio.gather(*behind, return_exceptions=True)


def _wanted(
    changed: Sequence[str], watchers: Sequence[RunWatcher], fresh: Sequence[RunWatcher]
) -> list[str]:
    """The run ids worth reading: every changed one if a watcher follows a task or
    everything, else only those followed by id; plus the new watchers' runs."""
    if any(not w.run_id for w in watchers):
        wanted = dict.fromkeys(changed)
    else:
        followed = {w.run_id for w in watchers}
        wanted = dict.fromkeys(r for r in changed if r in followed)
    wanted.update(dict.fromkeys(w.run_id for w in fresh))
    return [run_id for run_id in wanted if _is_uuid(run_id)]


def _is_uuid(run_id: str) -> bool:
    try:
        runs.run_uuid(run_id)
    except NotFound:
        return False
    return True


def _ignore_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # AbortError, or the call is gone: nothing to do
