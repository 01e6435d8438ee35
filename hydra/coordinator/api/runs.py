"""RunService: wire <-> domain, then plain calls."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import grpc

from hydra.coordinator import manual_runs, why
from hydra.coordinator.api import scope
from hydra.coordinator.api.audit import call_entry, failures_recorded
from hydra.coordinator.api.errors import streaming, unary
from hydra.coordinator.api.logs import LogFollowers
from hydra.coordinator.api.paging import decode_token, encode_token, page_size
from hydra.coordinator.api.watch import RunWatchHub
from hydra.coordinator.loops.dispatcher import Dispatcher
from hydra.coordinator.loops.timing import utcnow
from hydra.coordinator.store import Database, runs
from hydra.domain import AuditEntry
from hydra.errors import InvalidArgument
from hydra.v1 import run_service_pb2 as pb
from hydra.v1 import run_service_pb2_grpc as pb_grpc
from hydra.wire import (
    explanation_to_proto,
    from_timestamp,
    optional_timestamp,
    run_state_from_proto,
    run_to_proto,
    to_timestamp,
)

Context = grpc.aio.ServicerContext[Any, Any]

DEFAULT_PAGE = 50
_STREAMS = {1: pb.OUTPUT_STREAM_STDOUT, 2: pb.OUTPUT_STREAM_STDERR}
#: How often a log follower re-checks without a notification.
FOLLOW_POLL_SECONDS = 1.0


class RunApi(pb_grpc.RunServiceServicer):
    """Runs: create, inspect, steer, watch."""

    def __init__(
        self,
        database: Database,
        dispatcher: Dispatcher,
        watchers: RunWatchHub,
        followers: LogFollowers,
    ) -> None:
        self._db = database
        self._dispatcher = dispatcher
        self._watchers = watchers
        self._followers = followers

    @unary
    async def Trigger(
        self, request: pb.TriggerRunRequest, context: Context
    ) -> pb.TriggerRunResponse:
        entry = call_entry(context, "RunService/Trigger", task=request.task)
        occurrence = from_timestamp(request.occurrence) if request.HasField("occurrence") else None
        async with failures_recorded(self._db, entry):
            run, created = await manual_runs.trigger(
                self._db,
                self._dispatcher,
                _task(request.task),
                params=dict(request.params),
                idempotency_key=request.idempotency_key,
                occurrence=occurrence,
                now=utcnow(),
                audit_entry=entry,
            )
        return pb.TriggerRunResponse(run=run_to_proto(run), created=created)

    @unary
    async def Get(self, request: pb.GetRunRequest, context: Context) -> pb.GetRunResponse:
        run = await self._db.run(runs.get_run, _required(request.id, "id"))
        scope.check_task(run.task)
        return pb.GetRunResponse(run=run_to_proto(run))

    @unary
    async def List(self, request: pb.ListRunsRequest, context: Context) -> pb.ListRunsResponse:
        limit = page_size(request.page_size, DEFAULT_PAGE)
        states = [run_state_from_proto(s, "states") for s in request.states if s]
        if request.task:
            scope.check_task(request.task)
        found = await self._db.run(
            runs.list_runs,
            task=request.task,
            task_prefix=scope.scope(),
            states=states,
            after=_cursor(request.page_token),
            limit=limit + 1,
            occurrence_from=optional_timestamp(request, "occurrence_from"),
            occurrence_to=optional_timestamp(request, "occurrence_to"),
        )
        token = ""
        if len(found) > limit:
            last = found[limit - 1]
            token = encode_token(f"{last.occurrence.isoformat()}|{last.id}")
        return pb.ListRunsResponse(
            runs=[run_to_proto(r) for r in found[:limit]], next_page_token=token
        )

    @unary
    async def Retry(self, request: pb.RetryRunRequest, context: Context) -> pb.RetryRunResponse:
        entry = call_entry(context, "RunService/Retry", run_id=request.id)
        async with failures_recorded(self._db, entry):
            run_id = await self._run_in_scope(request.id)
            run = await manual_runs.retry(self._db, self._dispatcher, run_id, audit_entry=entry)
        return pb.RetryRunResponse(run=run_to_proto(run))

    @unary
    async def Cancel(self, request: pb.CancelRunRequest, context: Context) -> pb.CancelRunResponse:
        entry = call_entry(context, "RunService/Cancel", run_id=request.id)
        reason = request.reason or "cancelled by request"
        async with failures_recorded(self._db, entry):
            run_id = await self._run_in_scope(request.id)
            run = await manual_runs.cancel(
                self._db, self._dispatcher, run_id, reason, audit_entry=entry
            )
        return pb.CancelRunResponse(run=run_to_proto(run))

    @unary
    async def Backfill(self, request: pb.BackfillRequest, context: Context) -> pb.BackfillResponse:
        entry = None
        if not request.dry_run:  # a dry run changes nothing: not recorded
            entry = call_entry(context, "RunService/Backfill", task=request.task)
        async with failures_recorded(self._db, entry):
            result = await self._backfill(request, entry)
        return pb.BackfillResponse(
            occurrences=[to_timestamp(o) for o in result.occurrences],
            created=[run_to_proto(r) for r in result.created],
            existing=result.existing,
        )

    async def _backfill(
        self, request: pb.BackfillRequest, entry: AuditEntry | None
    ) -> manual_runs.BackfillResult:
        for field in ("from", "to"):
            if not request.HasField(field):
                raise InvalidArgument("required", path=field)
        return await manual_runs.backfill(
            self._db,
            self._dispatcher,
            _task(request.task),
            start=from_timestamp(getattr(request, "from")),
            end=from_timestamp(request.to),
            dry_run=request.dry_run,
            audit_entry=entry,
        )

    @streaming
    async def Watch(
        self, request: pb.WatchRunsRequest, context: Context
    ) -> AsyncIterator[pb.RunEvent]:
        # Fed by the hub: a changed run is read once for every watcher of this
        # coordinator; a run_id watcher's first event is the run's current state.
        if request.task:
            scope.check_task(request.task)
        if request.run_id and scope.scoped():
            await self._run_in_scope(request.run_id)
        async with self._watchers.watch(
            run_id=request.run_id, task=request.task, scope=scope.scope(), context=context
        ) as watcher:
            await context.send_initial_metadata(())  # the client may now rely on it
            while True:
                yield await watcher.next()

    @streaming
    async def TailLogs(
        self, request: pb.TailLogsRequest, context: Context
    ) -> AsyncIterator[pb.LogChunk]:
        run_id = runs.run_uuid(await self._run_in_scope(request.run_id, "run_id"))
        await self._followers.finished(run_id)  # NOT_FOUND before anything else
        after = 0
        async with self._followers.follow(run_id) as new_output:
            while True:
                new_output.clear()  # output stored from now on wakes the wait below
                chunks = await self._followers.read(
                    run_id, after_seq=after, attempt=request.attempt
                )
                for chunk in chunks:
                    after = chunk.seq
                    yield pb.LogChunk(
                        attempt=chunk.attempt,
                        stream=_STREAMS[chunk.stream],
                        data=chunk.data,
                        dropped_bytes=chunk.dropped_bytes,
                    )
                if chunks:
                    continue
                if not request.follow:
                    return
                if await self._followers.finished(run_id):
                    if not await self._followers.read(
                        run_id, after_seq=after, attempt=request.attempt
                    ):
                        return
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(new_output.wait(), FOLLOW_POLL_SECONDS)

    @unary
    async def Why(self, request: pb.WhyRequest, context: Context) -> pb.WhyResponse:
        task = _task(request.task)
        if not request.HasField("occurrence"):
            raise InvalidArgument("required", path="occurrence")
        occurrence = from_timestamp(request.occurrence)
        explanation = await self._db.run(why.explain, task, occurrence, utcnow())
        return explanation_to_proto(explanation)

    async def _run_in_scope(self, run_id: str, path: str = "id") -> str:
        """The run id a request names, once its run is known to be in the caller's scope
        (read only for a scoped caller)."""
        _required(run_id, path)
        if scope.scoped():
            run = await self._db.run(runs.get_run, run_id)
            scope.check_task(run.task)
        return run_id


def _task(task: str) -> str:
    """The task a request names, within the caller's scope."""
    scope.check_task(_required(task, "task"))
    return task


def _required(value: str, path: str) -> str:
    if not value:
        raise InvalidArgument("required", path=path)
    return value


def _cursor(token: str) -> tuple[datetime, str] | None:
    if not token:
        return None
    occurrence, _, run_id = decode_token(token).partition("|")
    try:
        return datetime.fromisoformat(occurrence), run_id
    except ValueError:
        raise InvalidArgument("malformed page token", path="page_token") from None
